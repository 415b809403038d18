"""One small single-process trainer for CPU-scale runs (toy MLP, small image JiT).

Repeatable bit for bit on the CPU: parameters are initialised by the caller under a seed, and every
random draw of training (data batch, t, eps, label drop) comes from one ``torch.Generator`` seeded here.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch
from torch import nn

from manifold_lab.checks import check_choice, check_positive
from manifold_lab.train.ema import EMA

# batch_fn(batch_size, generator) -> (x of shape (B, ...), y of shape (B,) or None)
BatchFn = Callable[[int, torch.Generator], tuple[torch.Tensor, "torch.Tensor | None"]]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainConfig:
    steps: int = 2000            # optimiser steps
    batch: int = 512             # samples per step
    lr: float = 1e-3             # AdamW learning rate, constant after warm-up
    warmup: int = 0              # linear warm-up steps from 0
    lr_schedule: str = "constant"  # after warm-up: "constant" (the paper) or "cosine" (decay to 0 at the end)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)   # the paper's AdamW betas
    ema_decay: float | None = None  # None: no EMA; else evaluate with the EMA copy
    seed: int = 0                # seeds the generator of every training draw
    grad_clip: float | None = None

    def __post_init__(self):
        check_positive("steps", self.steps, integer=True)
        check_positive("batch", self.batch, integer=True)
        check_positive("lr", self.lr)
        check_choice("lr schedule", self.lr_schedule, ("constant", "cosine"))


@dataclass
class TrainResult:
    net: nn.Module                 # the trained network
    eval_net: nn.Module            # the EMA copy if ema_decay was set, else net
    curve: pd.DataFrame = field(repr=False)   # columns: step, loss (batch mean), lr
    wall_s: float = 0.0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then constant or cosine to 0."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "cosine":
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr


def train(net: nn.Module, denoiser, batch_fn: BatchFn, cfg: TrainConfig, *, progress: bool = True,
          desc: str = "train") -> TrainResult:
    """Train ``net`` with ``denoiser.loss_per_sample`` for cfg.steps AdamW steps; returns the result.

    Raises NonFiniteLossError naming the step if the loss is NaN or infinite.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = EMA(net, cfg.ema_decay) if cfg.ema_decay is not None else None
    rows = []
    it = range(cfg.steps)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=desc, mininterval=1.0)
    start = time.perf_counter()
    net.train()
    for step in it:
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch_fn(cfg.batch, gen)
        loss = denoiser.loss_per_sample(net, x, y, generator=gen).mean()
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(f"loss is {value} at step {step}; lower lr (now {lr:g}) or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(net)
        rows.append((step, value, lr))
        if progress and step % 50 == 0:
            it.set_postfix(loss=f"{value:.4f}")
    net.eval()
    curve = pd.DataFrame(rows, columns=["step", "loss", "lr"])
    return TrainResult(net=net, eval_net=ema.model if ema is not None else net, curve=curve,
                       wall_s=time.perf_counter() - start)
