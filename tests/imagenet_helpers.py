"""Shared helpers for the tests/test_imagenet_*.py files: a tiny ImageFolder and a tiny JiT config."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tiny_jit import TINY_MODEL_ARGS  # noqa: F401  (the tiny JiT, defined once; imported from here by the tests)


def make_image_folder(root: Path, *, classes: int = 3, per_class: int = 4, size: tuple[int, int] = (24, 20),
                      seed: int = 0) -> Path:
    """Write a tiny ImageFolder of random RGB PNG/JPEG images (non-square, so the crop does work)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class_{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            arr[..., c % 3] = np.clip(arr[..., c % 3].astype(int) + 60, 0, 255)   # a class signal
            ext = "png" if i % 2 == 0 else "jpg"
            Image.fromarray(arr).save(d / f"img_{i:03d}.{ext}")
    return root


def tiny_overrides(data: Path, out: Path, **extra) -> dict:
    """Config overrides for a seconds-long CPU run of a tiny JiT on 16-px images."""
    cfg = dict(model="JiT-B/16", model_args=dict(TINY_MODEL_ARGS), img_size=16, num_classes=3,
               data_path=str(data), output_dir=str(out), batch_size=4, accum_steps=1, epochs=4,
               warmup_epochs=1, blr=1e-2, num_workers=0, progress=False, log_every=1, ema_decays=[0.9, 0.5],
               save_every_epochs=1)
    cfg.update(extra)
    return cfg
