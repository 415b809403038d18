"""Nearest neighbours, the one search every metric uses.

- :func:`knn`: the k nearest neighbours of points of one cloud among its other points (intrinsic dimension).
- :func:`nearest`: the distance from each query to its k-th nearest point of another set (toy sample
  quality, memorisation).

Both find candidates (by chunked squared distances ``|a|^2 + |b|^2 - 2 a.b``, a matrix product in chunks of
about 64 MiB; :func:`nearest` by a k-d tree in up to 16 dimensions) and then recompute the distance to each
chosen neighbour exactly as ``|a - b|`` in float64, so a copy of a point is at distance exactly 0 and the
rounding of the search never reaches a result.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from manifold_lab.checks import ConfigError

KD_TREE_MAX_DIM = 16          # nearest(): a k-d tree finds the candidates up to this dimension
_CHUNK_BYTES = 64 * 2 ** 20  # working memory of one chunk of the neighbour search



def as_cloud(X, min_points: int = 3) -> torch.Tensor:
    """X (n, D) as a float64 torch tensor on its device; raises ConfigError unless 2-D, finite, n >= min_points."""
    X = torch.from_numpy(np.asarray(X)) if not isinstance(X, torch.Tensor) else X
    X = X.detach().to(torch.float64)
    if X.ndim != 2:
        raise ConfigError(f"a point cloud must be 2-D (n, D), got shape {tuple(X.shape)}")
    if len(X) < min_points:
        raise ConfigError(f"a point cloud needs at least {min_points} points here, got {len(X)}")
    if not torch.isfinite(X).all():
        raise ConfigError("the point cloud holds NaN or infinite values")
    return X


def unique_points(X) -> torch.Tensor:
    """X (n, D) without repeated rows: (m, D) float64, m <= n (exact copies only; row order not kept)."""
    return torch.unique(as_cloud(X, min_points=1), dim=0)


def knn(X, k: int, queries: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest neighbours of each query point among the rows of X, the point itself excluded.

    X: (n, D); queries: (q,) row indices of X (default: all n rows). Returns (dist, idx), both (q, k),
    sorted by distance, dist float64 recomputed exactly as |x_i - x_j| (duplicates give exactly 0).
    """
    X = as_cloud(X, min_points=2)
    n, D = X.shape
    if not (isinstance(k, int) and 1 <= k < n):
        raise ConfigError(f"k must be an integer in [1, n-1] = [1, {n - 1}], got {k!r}")
    queries = torch.arange(n, device=X.device) if queries is None else queries.to(X.device)
    sq = (X * X).sum(1)
    step = max(1, _CHUNK_BYTES // (8 * n))
    idx = []
    for s in range(0, len(queries), step):
        q = queries[s:s + step]
        d2 = sq[q, None] + sq[None, :] - 2 * X[q] @ X.T
        d2[torch.arange(len(q), device=X.device), q] = math.inf  # never the point itself
        idx.append(d2.topk(k, dim=1, largest=False).indices)
    idx = torch.cat(idx)
    step = max(1, _CHUNK_BYTES // (8 * k * D))
    dist = torch.cat([(X[queries[s:s + step], None, :] - X[idx[s:s + step]]).norm(dim=2)
                      for s in range(0, len(queries), step)])
    dist, order = dist.sort(dim=1)
    return dist, idx.gather(1, order)


def nearest(points, queries, k: int = 1) -> torch.Tensor:
    """Distance from each query (q, d) to its k-th nearest row of ``points`` (n, d), a point equal to the
    query included (at 0): (q,) float64. Numpy or torch input (on the CPU); both are read as float64.

    The candidates come from a k-d tree (scipy's cKDTree) up to ``KD_TREE_MAX_DIM`` dimensions, where it is
    100x faster than a full distance matrix, else from chunked matrix products; either way the distances
    are then recomputed exactly as |q - p|, so the result does not depend on the search."""
    P, Q = (torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().cpu()
            .to(torch.float64) for a in (points, queries))
    if P.ndim != 2 or Q.ndim != 2 or P.shape[1] != Q.shape[1]:
        raise ConfigError(f"nearest needs points (n, d) and queries (q, d), got {tuple(P.shape)} and {tuple(Q.shape)}")
    if not (isinstance(k, int) and 1 <= k <= len(P)):
        raise ConfigError(f"k must be an integer in [1, n] = [1, {len(P)}], got {k!r}")
    idx = _tree_candidates(P, Q, k) if P.shape[1] <= KD_TREE_MAX_DIM else _matmul_candidates(P, Q, k)
    exact = (Q[:, None, :] - P[idx]).pow(2).sum(2).sqrt()                    # (q, k) exact |q - p|
    return exact.sort(dim=1).values[:, k - 1]


def _tree_candidates(P: torch.Tensor, Q: torch.Tensor, k: int) -> torch.Tensor:
    from scipy.spatial import cKDTree

    _, idx = cKDTree(P.numpy()).query(Q.numpy(), k=list(range(1, k + 1)))
    return torch.from_numpy(np.asarray(idx, dtype=np.int64)).reshape(len(Q), k)


def _matmul_candidates(P: torch.Tensor, Q: torch.Tensor, k: int) -> torch.Tensor:
    sq = (P * P).sum(1)
    step = max(1, _CHUNK_BYTES // (8 * len(P)))
    out = []
    for s in range(0, len(Q), step):
        d2 = torch.addmm(sq[None, :], Q[s:s + step], P.T, alpha=-2)          # |p|^2 - 2 q.p: the order of |q - p|
        out.append(d2.argmin(1, keepdim=True) if k == 1 else d2.topk(k, dim=1, largest=False).indices)
    return torch.cat(out) if out else torch.zeros((0, k), dtype=torch.int64)
