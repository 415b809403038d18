"""Per-iteration learning rate: linear warm-up from 0, then constant (the paper) or half-cycle cosine."""
from __future__ import annotations

import math


def lr_at(epoch: float, *, lr: float, warmup_epochs: float, epochs: int, schedule: str = "constant",
          min_lr: float = 0.0) -> float:
    """The lr at a fractional epoch (epoch + step_in_epoch / steps_per_epoch)."""
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    if schedule == "constant":
        return lr
    progress = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-12)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizer, value: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = value
