"""The small-run entry to the training core: a fixed number of steps on batches a function draws.

The toy MLP and the small image JiT train here; every step is :meth:`manifold_lab.train.core.TrainCore.step`,
the same step the ImageNet trainer takes. Repeatable bit for bit on the CPU: the caller initialises the
parameters under a seed, and every random draw of training (data batch, t, eps, label drop) comes from
the core's one generator, seeded with ``cfg.seed`` on the run's device.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.device import PRECISIONS, check_device, compile_net, generator, resolve_device, uses_bf16
from manifold_lab.train.core import LR_SCHEDULES, LossGraph, LRSchedule, NonFiniteLossError, TrainCore

__all__ = ["BatchFn", "NonFiniteLossError", "TrainConfig", "TrainResult", "train"]

FLUSH_EVERY = 50   # steps between reading the losses back from the device (and the NaN check)

# batch_fn(batch_size, generator) -> (x of shape (B, ...), y of shape (B,) or None), on the generator's device
BatchFn = Callable[[int, torch.Generator], tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass
class TrainConfig:
    steps: int = 2000            # optimiser steps
    batch_size: int = 512        # samples per step (per micro-batch when accum_steps > 1)
    lr: float = 1e-3             # AdamW peak learning rate
    warmup_steps: int = 0        # linear warm-up steps
    lr_schedule: str = "constant"  # after warm-up: constant (the paper) or cosine (to min_lr at the end)
    min_lr: float = 0.0          # floor of the cosine schedule
    warmup_from_zero: bool = False  # True: the first step has lr 0 (the paper's code); False: lr / warmup_steps
    weight_decay: float = 0.0    # on matrices only
    betas: tuple = (0.9, 0.95)   # the paper's AdamW betas
    ema_decays: tuple = ()       # EMA decays; the first one's copy is evaluated (none: the raw net)
    accum_steps: int = 1         # micro-batches per optimiser step
    grad_clip: float | None = None
    precision: str = "auto"      # auto: bf16 autocast on CUDA, none on the CPU; bf16 (native-bf16 CPUs too); fp32
    device: str = "auto"         # auto, cpu, cuda, cuda:N
    compile: bool = False        # torch.compile the loss: net + noising + loss algebra (cache: manifold_lab.device)
    seed: int = 0                # seeds the generator of every training draw

    def __post_init__(self):
        for name in ("steps", "batch_size", "accum_steps"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("lr", self.lr)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_device(self.device)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile must be true or false, got {self.compile!r}")
        if not all(0 <= d < 1 for d in self.ema_decays):
            raise ConfigError(f"every EMA decay must be in [0, 1), got {list(self.ema_decays)!r}")

    def schedule(self) -> LRSchedule:
        return LRSchedule(self.lr, self.warmup_steps, self.steps, self.lr_schedule, self.min_lr,
                          self.warmup_from_zero)


@dataclass
class TrainResult:
    net: nn.Module                 # the trained network
    eval_net: nn.Module            # the first EMA's copy if there is one, else net
    curve: pd.DataFrame = field(repr=False)   # columns: step, loss (batch mean), lr
    wall_s: float = 0.0


def make_core(net: nn.Module, denoiser, cfg: TrainConfig) -> TrainCore:
    """The training core of a small run: ``net`` moved to cfg.device, a generator seeded with cfg.seed; when
    cfg.compile, the whole loss but its random draws (net, noising, target conversion, squared error, and
    their backward) through ``torch.compile`` as one :class:`LossGraph`, so inductor fuses the loss algebra's
    element-wise work with the net's. In bf16 or compiled (the fast mode) the optimiser is the fused AdamW, on
    the CPU too. bf16 on a CPU without it fails here, before a step."""
    device = resolve_device(cfg.device)
    fast = uses_bf16(cfg.precision, device) or cfg.compile      # the fast mode: the fused AdamW on the CPU too
    net.to(device)
    return TrainCore(net, denoiser, schedule=cfg.schedule(), generator=generator(device, cfg.seed),
                     ema_decays=cfg.ema_decays, weight_decay=cfg.weight_decay, betas=cfg.betas,
                     precision=cfg.precision, accum_steps=cfg.accum_steps, grad_clip=cfg.grad_clip,
                     loss_graph=compile_net(LossGraph(net, denoiser)) if cfg.compile else None,
                     fused_optimizer=True if fast else None)


def train(net: nn.Module, denoiser, batch_fn: BatchFn, cfg: TrainConfig, *, progress: bool = True,
          desc: str = "train") -> TrainResult:
    """Train ``net`` for cfg.steps steps of the core on ``batch_fn(cfg.batch_size, core.generator)``.

    Raises NonFiniteLossError naming the step if the loss is NaN or infinite.
    """
    core = make_core(net, denoiser, cfg)
    it = range(cfg.steps)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=desc, mininterval=1.0)
    rows = []
    start = time.perf_counter()
    net.train()
    for step in it:
        core.step(step, lambda: batch_fn(cfg.batch_size, core.generator))
        if (step + 1) % FLUSH_EVERY == 0 or step + 1 == cfg.steps:
            rows += core.flush()
            if progress:
                it.set_postfix(loss=f"{rows[-1][1]:.4f}")
    net.eval()
    return TrainResult(net=net, eval_net=core.eval_net, curve=pd.DataFrame(rows, columns=["step", "loss", "lr"]),
                       wall_s=time.perf_counter() - start)
