"""Generated ImageFolders (nothing downloaded): a tiny one for tests and smoke runs, a photo-like one for
loader and trainer benchmarks. Both write ``root/class_XXX/img_NNN.{png,jpg}``, the layout
:mod:`manifold_lab.data.imagefolder` reads.

    make_image_folder(root, classes=3, per_class=4)          # random RGB, PNG and JPEG alternating
    make_natural_folder(root, 500, fmt="jpg", workers=2)     # 1/f-like "photos", ImageNet-like sizes
"""
from __future__ import annotations

import io
import math
import multiprocessing as mp
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# (width, height) cycle of make_natural_folder: mostly ImageNet's 500x375 / 375x500 / 500x333, one in ten 640x480
SIZES = [(500, 375), (375, 500), (500, 375), (500, 333), (500, 375),
         (500, 375), (333, 500), (500, 375), (500, 400), (640, 480)]


def make_image_folder(root, *, classes: int = 3, per_class: int = 4, size: tuple[int, int] = (24, 20),
                      seed: int = 0) -> Path:
    """Write a tiny ImageFolder of random RGB images, PNG and JPEG alternating, ``size`` = (width, height)
    (non-square by default, so the centre crop does work); class c adds 60 to channel c % 3 (a class
    signal). Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class_{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            arr[..., c % 3] = np.clip(arr[..., c % 3].astype(int) + 60, 0, 255)
            ext = "png" if i % 2 == 0 else "jpg"
            Image.fromarray(arr).save(d / f"img_{i:03d}.{ext}")
    return root


def natural_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A photo-like uint8 (h, w, 3) image: a pyramid of colour-correlated noise, each octave up 2x bilinear
    with amplitude ~ 2^(-0.35 * level) (1/f-like: smooth areas, soft edges, fine texture), plus grain.
    Compresses like a photo (~60-80 KB as a 500x375 JPEG q90), unlike white noise."""
    levels = int(math.ceil(math.log2(max(w, h) / 4)))
    gh, gw = max(2, -(-h // 2 ** levels)), max(2, -(-w // 2 ** levels))
    x = torch.from_numpy(rng.normal(size=(1, 3, gh, gw)).astype(np.float32)) * 75
    for lv in range(levels):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        n = torch.from_numpy(rng.normal(size=x.shape).astype(np.float32))
        x += (n.mean(1, keepdim=True) * 0.7 + n * 0.5) * 50 * 2.0 ** (-(lv + 1) * 0.35)
    x = x[..., :h, :w] + torch.from_numpy(rng.normal(size=(1, 3, h, w)).astype(np.float32)) * 2
    x += torch.from_numpy(rng.uniform(60, 170, size=(1, 3, 1, 1)).astype(np.float32))
    return x.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def _natural_path(root, i: int, classes: int, fmt: str) -> Path:
    return Path(root) / f"class_{i % classes:03d}" / f"img_{i:06d}.{fmt}"


def _write_natural(job) -> int:
    """Write image ``i`` of a natural folder (top level: a process pool runs it); its size in bytes."""
    root, i, classes, fmt, quality, seed = job
    w, h = SIZES[i % len(SIZES)]
    arr = natural_image(np.random.default_rng([seed, i]), w, h)
    path = _natural_path(root, i, classes, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG" if fmt == "jpg" else "PNG", **({"quality": quality} if fmt == "jpg" else {}))
    path.write_bytes(buf.getvalue())
    return len(buf.getvalue())


def make_natural_folder(root, n: int, *, classes: int = 10, fmt: str = "jpg", quality: int = 90, seed: int = 0,
                        workers: int = 1, unique: int | None = None) -> dict:
    """Write an ImageFolder of ``n`` natural-ish images (image i in class i % classes, sizes cycling SIZES);
    ``unique``: make only that many and copy them to the rest (same decode cost, separate files);
    ``workers`` processes write in parallel. Returns {"root", "images", "unique", "format", "mean_kb",
    "seconds"}."""
    t = time.perf_counter()
    u = min(unique or n, n)
    jobs = [(str(root), i, classes, fmt, quality, seed) for i in range(u)]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            sizes = pool.map(_write_natural, jobs, chunksize=8)
    else:
        sizes = [_write_natural(j) for j in jobs]
    for i in range(u, n):
        _natural_path(root, i, classes, fmt).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_natural_path(root, i % u, classes, fmt), _natural_path(root, i, classes, fmt))
    return {"root": str(root), "images": n, "unique": u, "format": fmt, "mean_kb": float(np.mean(sizes)) / 1e3,
            "seconds": time.perf_counter() - t}
