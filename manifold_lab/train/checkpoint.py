"""Checkpoints that lose nothing, written atomically, and a resume that says what it loaded.

A checkpoint holds: ``model`` (the raw net's state dict, no ``module.``/``_orig_mod.`` prefixes),
``ema`` ({decay as str: state dict}, in config order), ``optimizer``, ``step`` (optimiser steps done),
``epoch`` and ``step_in_epoch`` (the data position), ``rng`` (one entry per rank: the training
generator, torch CPU / CUDA, numpy and python states) and ``config`` (the resolved config dict).

``--resume`` takes a checkpoint file or a folder; a folder means its ``checkpoint-last.pth``.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from manifold_lab.io import save_torch

LAST = "checkpoint-last.pth"


def resolve_checkpoint(path: str | Path) -> Path:
    """A file as it is; a folder -> its checkpoint-last.pth. Raises FileNotFoundError saying what is missing."""
    p = Path(path)
    if p.is_dir():
        f = p / LAST
        if not f.is_file():
            found = sorted(x.name for x in p.glob("checkpoint-*.pth"))
            hint = f"; it holds {', '.join(found)} (pass one of them as a file)" if found else ""
            raise FileNotFoundError(f"no {LAST} in folder {p}{hint}")
        return f
    if p.is_file():
        return p
    raise FileNotFoundError(f"checkpoint {p} not found (pass a checkpoint file or a folder holding {LAST})")


def rng_state(generator: torch.Generator) -> dict:
    """Every random state that training draws from in this process."""
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: str | Path, *, state: dict, step: int, epoch: int, step_in_epoch: int, rng: list,
                    config: dict) -> Path:
    """Write one checkpoint atomically (a temp file, then rename). ``state``: the training core's
    ``state_dict()`` (model, ema, optimizer)."""
    obj = {
        "model": state["model"],
        "ema": state["ema"],
        "optimizer": state["optimizer"],
        "step": int(step),
        "epoch": int(epoch),
        "step_in_epoch": int(step_in_epoch),
        "rng": rng,
        "config": config,
    }
    return save_torch(path, obj)


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[dict, Path]:
    """Load a checkpoint file or folder; returns (the dict, the file it came from)."""
    f = resolve_checkpoint(path)
    return torch.load(f, map_location=map_location, weights_only=False), f


def weights_from_checkpoint(ckpt: dict, which: str = "ema1") -> dict:
    """A state dict to sample with. which: "model", "ema1"/"ema2"/... (the i-th EMA), or a decay "0.9999"."""
    if which == "model":
        return ckpt["model"]
    emas = ckpt.get("ema", {})
    if which.startswith("ema") and which[3:].isdigit():
        i = int(which[3:]) - 1
        keys = list(emas)
        if not 0 <= i < len(keys):
            raise KeyError(f"checkpoint has {len(keys)} EMA(s) ({', '.join(keys)}); {which!r} does not exist")
        return emas[keys[i]]
    for k in emas:
        if float(k) == float(which):
            return emas[k]
    raise KeyError(f"no EMA {which!r} in checkpoint; it has: model, "
                   + ", ".join(f"ema{i + 1} (decay {k})" for i, k in enumerate(emas)))


def ema_names(ckpt: dict) -> list[str]:
    """The EMA choices a checkpoint offers, as accepted by weights_from_checkpoint."""
    return [f"ema{i + 1}" for i in range(len(ckpt.get("ema", {})))]
