"""Toy d-dim distributions and their column-orthogonal embedding into D dims.

Every distribution is normalised to **zero mean and unit RMS per coordinate** (E|x|^2 / d = 1), the scale
of the unit-variance noise it is mixed with; the normalising constants are measured once on 200,000
points drawn with a fixed seed. Samples are drawn from a ``torch.Generator``, so they are seeded.

The embedding x = P x_d uses a fixed D x d matrix P with orthonormal columns (P^T P = I_d), made by QR
of a seeded Gaussian matrix; the model never sees P. ``project`` recovers x_d = P^T x, and the
off-manifold residual |(I - P P^T) x| measures how far a D-dim point lies from the d-dim subspace.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch

from manifold_lab.checks import ConfigError, check_choice, check_positive

Gen = torch.Generator | None


def _u(n, g, *shape):
    return torch.rand((n, *shape), generator=g, dtype=torch.float64, device=None if g is None else g.device)


def _n(n, g, *shape):
    return torch.randn((n, *shape), generator=g, dtype=torch.float64, device=None if g is None else g.device)


def _spiral(n, d, g):
    # Archimedean spiral r = s for s in [1.5 pi, 4.5 pi] (1.5 turns, the usual 2-D swiss-roll curve),
    # uniform in arc length (density of s proportional to s), with thin Gaussian noise.
    a, b = 1.5 * math.pi, 4.5 * math.pi
    s = (_u(n, g) * (b * b - a * a) + a * a).sqrt()
    return torch.stack([s * s.cos(), s * s.sin()], 1) + 0.1 * _n(n, g, 2)


def _moons(n, d, g):
    a = _u(n, g) * math.pi
    upper = _u(n, g) < 0.5
    x = torch.where(upper, a.cos(), 1 - a.cos())
    y = torch.where(upper, a.sin(), 0.5 - a.sin())
    return torch.stack([x, y], 1) + 0.05 * _n(n, g, 2)


def _checkerboard(n, d, g):
    # 4x4 board on [-2, 2]^2, uniform on the 8 cells with (i + j) even.
    i = (_u(n, g) * 4).floor()
    j = 2 * (_u(n, g) * 2).floor() + i % 2
    return torch.stack([i, j], 1) - 2 + _u(n, g, 2)


def _gaussian_ring(n, d, g):
    k = (_u(n, g) * 8).floor()
    angle = 2 * math.pi * k / 8
    return 2 * torch.stack([angle.cos(), angle.sin()], 1) + 0.1 * _n(n, g, 2)


def _swiss_roll(n, d, g):
    # The 2-D swiss roll: the same 1.5-turn curve as "spiral", uniform in its parameter, as a thick band.
    s = 1.5 * math.pi * (1 + 2 * _u(n, g))
    return torch.stack([s * s.cos(), s * s.sin()], 1) + 0.6 * _n(n, g, 2)


def _sphere(n, d, g):
    x = _n(n, g, d)
    return x / x.norm(dim=1, keepdim=True)


def _torus(n, d, g):
    # Flat (Clifford) torus: d // 2 unit circles in orthogonal planes; an odd d adds one U(-1, 1) axis.
    a = 2 * math.pi * _u(n, g, d // 2)
    parts = [torch.stack([a.cos(), a.sin()], 2).reshape(n, -1)]
    if d % 2:
        parts.append(2 * _u(n, g, 1) - 1)
    return torch.cat(parts, 1)


def _gaussian(n, d, g):
    return _n(n, g, d)


@dataclass(frozen=True)
class _Spec:
    fn: Callable
    dims: str  # "2" (d must be 2) or "any"
    doc: str
    centred: bool = False  # zero mean by symmetry: only rescaled, so a sphere stays a sphere


DISTRIBUTIONS: dict[str, _Spec] = {
    "spiral": _Spec(_spiral, "2", "a thin Archimedean spiral of 1.5 turns (the paper's toy; default)"),
    "moons": _Spec(_moons, "2", "two interleaved half circles"),
    "checkerboard": _Spec(_checkerboard, "2", "uniform on the 8 dark squares of a 4x4 board"),
    "gaussian_ring": _Spec(_gaussian_ring, "2", "8 small Gaussians on a circle"),
    "swiss_roll": _Spec(_swiss_roll, "2", "the spiral's curve as a thick band, uniform in angle (2-D swiss roll)"),
    "sphere": _Spec(_sphere, "any", "uniform on the unit sphere S^(d-1) in R^d", True),
    "torus": _Spec(_torus, "any", "flat torus: d//2 circles in orthogonal planes (+ a U(-1,1) axis if d is odd)", True),
    "gaussian": _Spec(_gaussian, "any", "standard Gaussian in d dims", True),
}


@cache
def _normaliser(name: str, d: int) -> tuple[torch.Tensor, float]:
    raw = DISTRIBUTIONS[name].fn(200_000, d, torch.Generator().manual_seed(12345))
    mean = torch.zeros(d, dtype=raw.dtype) if DISTRIBUTIONS[name].centred else raw.mean(0)
    rms = ((raw - mean) ** 2).sum(1).mean().div(d).sqrt().item()
    return mean, rms


def check_dist(name: str, d: int) -> None:
    """Raise ConfigError unless ``name`` is a known distribution that exists in ``d`` dims."""
    check_choice("distribution", name, DISTRIBUTIONS)
    check_positive("d", d, integer=True)
    if DISTRIBUTIONS[name].dims == "2" and d != 2:
        raise ConfigError(f"distribution {name!r} is 2-D only, got d={d}; for any d use sphere, torus or gaussian")


def sample_toy(name: str, n: int, d: int = 2, generator: Gen = None) -> torch.Tensor:
    """Draw n points of distribution ``name`` in d dims: (n, d) float32, zero mean, unit RMS per coordinate.

    The points lie on the generator's device (the CPU without a generator).
    """
    check_dist(name, d)
    mean, rms = _normaliser(name, d)
    raw = DISTRIBUTIONS[name].fn(n, d, generator)
    return ((raw - mean.to(raw.device)) / rms).float()


class ColumnOrthogonalEmbedding:
    """x = P x_d with P of shape (D, d), P^T P = I_d, from QR of a seeded Gaussian (D >= d)."""

    def __init__(self, D: int, d: int, seed: int = 0):
        self.check_dims(D, d)
        self.D, self.d, self.seed = int(D), int(d), seed
        g = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
        self.P = (q * torch.sign(torch.diagonal(r))).float()  # sign fix: a unique Q for the seed

    @staticmethod
    def check_dims(D: int, d: int) -> None:
        """Raise ConfigError unless D >= d >= 1 are integers."""
        check_positive("D", D, integer=True)
        check_positive("d", d, integer=True)
        if D < d:
            raise ConfigError(f"D={D} is smaller than d={d}; the ambient dimension D must be >= d")

    def embed(self, x_d: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, D): P x_d."""
        return x_d @ self.P.T.to(x_d)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n, d): P^T x, the d-dim coordinates."""
        return x @ self.P.to(x)

    def off_manifold(self, x: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n,): |(I - P P^T) x|, the distance from the data subspace."""
        return (x - self.project(x) @ self.P.T.to(x)).norm(dim=1)
