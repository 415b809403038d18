"""Shared helpers for the tests/test_imagenet_*.py files: a tiny ImageFolder and a tiny JiT config."""
from __future__ import annotations

from pathlib import Path

from manifold_lab.data.synthetic import make_image_folder

__all__ = ["TINY_MODEL_ARGS", "make_image_folder", "tiny_overrides"]

from tiny_jit import TINY_MODEL_ARGS


def tiny_overrides(data: Path, out: Path, **extra) -> dict:
    """Config overrides for a seconds-long CPU run of a tiny JiT on 16-px images."""
    cfg = dict(model="JiT-B/16", model_args=dict(TINY_MODEL_ARGS), img_size=16, num_classes=3,
               data_path=str(data), output_dir=str(out), batch_size=4, accum_steps=1, epochs=4,
               warmup_epochs=1, blr=1e-2, num_workers=0, progress=False, log_every=1, ema_decays=[0.9, 0.5],
               save_every_epochs=1)
    cfg.update(extra)
    return cfg
