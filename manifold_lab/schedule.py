"""Training-time samplers for t (t = 1 clean, t = 0 noise) and the noise draw.

The paper samples t = sigmoid(n), n ~ N(p_mean, p_std^2) with p_mean = -0.8, p_std = 0.8 at every
resolution (a negative p_mean shifts t toward noise; JiT Table 3 sweeps p_mean in {0, -0.4, -0.8, -1.2}).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from manifold_lab.checks import ConfigError, check_choice

T_SAMPLERS = ("logit_normal", "uniform")


@dataclass(frozen=True)
class TimeSampler:
    """Draws one t per sample. kind: "logit_normal" (t = sigmoid(N(p_mean, p_std^2))) or "uniform" (U(0, 1))."""

    kind: str = "logit_normal"
    p_mean: float = -0.8
    p_std: float = 0.8

    def __post_init__(self):
        check_choice("time sampler", self.kind, T_SAMPLERS)
        if not math.isfinite(self.p_mean):
            raise ConfigError(f"logit-normal p_mean must be a finite number, got {self.p_mean!r}")
        if self.kind == "logit_normal" and not (self.p_std > 0 and math.isfinite(self.p_std)):
            raise ConfigError(f"logit-normal p_std must be a finite number > 0, got {self.p_std!r}")

    def __call__(self, n: int, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return t of shape (n,), float32, in (0, 1) (t = 1 clean)."""
        if self.kind == "uniform":
            return torch.rand(n, device=device, generator=generator)
        return torch.sigmoid(torch.randn(n, device=device, generator=generator) * self.p_std + self.p_mean)


def time_grid(steps: int, *, device=None) -> torch.Tensor:
    """The sampling grid: steps + 1 points, linear from t = 0 (noise) to t = 1 (clean)."""
    return torch.linspace(0.0, 1.0, steps + 1, device=device)
