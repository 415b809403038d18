"""Toy metrics, measured on the d-dim coordinates P^T x of generated samples.

- ``energy_distance``: the (squared) energy distance 2 E|a-b| - E|a-a'| - E|b-b'| between generated and
  fresh ground-truth points (Szekely & Rizzo); 0 iff the distributions agree. Our distribution distance.
- ``nn_dist``: mean distance from each generated point to its nearest ground-truth point. It catches
  samples that fall off the data, which a distribution distance can average away.
- ``nn_dist_ref``: mean distance from each ground-truth point to its nearest generated point (coverage:
  it catches samples that collapse onto part of the data).
- ``off_manifold``: mean over samples of |(I - P P^T) x| / sqrt(D), the residual outside the data
  subspace per ambient dimension (0 for D = d).

Any non-finite sample makes every metric +inf instead of crashing.
"""
from __future__ import annotations

import math

import torch

from manifold_lab.data.manifold import ColumnOrthogonalEmbedding
from manifold_lab.metrics.knn import nearest


def _mean_pdist(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> float:
    total = sum(torch.cdist(a[i:i + chunk], b).sum().item() for i in range(0, len(a), chunk))
    return total / (len(a) * len(b))


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Energy distance between point sets a (n, d) and b (m, d), float64, >= 0 up to sampling noise."""
    a, b = a.double(), b.double()
    return 2 * _mean_pdist(a, b) - _mean_pdist(a, a) - _mean_pdist(b, b)


def toy_metrics(samples: torch.Tensor, embedding: ColumnOrthogonalEmbedding, reference: torch.Tensor,
                fresh: torch.Tensor) -> dict[str, float]:
    """All toy metrics. samples: (n, D) generated; reference: (m, d) ground truth for nearest-neighbour
    distances; fresh: (k, d) another ground-truth draw for the energy distance. Returns floats."""
    names = ("energy_distance", "nn_dist", "nn_dist_ref", "off_manifold")
    if not torch.isfinite(samples).all():
        return {k: math.inf for k in names} | {"nonfinite_frac": (~torch.isfinite(samples)).any(1).float().mean().item()}
    samples = samples.double()
    x_d = embedding.project(samples)
    ref = reference.double()
    return {
        "energy_distance": energy_distance(x_d[: len(fresh)], fresh),
        "nn_dist": nearest(ref, x_d).mean().item(),
        "nn_dist_ref": nearest(x_d, ref[: len(x_d)]).mean().item(),
        "off_manifold": (embedding.off_manifold(samples) / math.sqrt(embedding.D)).mean().item(),
        "nonfinite_frac": 0.0,
    }
