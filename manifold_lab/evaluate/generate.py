"""Class-balanced sampling from a checkpoint, split across ranks, resumable (the paper's evaluation set).

    python -m manifold_lab sample --checkpoint runs/b16 --ema ema1 --cfg-scale 3.0 --n-samples 50000 --out S
    torchrun --nproc_per_node=8 -m manifold_lab sample ...

Labels are class-major (sample i has class i * C // N: 50 per class for 50K over 1000 classes) and the
ranks take contiguous chunks. Sample i starts from its own noise (a generator seeded with seed and i), so
the result does not depend on the number of processes or the batch size, and a killed run skips the PNGs
it already wrote. Heun with a last Euler step (50 steps), the 0.05 clamp kept, and CFG on an interval.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from manifold_lab import seeds
from manifold_lab.config import add_config_flags, add_renamed_flags, config_from_values, overrides_from_args
from manifold_lab.data.imagefolder import to_uint8
from manifold_lab.device import autocast
from manifold_lab.io import atomic_write, check_writable_dir
from manifold_lab.sample import RECOMMENDABLE, SamplingConfig, guided_velocity, sample_ode
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train import distributed as dist_mod
from manifold_lab.train.build import build_denoiser, build_model
from manifold_lab.train.config import config_from_dict


def class_balanced_labels(n_samples: int, num_classes: int) -> np.ndarray:
    """Class-major labels: sample i gets class i * C // N (exactly N / C per class when C divides N)."""
    return (np.arange(n_samples, dtype=np.int64) * num_classes) // n_samples


def rank_range(n: int, rank: int, world: int) -> range:
    """This rank's contiguous chunk of 0..n-1."""
    return range(n * rank // world, n * (rank + 1) // world)


def sample_noise(indices, shape, noise_scale: float, seed: int) -> torch.Tensor:
    """One N(0, noise_scale^2) draw of ``shape`` per sample index, each from its own seeded generator."""
    out = torch.empty((len(indices), *shape))
    for j, i in enumerate(indices):
        g = seeds.generator(seed, "sample", index=i)
        out[j] = torch.randn(shape, generator=g) * noise_scale
    return out


def net_for_sampling(state: dict, ema: str = "ema1", device="cpu", path: Path | None = None):
    """(net in eval mode with the weights ``ema`` (see sample.check_ema), denoiser, config) from a state as
    load_checkpoint returns it; a network that does not fit the weights is a one-line CheckpointError naming
    ``path``."""
    cfg = config_from_dict(dict(state["config"], compile=False, resume=None, init_from=None))
    cfg.model_args = {k: v for k, v in cfg.model_args.items() if k != "compile"}
    net = build_model(cfg)
    ckpt_mod.load_weights(net, ckpt_mod.weights_from_checkpoint(state, ema), path or Path("the checkpoint"))
    return net.to(device).eval().requires_grad_(False), build_denoiser(cfg), cfg


def load_for_sampling(checkpoint: str, ema: str = "ema1", device="cpu"):
    """(net in eval mode with the chosen weights, denoiser, config, checkpoint file) from a checkpoint
    (ours or the official JiT layout, read safely: manifold_lab.train.checkpoint.load_checkpoint)."""
    state, path = ckpt_mod.load_checkpoint(checkpoint, map_location="cpu")
    return (*net_for_sampling(state, ema, device, path), path)


def resolve_sampling(cfg: SamplingConfig, recommended: dict | None,
                     use: Iterable[str] = RECOMMENDABLE) -> tuple[SamplingConfig, str]:
    """``cfg`` with each field of ``use`` (the ones the user left unset) taken from the checkpoint's
    recommended settings (an official checkpoint's args; its ``cfg`` is the guidance scale) where it has
    one. Returns (the config, one line saying what is used and whence: flag, checkpoint or default)."""
    rec = dict(recommended or {})
    if "cfg" in rec:
        rec.setdefault("cfg_scale", rec.pop("cfg"))
    use, changes, parts = set(use), {}, []
    for name in RECOMMENDABLE:
        if name not in use:
            src = "given"
        elif rec.get(name) is not None:
            changes[name], src = rec[name], "checkpoint"
        else:
            src = "default"
        value = changes.get(name, getattr(cfg, name))
        shown = f"{value[0]:g}-{value[1]:g}" if name == "interval" else value
        parts.append(f"{name} {shown} ({src})")
    return dataclasses.replace(cfg, **changes), "using " + ", ".join(parts)


class NonFiniteSamplesError(RuntimeError):
    """The sampler produced NaN or infinite values: nothing of that batch is written."""


def png_path(out_dir: Path, i: int) -> Path:
    return out_dir / f"{i:06d}.png"


@torch.no_grad()
def generate_samples(net, denoiser, cfg: SamplingConfig, *, out_dir, img_size: int, num_classes: int | None,
                     fmt: str = "png", info: dist_mod.DistInfo | None = None, progress: bool = True) -> Path:
    """Write samples 0..cfg.n_samples-1 as PNGs (and/or one npz) into out_dir; returns out_dir.

    num_classes None: unconditional. Existing PNGs are kept (resume). fmt: png, npz (PNGs removed after
    packing into samples.npz: arr_0 (N, H, W, 3) uint8 and labels) or both. A batch holding a non-finite
    value raises NonFiniteSamplesError (with the count) before anything of it is written.
    """
    info = info or dist_mod.DistInfo(False, 0, 1, 0, next(net.parameters()).device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = cfg.n_samples
    labels = class_balanced_labels(n, num_classes) if num_classes else None
    todo = [i for i in rank_range(n, info.rank, info.world_size) if not png_path(out_dir, i).exists()]
    batches = [todo[k:k + cfg.batch_size] for k in range(0, len(todo), cfg.batch_size)]
    if progress and info.is_main and batches:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc=f"sampling (rank 0: {len(todo)} left)", dynamic_ncols=True)
    for idx in batches:
        x = _sample_batch(net, denoiser, cfg, idx, (3, img_size, img_size), labels, info.device)
        for i, img in zip(idx, to_uint8(x, layout="nhwc").numpy()):
            atomic_write(png_path(out_dir, i), lambda tmp, a=img: Image.fromarray(a).save(tmp, format="PNG"))
    dist_mod.barrier(info)
    if fmt in ("npz", "both") and info.is_main:
        _pack_npz(out_dir, n, labels, remove_pngs=fmt == "npz")
    dist_mod.barrier(info)
    return out_dir


def _sample_batch(net, denoiser, cfg: SamplingConfig, idx: list[int], shape, labels, device) -> torch.Tensor:
    """The samples ``idx`` (B, 3, H, W) in [-1, 1]-ish floats; NonFiniteSamplesError if any is not finite."""
    z0 = sample_noise(idx, shape, denoiser.noise_scale, cfg.seed).to(device)
    if labels is None:
        fn = lambda z, t: denoiser.velocity(net, z, t)
    else:
        y = torch.as_tensor(labels[idx], device=device)
        fn = guided_velocity(denoiser, net, y, cfg_scale=cfg.cfg_scale, interval=tuple(cfg.interval))
    with autocast(cfg.precision, device):
        x = sample_ode(fn, z0, steps=cfg.sample_steps, solver=cfg.solver)
    bad = int((~torch.isfinite(x.flatten(1))).any(dim=1).sum())
    if bad:
        raise NonFiniteSamplesError(
            f"{bad} of {len(idx)} samples (indices {idx[0]}-{idx[-1]}) hold NaN or inf (cfg_scale "
            f"{cfg.cfg_scale:g}, {cfg.ema} weights); none of them written")
    return x


def _pack_npz(out_dir: Path, n: int, labels, *, remove_pngs: bool) -> None:
    """samples.npz (arr_0 (N, H, W, 3) uint8, labels) from the PNGs 0..n-1; then the PNGs go if asked."""
    arr = np.stack([np.asarray(Image.open(png_path(out_dir, i))) for i in range(n)])

    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=arr, labels=labels if labels is not None else np.zeros(0, np.int64))
    atomic_write(out_dir / "samples.npz", w)
    if remove_pngs:
        for i in range(n):
            png_path(out_dir, i).unlink()


