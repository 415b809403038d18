"""The one training core every scale stands on: the toy MLP, the small image JiT, the ImageNet JiT (one
process or torchrun DDP) and the GPU benchmark all take their optimiser steps through :class:`TrainCore`.

One step (:meth:`TrainCore.step`), t = 1 clean throughout::

    lr = schedule(step)                                   one function of the step (epochs -> steps once)
    for each of accum_steps micro-batches:
        x, y = next_batch()                               draws from core.generator where it draws at all
        loss = denoiser.loss_per_sample(model, x, y)      under the autocast policy (manifold_lab.device);
                                                          compiled runs: the draws eager, the rest one graph
        (loss / accum_steps).backward()                   DDP all-reduces only on the last micro-batch
    [clip] -> AdamW step -> zero grads -> every EMA       weight decay on matrices only (param_groups)
    mean loss over micro-batches and processes            kept on the device until flush()

:meth:`TrainCore.flush` turns the pending losses into numbers with one device sync and raises
NonFiniteLossError naming the first step whose loss was NaN or infinite; callers flush every step or every
few steps (a GPU then never waits for the host between steps), and always before writing a checkpoint.

Every random draw of a step (the batch a batch function samples, the flip, t, eps, the label drop) comes
from ``core.generator``, one seeded generator on the training device, so a seeded run is repeatable on one
device (bit for bit on the CPU). Small runs and ImageNet differ only in their defaults (see LRSchedule).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from manifold_lab.checks import ConfigError, check_choice
from manifold_lab.device import autocast
from manifold_lab.train.distributed import DistInfo, all_reduce_mean
from manifold_lab.train.ema import EMA

LR_SCHEDULES = ("constant", "cosine")
NextBatch = Callable[[], "tuple[torch.Tensor, torch.Tensor | None]"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def likely_cause(lr: float, denoiser, grad_clip: float | None = None) -> str:
    """The knob that most likely made a loss non-finite: a non-finite or extreme value among the lr and the
    denoiser's t-sampler, t_eps and noise scale; else the lr or the data, said as such."""
    ts = getattr(denoiser, "t_sampler", None)
    knobs = {"lr": lr, "p_mean": getattr(ts, "p_mean", 0.0), "p_std": getattr(ts, "p_std", 1.0),
             "t_eps": getattr(denoiser, "t_eps", 0.05), "noise_scale": getattr(denoiser, "noise_scale", 1.0),
             "grad_clip": grad_clip if grad_clip is not None else 1.0}
    for name, value in knobs.items():
        if not math.isfinite(value):
            return f"{name} is {value}"
    extreme = {"lr": lr > 0.05, "p_mean": abs(knobs["p_mean"]) > 4, "p_std": knobs["p_std"] > 4,
               "t_eps": knobs["t_eps"] < 1e-3, "noise_scale": knobs["noise_scale"] > 100}
    hits = [f"{name} {knobs[name]:g}" for name, bad in extreme.items() if bad]
    if hits:
        return f"an extreme setting: {', '.join(hits)}"
    return f"lr {lr:g} may be too high for this model, or the data holds non-finite values"


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate as a function of the optimiser step (0-based: the steps taken before this one).

    Linear warm-up over ``warmup_steps`` (may be fractional: warm-up epochs x steps per epoch), then
    ``kind``: constant (the paper), or a half cycle of cosine from ``lr`` to ``min_lr`` at ``total_steps``.
    ``warmup_from_zero``: the first step's lr is 0 and step ``warmup_steps`` reaches ``lr`` (the paper's
    code, lr * epoch / warmup_epochs per iteration); False: the first step already has lr / warmup_steps and
    the last warm-up step reaches ``lr`` (the small runs' default, kept so their committed numbers hold).
    """

    lr: float
    warmup_steps: float = 0.0
    total_steps: float = 0.0
    kind: str = "constant"
    min_lr: float = 0.0
    warmup_from_zero: bool = True

    def __post_init__(self):
        check_choice("lr schedule", self.kind, LR_SCHEDULES)
        if self.warmup_steps < 0:
            raise ConfigError(f"warm-up must be >= 0 steps, got {self.warmup_steps!r}")

    def __call__(self, step: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.lr * (step + (0 if self.warmup_from_zero else 1)) / self.warmup_steps
        if self.kind == "constant":
            return self.lr
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases and 1-D parameters (norms, embeddings' scales) get none."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(net: nn.Module, *, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.95),
                   fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. ``fused`` None: the fused kernel on CUDA, torch's default (foreach) on
    the CPU, whose fp32 results the committed tables hold; True: the fused kernel on the CPU too (one pass
    over each parameter instead of a dozen: measured 44 -> 4.4 ms a step for the 7.3 M parameters of the toy
    MLP of width 1024 at D = 2048, one thread), the fast mode's choice; results within float tolerance."""
    if fused is None:
        fused = next(net.parameters()).device.type == "cuda"
    return torch.optim.AdamW(param_groups(net, weight_decay), lr=lr, betas=tuple(betas),
                             **({"fused": True} if fused else {}))


class LossGraph(nn.Module):
    """The pure part of a training loss as one module, for ``torch.compile`` to fuse whole: the net, the
    noising z = t x + (1 - t) eps and the loss algebra (forward and backward), given the draws that
    :meth:`Denoiser.draw` made eagerly from the core's generator (so a compiled run draws exactly what an
    eager one does). ``forward(x, t, eps, y_net, y) -> {"loss": (B,), ...}``; the net's parameters are the
    net's own, so the optimiser and the EMAs see no difference."""

    def __init__(self, net: nn.Module, denoiser):
        super().__init__()
        self.net, self.denoiser = net, denoiser

    def forward(self, x, t, eps, y_net=None, y=None):
        return self.denoiser.loss_given(self.net, x, t, eps, y_net, y)


class TrainCore:
    """The net, its optimiser, EMAs, denoiser, generator and precision: one optimiser step at a time.

    net: the raw network (its parameters are what the optimiser and the EMAs see). model: what the forward
    runs through (a compiled or DDP-wrapped net; default the net). loss_graph: a compiled :class:`LossGraph`
    of the net, which then computes the whole loss but the draws (small runs' ``compile``; not with DDP).
    fused_optimizer: see :func:`make_optimizer` (None: fused on CUDA only).
    dist: DDP information, or None.
    ``emas`` maps each decay to its :class:`EMA`; ``eval_net`` is the first EMA's copy (the raw net if none).
    """

    def __init__(self, net: nn.Module, denoiser, *, schedule: LRSchedule, generator: torch.Generator,
                 ema_decays=(), weight_decay: float = 0.0, betas=(0.9, 0.95), precision: str = "auto",
                 accum_steps: int = 1, grad_clip: float | None = None, model: nn.Module | None = None,
                 dist: DistInfo | None = None, loss_graph: nn.Module | None = None,
                 fused_optimizer: bool | None = None):
        if loss_graph is not None and dist is not None and dist.ddp:
            raise ConfigError("a compiled loss graph runs on one process; DDP compiles the net (model=)")
        self.net, self.model, self.loss_graph = net, (model if model is not None else net), loss_graph
        self.denoiser, self.schedule, self.generator = denoiser, schedule, generator
        self.device = next(net.parameters()).device
        self.precision, self.accum_steps, self.grad_clip, self.dist = precision, int(accum_steps), grad_clip, dist
        self.optimizer = make_optimizer(net, lr=schedule.lr, weight_decay=weight_decay, betas=betas,
                                        fused=fused_optimizer)
        self.emas = {float(d): EMA(net, float(d)) for d in ema_decays}
        self._pending: list[tuple[int, torch.Tensor, float]] = []

    @property
    def eval_net(self) -> nn.Module:
        """The weights to sample with: the first EMA's copy, or the net itself without EMA."""
        return next(iter(self.emas.values())).model if self.emas else self.net

    def _no_sync(self, last: bool):
        """DDP all-reduces gradients only on the last micro-batch of a step."""
        if self.dist is not None and self.dist.ddp and not last:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def step(self, step: int, next_batch: NextBatch) -> torch.Tensor:
        """Take optimiser step ``step`` (0-based) on ``accum_steps`` micro-batches from ``next_batch()``
        (x (B, ...) clean data, y (B,) labels or None). Returns the mean loss, a 0-dim tensor on the device
        (no sync); :meth:`flush` reads it."""
        lr = self.schedule(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        total = torch.zeros((), device=self.device)
        for micro in range(self.accum_steps):
            x, y = next_batch()
            with self._no_sync(micro == self.accum_steps - 1):
                with autocast(self.precision, self.device):
                    loss = self._loss(x, y).float().mean()
                (loss / self.accum_steps).backward()
            total += loss.detach()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for ema in self.emas.values():
            ema.update(self.net)
        mean = all_reduce_mean(total / self.accum_steps, self.dist)
        self._pending.append((step, mean, lr))
        return mean

    def _loss(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Per-sample losses (B,) of one micro-batch: the denoiser on the model, or the draws then the graph."""
        if self.loss_graph is None:
            return self.denoiser.loss_per_sample(self.model, x, y, generator=self.generator)
        t, eps, y_net = self.denoiser.draw(x, y, self.generator)
        return self.loss_graph(x, t, eps, y_net, y)["loss"]

    def flush(self) -> list[tuple[int, float, float]]:
        """(step, loss, lr) of every step since the last flush, as numbers (one device sync). Raises
        NonFiniteLossError naming the first step whose loss is NaN or infinite."""
        if not self._pending:
            return []
        values = torch.stack([m for _, m, _ in self._pending]).tolist()
        rows = [(s, v, lr) for (s, _, lr), v in zip(self._pending, values)]
        self._pending = []
        for s, v, lr in rows:
            if not math.isfinite(v):
                raise NonFiniteLossError(f"loss is {v} at step {s}; likely cause: "
                                         f"{likely_cause(lr, self.denoiser, self.grad_clip)}")
        return rows

    # ---- checkpoint state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """model, ema ({decay as str: state dict}) and optimizer: the trained state of a checkpoint."""
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": {str(d): e.state_dict() for d, e in self.emas.items()}}

    def load_state_dict(self, state: dict) -> None:
        if [float(d) for d in state["ema"]] != list(self.emas):
            raise ConfigError(f"the checkpoint holds EMAs {list(state['ema'])}, the run asks for "
                              f"{list(self.emas)}; set ema_decays to match")
        self.net.load_state_dict(state["model"])
        for e, sd in zip(self.emas.values(), state["ema"].values()):
            e.load_state_dict(sd)
        self.optimizer.load_state_dict(state["optimizer"])
