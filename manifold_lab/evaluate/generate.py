"""Class-balanced sampling from a checkpoint, split across ranks, resumable (the paper's evaluation set).

    python -m manifold_lab sample --checkpoint runs/b16 --ema ema1 --cfg 3.0 --num-samples 50000 --out S
    torchrun --nproc_per_node=8 -m manifold_lab sample ...

Labels are class-major (sample i has class i * C // N: 50 per class for 50K over 1000 classes) and the
ranks take contiguous chunks. Sample i starts from its own noise (a generator seeded with seed and i), so
the result does not depend on the number of processes or the batch size, and a killed run skips the PNGs
it already wrote. Heun with a last Euler step (50 steps), the 0.05 clamp kept, and CFG on an interval.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from manifold_lab import seeds
from manifold_lab.config import add_renamed_flags
from manifold_lab.data.imagefolder import to_uint8
from manifold_lab.device import PRECISIONS, autocast
from manifold_lab.io import atomic_write
from manifold_lab.sample import SOLVERS, guided_velocity, sample_ode
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train import distributed as dist_mod
from manifold_lab.train.build import build_denoiser, build_model
from manifold_lab.train.config import config_from_dict


def class_balanced_labels(num_samples: int, num_classes: int) -> np.ndarray:
    """Class-major labels: sample i gets class i * C // N (exactly N / C per class when C divides N)."""
    return (np.arange(num_samples, dtype=np.int64) * num_classes) // num_samples


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


def net_for_sampling(state: dict, which: str = "ema1", device="cpu", path: Path | None = None):
    """(net in eval mode with the chosen weights, denoiser, config) from a state as load_checkpoint returns
    it; a network that does not fit the weights is a one-line CheckpointError naming ``path``."""
    cfg = config_from_dict(dict(state["config"], compile=False, resume=None, init_from=None))
    cfg.model_args = {k: v for k, v in cfg.model_args.items() if k != "compile"}
    net = build_model(cfg)
    ckpt_mod.load_weights(net, ckpt_mod.weights_from_checkpoint(state, which), path or Path("the checkpoint"))
    return net.to(device).eval().requires_grad_(False), build_denoiser(cfg), cfg


def load_for_sampling(checkpoint: str, which: str = "ema1", device="cpu"):
    """(net in eval mode with the chosen weights, denoiser, config, checkpoint file) from a checkpoint
    (ours or the official JiT layout, read safely: manifold_lab.train.checkpoint.load_checkpoint)."""
    state, path = ckpt_mod.load_checkpoint(checkpoint, map_location="cpu")
    return (*net_for_sampling(state, which, device, path), path)


SAMPLING_DEFAULTS = {"cfg": 1.0, "interval": [0.1, 1.0], "sample_steps": 50, "solver": "heun"}


def resolve_sampling(args, recommended: dict | None, names=("cfg", "interval", "sample_steps", "solver")) -> str:
    """Fill each sampling flag left unset (None) on ``args`` from the checkpoint's recommended settings
    (an official checkpoint's args), else our defaults. Returns one line saying what is used and whence."""
    parts = []
    for name in names:
        if getattr(args, name, None) is not None:
            src = "flag"
        elif recommended and recommended.get(name) is not None:
            setattr(args, name, recommended[name])
            src = "checkpoint"
        else:
            setattr(args, name, SAMPLING_DEFAULTS[name])
            src = "default"
        value = getattr(args, name)
        shown = f"{value[0]:g}-{value[1]:g}" if name == "interval" else value
        parts.append(f"{name} {shown} ({src})")
    return "using " + ", ".join(parts)


def png_path(out_dir: Path, i: int) -> Path:
    return out_dir / f"{i:06d}.png"


