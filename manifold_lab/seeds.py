"""Named seed streams: every random draw of a run comes from a generator seeded by (seed, stream).

A run has one ``seed``; each thing it draws (the network's initial weights, the sampling noise, the fixed
training set, the reference points, ...) has its own stream, so changing how many numbers one draw takes
never shifts another. The stream values are the offsets the code used before they had names, so every
committed result is reproduced bit for bit.
"""
from __future__ import annotations

import contextlib

import torch

STREAMS = {
    "init": 0,                 # network initialisation (through :func:`init_rng`)
    "sample": 1_000_003,       # the initial noise of sampling (per-index: ``seed * 1_000_003 + index``)
    "train_set": 2_000_003,    # the fixed toy training set (seeded by data_seed)
    "reference": 10_000,       # toy ground-truth reference and fresh points for the metrics
    "memorisation": 30_000,    # the memorisation study's dense manifold and null draws
    "jacobian": 50_000,        # the intrinsic-dimension study's Jacobian points
}


def seed_for(seed: int, stream: str, index: int | None = None) -> int:
    """The integer seed of ``stream`` for a run's ``seed``: ``STREAMS[stream] + seed``; with ``index`` (one
    generator per sample index) ``seed * STREAMS[stream] + index``."""
    if stream not in STREAMS:
        raise ValueError(f"unknown seed stream {stream!r}; streams: {', '.join(STREAMS)}")
    if index is not None:
        return int(seed) * STREAMS[stream] + int(index)
    return STREAMS[stream] + int(seed)


def generator(seed: int, stream: str, device: torch.device | str = "cpu", index: int | None = None) -> torch.Generator:
    """A generator on ``device`` seeded with :func:`seed_for`."""
    return torch.Generator(device=device).manual_seed(seed_for(seed, stream, index))


@contextlib.contextmanager
def init_rng(seed: int):
    """Run a block (building a network: torch's initialisers draw from the global RNG) with the global CPU
    RNG seeded by ``seed_for(seed, "init")``, and give the caller's RNG state back afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(seed, "init"))
        yield
