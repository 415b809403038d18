"""Exponential moving average of a model's parameters (updated after every optimiser step)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``self.model``, a frozen copy whose parameters follow p_ema <- decay * p_ema + (1 - decay) * p.

    Starts from a copy of the initial weights (no warm-up), as JiT does. Buffers are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = dict(model.named_parameters())
        for name, p in self.model.named_parameters():
            p.lerp_(src[name].detach().to(p.dtype), 1 - self.decay)
        src_b = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(src_b[name])

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