@torch.no_grad()
def generate_samples(net, denoiser, *, out_dir, num_samples: int, img_size: int, num_classes: int | None,
                     batch_size: int = 64, cfg: float = 1.0, interval=(0.1, 1.0), sample_steps: int = 50,
                     solver: str = "heun", seed: int = 0, precision: str = "auto", fmt: str = "png",
                     info: dist_mod.DistInfo | None = None, progress: bool = True) -> Path:
    """Write samples 0..num_samples-1 as PNGs (and/or one npz) into out_dir; returns out_dir.

    num_classes None: unconditional. Existing PNGs are kept (resume). fmt: png, npz (PNGs removed after
    packing into samples.npz: arr_0 (N, H, W, 3) uint8 and labels) or both.
    """
    info = info or dist_mod.DistInfo(False, 0, 1, 0, next(net.parameters()).device)
    device = info.device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = class_balanced_labels(num_samples, num_classes) if num_classes else None
    todo = [i for i in rank_range(num_samples, info.rank, info.world_size) if not png_path(out_dir, i).exists()]
    batches = [todo[k:k + batch_size] for k in range(0, len(todo), batch_size)]
    if progress and info.is_main and batches:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc=f"sampling (rank 0: {len(todo)} left)", dynamic_ncols=True)
    shape = (3, img_size, img_size)
    for idx in batches:
        z0 = sample_noise(idx, shape, denoiser.noise_scale, seed).to(device)
        if labels is None:
            fn = lambda z, t: denoiser.velocity(net, z, t)  # noqa: E731
        else:
            y = torch.as_tensor(labels[idx], device=device)
            fn = guided_velocity(denoiser, net, y, cfg=cfg, interval=tuple(interval))
        with autocast(precision, device):
            x = sample_ode(fn, z0, steps=sample_steps, solver=solver)
        for i, img in zip(idx, to_uint8(x, layout="nhwc").numpy()):
            atomic_write(png_path(out_dir, i), lambda tmp, a=img: Image.fromarray(a).save(tmp, format="PNG"))
    dist_mod.barrier(info)
    if fmt in ("npz", "both") and info.is_main:
        arr = np.stack([np.asarray(Image.open(png_path(out_dir, i))) for i in range(num_samples)])

        def w(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, arr_0=arr, labels=labels if labels is not None else np.zeros(0, np.int64))
        atomic_write(out_dir / "samples.npz", w)
        if fmt == "npz":
            for i in range(num_samples):
                png_path(out_dir, i).unlink()
    dist_mod.barrier(info)
    return out_dir


# ---- command line ----------------------------------------------------------------------------------
def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (its checkpoint-last.pth)")
    unset = "; unset: the checkpoint's recommendation (official args), else"
    p.add_argument("--sample-steps", type=int, default=None,
                   help=f"ODE steps (50: 49 Heun + 1 Euler{unset} 50)")
    p.add_argument("--solver", default=None, choices=SOLVERS, help=f"ODE solver{unset} heun")
    p.add_argument("--interval", type=float, nargs=2, default=None, metavar=("T_MIN", "T_MAX"),
                   help=f"CFG acts only for T_MIN < t < T_MAX (t = 1 clean{unset} 0.1 1.0)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per process and batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--no-progress", action="store_true")
    add_renamed_flags(p, {"--steps": "--sample-steps"})


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="class-balanced samples from a checkpoint (PNGs or one npz)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
    add_sampling_flags(p)
    p.add_argument("--ema", default="ema1", help="weights: ema1 (decay 0.9999), ema2 (0.9996), model, or a decay")
    p.add_argument("--cfg", type=float, default=None,
                   help="guidance scale (paper: B 3.0, L 2.4, H 2.2 at 256; unset: the checkpoint's recommendation "
                        "(official args), else 1.0)")
    p.add_argument("--num-samples", type=int, default=50000)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="png", choices=("png", "npz", "both"))
    p.set_defaults(func=main)


def main(args) -> int:
    info = dist_mod.setup()
    try:
        state, path = ckpt_mod.load_checkpoint(args.checkpoint, map_location="cpu")
        net, den, cfg = net_for_sampling(state, args.ema, info.device, path)
        line = resolve_sampling(args, state["meta"]["sampling"])
        if info.is_main:
            for note in state["meta"]["notes"]:
                print(f"note: {note}")
            print(f"loaded {ckpt_mod.describe(state, args.ema, path)}, noise scale {den.noise_scale:g}", flush=True)
            print(line, flush=True)
        del state
        generate_samples(net, den, out_dir=args.out, num_samples=args.num_samples, img_size=cfg.img_size,
                         num_classes=None if cfg.unconditional else cfg.num_classes, batch_size=args.batch_size,
                         cfg=args.cfg, interval=args.interval, sample_steps=args.sample_steps, solver=args.solver,
                         seed=args.seed, precision=args.precision, fmt=args.format, info=info,
                         progress=not args.no_progress)
        if info.is_main:
            print(f"wrote {args.num_samples} samples to {args.out}")
    finally:
        dist_mod.cleanup(info)
    return 0
