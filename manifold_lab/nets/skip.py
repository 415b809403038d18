"""A long skip from the network's input to its output, with learned gates (the U-Net's long skip, reduced
to its simplest form), for the question "what rescues eps and v at high dimension?".

``LongSkip(net, shape)(z, t, y) = net(z, t, y) + g * z`` with ``g`` a learned gate per output coordinate
of one sample (``shape``: (D,) for the toy MLP, (C, H, W) for the image JiT), initialised to 0, so the
untrained wrapped net computes exactly what the plain net computes (and, being made of zeros, creating it
draws nothing from the random generator: the wrapped net's own initialisation is the plain one's, bit for
bit). The skip is the same whatever the output is read as (x, eps or v; :class:`manifold_lab.denoiser.Denoiser`
decides). z: (B, *shape), t: (B,) with t = 1 clean; returns (B, *shape) in z's dtype.
"""
from __future__ import annotations

import torch
from torch import nn


class LongSkip(nn.Module):
    """``net(z, t, y) + gate * z``; gate (shape) zero-initialised (see the module docstring)."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.inner = net
        self.gate = nn.Parameter(torch.zeros(*shape))

    def forward(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(z, t, y) + (self.gate * z).to(z.dtype)