# ---- command line ----------------------------------------------------------------------------------
def add_checkpoint_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (its checkpoint-last.pth)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def sampling_from_args(args, skip: Iterable[str] = ()) -> tuple[SamplingConfig, list[str]]:
    """(the SamplingConfig of the flags, the recommendable fields left unset: the checkpoint may fill them)."""
    given = overrides_from_args(args, SamplingConfig)
    cfg = config_from_values(SamplingConfig, given, "flags")
    return cfg, [n for n in RECOMMENDABLE if n not in given and n not in set(skip)]


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="class-balanced samples from a checkpoint (PNGs or one npz)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
    add_checkpoint_flag(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="png", choices=("png", "npz", "both"))
    add_config_flags(p, SamplingConfig, title="sampling (SamplingConfig fields; cfg-scale, interval, sample-steps "
                     "and solver unset: the checkpoint's recommendation (official args), else the default)")
    add_renamed_flags(p, {"--steps": "--sample-steps"})
    p.set_defaults(func=main)


def main(args) -> int:
    scfg, use = sampling_from_args(args)
    check_writable_dir(args.out, "--out")
    info = dist_mod.setup()
    try:
        state, path = ckpt_mod.load_checkpoint(args.checkpoint, map_location="cpu")
        net, den, cfg = net_for_sampling(state, scfg.ema, info.device, path)
        scfg, line = resolve_sampling(scfg, state["meta"]["sampling"], use)
        if info.is_main:
            for note in state["meta"]["notes"]:
                print(f"note: {note}")
            print(f"loaded {ckpt_mod.describe(state, scfg.ema, path)}, noise scale {den.noise_scale:g}", flush=True)
            print(line, flush=True)
        del state
        generate_samples(net, den, scfg, out_dir=args.out, img_size=cfg.img_size,
                         num_classes=None if cfg.unconditional else cfg.num_classes, fmt=args.format, info=info,
                         progress=not args.no_progress)
        if info.is_main:
            print(f"wrote {scfg.n_samples} samples to {args.out}")
    finally:
        dist_mod.cleanup(info)
    return 0
