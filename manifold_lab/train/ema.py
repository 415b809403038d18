"""Exponential moving average of a model's parameters (updated after every optimiser step)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``self.model``, a frozen copy whose parameters follow p_ema <- decay * p_ema + (1 - decay) * p.

    Starts from a copy of the initial weights (no warm-up), as JiT does. Buffers are copied as they are.
    The update is one fused ``_foreach_lerp_`` over all parameters (bit-identical to a loop of ``lerp_``).
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._params = list(self.model.parameters())
        self._buffers = list(self.model.buffers())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = [p.detach() for p in model.parameters()]
        if src and src[0].dtype != self._params[0].dtype:
            src = [p.to(q.dtype) for p, q in zip(src, self._params)]
        torch._foreach_lerp_(self._params, src, 1 - self.decay)
        for b, s in zip(self._buffers, model.buffers()):
            b.copy_(s)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
