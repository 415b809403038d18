"""Intrinsic-dimension diagnostics: how many dimensions a point cloud, or a denoiser, really uses.

Point-cloud estimators (all on X of shape (n, D), torch or numpy, computed in float64; the k nearest
neighbours come from :func:`manifold_lab.metrics.knn.knn`, squared distances by chunked matrix products, then the distances to the
chosen neighbours recomputed exactly as |x_i - x_j|, so duplicate points have distance exactly 0):

- ``twonn`` (Facco, d'Errico, Rodriguez & Laio 2017, Sci. Rep. 7:12140). With r1 <= r2 the distances of a
  point to its two nearest neighbours, mu = r2 / r1 follows the Pareto law F(mu) = 1 - mu^(-k) for a
  locally uniform density on a k-dim manifold. We use the paper's linear fit: sort the n ratios, take the
  empirical F_i = i / n (i = 1 .. n), drop the largest ``discard`` fraction (10%: the tail is the most
  sensitive to curvature and density changes) and fit -log(1 - F_i) = k log(mu_i) through the origin,
  k = sum(x y) / sum(x x). Duplicate points are dropped first: repeated rows are reduced to one copy
  (keeping every copy would give r1 = 0 for the copies and r1 = r2, mu = 1, for their neighbours, both
  biasing the fit), and ``twonn_from_distances`` also drops any row with r1 = 0.
- ``mle`` (Levina & Bickel 2004, with the MacKay & Ghahramani 2005 correction). With T_1 <= .. <= T_K the
  distances to the K nearest neighbours of x_i, the local estimate is
  m_i = [ (1 / (K-1)) sum_{j=1}^{K-1} log(T_K / T_j) ]^(-1), and the global one averages the *inverses*:
  m = [ (1/n) sum_i 1 / m_i ]^(-1), because 1 / m_i (not m_i) is the unbiased quantity under the local
  Poisson model. Repeated rows are reduced to one copy first; rows with T_1 = 0 are dropped.
- ``local_pca``: at ``n_anchors`` random anchors, the anchor and its K nearest neighbours are centred and
  their singular values s_1 >= s_2 >= .. give the local variances s_j^2; the local dimension is the least
  m with sum_{j<=m} s_j^2 >= ``threshold`` * sum_j s_j^2 (the 95% explained-variance rule). Returns the
  mean count over anchors. It counts directions in a neighbourhood of K + 1 points, so it is capped at K
  and reads low when K is not several times the dimension (K + 1 samples of 8 equal variances spread out:
  S^8, 5,000 points, reads 7.05 at K = 20 and 7.97 at K = 50), while curvature adds directions once the K
  neighbours reach far on the manifold (the flat torus T^4 in R^8 reads 4.31 at K = 20, 5.55 at K = 50).

All three measure the dimension at the scale of the K-th nearest neighbour: a manifold with thin noise
(the toy spiral has 0.1 Gaussian noise) reads 2-D when that scale is below the noise and 1-D above it
(local PCA: 2.0 at K = 20, 1.12 at K = 100, 5,000 points). When n is far too small to fill a k-dim
neighbourhood they underestimate (the known negative bias at high k): pure noise in D = 512 with 5,000
points reads about 130 by TwoNN, 110 by the MLE and 88 by local PCA with K = 100, not 512.

Jacobian local dimension: :func:`jacobian_spectrum` returns the singular values of dx_hat/dz, the
Jacobian of the denoiser's clean-data estimate (through :func:`manifold_lab.param.convert`, so for any
prediction target). For the ideal denoiser E[x | z] near t = 1 on a k-dim manifold, this is close to the
projection on the tangent space: k singular values near 1 and the rest near 0, so :func:`count_large`
(the singular values above ``rel`` times the largest) reads the local dimension k. Measured on the toy at
D = 512 (MLP, 2000 steps, v-loss, uniform t): x-prediction reads 2 on S^2 at every t in [0.8, 0.99]
and 1 on the spiral at t >= 0.9 for each of 16 points, with rel anywhere in 0.2 .. 0.8; the failing
v-prediction reads 512 there (x_hat = z + (1 - t) v_hat is about z: every singular value near 1).

Toy helpers: :func:`manifold_dimension` is the true k of each toy distribution of
:mod:`manifold_lab.data.manifold`; :func:`noised_cloud` draws x, eps, v or z of a toy in D dims;
:func:`toy_dimensions` runs the estimators on one and returns a record carrying d, k and the estimates.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from manifold_lab import param
from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.data.manifold import ColumnOrthogonalEmbedding, check_dist, sample_toy
from manifold_lab.metrics.knn import as_cloud, knn, unique_points

ESTIMATORS: tuple[str, ...] = ("twonn", "mle", "pca")
CLOUDS: tuple[str, ...] = ("x", "eps", "v", "z")
# ---- estimators ---------------------------------------------------------------------------------------
def twonn_from_distances(r: torch.Tensor, discard: float = 0.1) -> float:
    """TwoNN from r (n, >=2) sorted neighbour distances (columns 0, 1 = r1, r2); see the module docstring."""
    if not 0 <= discard < 1:
        raise ConfigError(f"discard must be in [0, 1), got {discard!r}")
    r1, r2 = r[:, 0], r[:, 1]
    keep = r1 > 0  # duplicates have r1 = 0: dropped, as in the paper
    mu = (r2[keep] / r1[keep]).sort().values
    n = len(mu)
    if n < 3:
        raise ConfigError(f"TwoNN needs at least 3 distinct points, got {n}")
    F = torch.arange(1, n + 1, dtype=mu.dtype, device=mu.device) / n  # the paper's F(mu_(i)) = i / n
    m = max(2, min(int(math.floor(n * (1 - discard))), n - 1))  # F = 1 (the largest mu) never enters
    x, y = mu[:m].log(), -torch.log1p(-F[:m])
    return float((x * y).sum() / (x * x).sum())


def twonn(X, discard: float = 0.1) -> float:
    """TwoNN intrinsic dimension of X (n, D): the paper's fit through the origin of -log(1 - F(mu)) on
    log(mu), mu = r2 / r1, discarding the top ``discard`` fraction of ratios; repeated rows kept once."""
    dist, _ = knn(unique_points(X), 2)
    return twonn_from_distances(dist, discard)


def mle_from_distances(T: torch.Tensor) -> float:
    """Levina-Bickel MLE with MacKay-Ghahramani averaging, from T (n, K) sorted neighbour distances."""
    K = T.shape[1]
    if K < 2:
        raise ConfigError(f"the MLE needs k >= 2 neighbours, got {K}")
    T = T[T[:, 0] > 0]  # duplicates (T_1 = 0) dropped
    if len(T) == 0:
        raise ConfigError("the MLE found no point with a distinct nearest neighbour")
    inv_local = torch.log(T[:, -1:] / T[:, :-1]).sum(1) / (K - 1)  # 1 / m_i
    return float(1 / inv_local.mean())


def mle(X, k: int = 20) -> float:
    """Levina-Bickel MLE of the intrinsic dimension of X (n, D) with k neighbours:
    m = [ (1/n) sum_i (1/(k-1)) sum_{j<k} log(T_k(x_i) / T_j(x_i)) ]^(-1) (MacKay-Ghahramani)."""
    dist, _ = knn(unique_points(X), k)
    return mle_from_distances(dist)


def local_pca_counts(X, k: int = 20, threshold: float = 0.95, n_anchors: int = 500, seed: int = 0) -> torch.Tensor:
    """Local PCA dimension at each of ``n_anchors`` random anchors of X (n, D): (n_anchors,) int64 counts.

    Neighbourhood: the anchor and its k nearest neighbours, centred; count: the least m whose top-m
    local variances s_j^2 explain at least ``threshold`` of their sum.
    """
    X = as_cloud(X)
    if not 0 < threshold <= 1:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")
    check_positive("n_anchors", n_anchors, integer=True)
    g = torch.Generator().manual_seed(seed)
    anchors = torch.randperm(len(X), generator=g)[:n_anchors].to(X.device)
    _, idx = knn(X, k, anchors)
    hood = X[torch.cat([anchors[:, None], idx], 1)]  # (A, k+1, D)
    hood = hood - hood.mean(1, keepdim=True)
    gram = hood @ hood.mT if hood.shape[1] <= hood.shape[2] else hood.mT @ hood  # the smaller Gram matrix
    var = torch.linalg.eigvalsh(gram).flip(-1).clamp_min(0)  # s_j^2, descending: (A, min(k+1, D))
    frac = var.cumsum(1) / var.sum(1, keepdim=True).clamp_min(torch.finfo(var.dtype).tiny)
    return (frac < threshold - 1e-12).sum(1) + 1


def local_pca(X, k: int = 20, threshold: float = 0.95, n_anchors: int = 500, seed: int = 0) -> float:
    """Mean local-PCA dimension of X (n, D) over random anchors (95% explained-variance rule; at most k)."""
    return float(local_pca_counts(X, k, threshold, n_anchors, seed).double().mean())


_DISPATCH: dict[str, Callable[..., float]] = {"twonn": twonn, "mle": mle, "pca": local_pca}


def estimate(X, estimator: str, **kw) -> float:
    """Intrinsic dimension of X (n, D) by ``estimator`` in ("twonn", "mle", "pca"); kw go to that function."""
    check_choice("intrinsic-dimension estimator", estimator, ESTIMATORS)
    return _DISPATCH[estimator](X, **kw)


# ---- toy ground truth and noised clouds ---------------------------------------------------------------
_TWO_D_DIMS = {"spiral": 1, "moons": 1, "checkerboard": 2, "gaussian_ring": 2, "swiss_roll": 2}


def manifold_dimension(dist: str, d: int) -> int:
    """The intrinsic dimension k of toy distribution ``dist`` drawn in d dims.

    sphere: d - 1 (S^(d-1)); torus: d // 2 circles + 1 if d is odd (a U(-1, 1) axis); gaussian: d;
    spiral and moons: 1 (curves; their thin 0.1 / 0.05 Gaussian noise makes them 2-D below that scale);
    checkerboard: 2 (uniform on squares); gaussian_ring: 2 (eight 2-D blobs of std 0.1); swiss_roll: 2
    (a thick band).
    """
    check_dist(dist, d)
    if dist in _TWO_D_DIMS:
        return _TWO_D_DIMS[dist]
    return {"sphere": d - 1, "torus": d // 2 + d % 2, "gaussian": d}[dist]


def noised_cloud(dist: str, d: int, D: int, n: int, of: str = "x", t: float = 1.0, seed: int = 0,
                 proj_seed: int = 0) -> torch.Tensor:
    """n draws of one quantity of the toy in D dims: (n, D) float32.

    x = P x_d (``sample_toy(dist, n, d)`` embedded by ``ColumnOrthogonalEmbedding(D, d, proj_seed)``),
    eps ~ N(0, I_D) as in the toy, and ``of`` picks x, eps, v = x - eps or z = t x + (1 - t) eps
    (``param.targets`` / ``param.interpolate``; t = 1 clean). ``seed`` seeds the draws of x and eps.
    """
    check_choice("cloud", of, CLOUDS)
    check_positive("n", n, integer=True)
    if not 0 <= t <= 1:
        raise ConfigError(f"t must be in [0, 1], got {t!r}")
    g = torch.Generator().manual_seed(seed)
    x = ColumnOrthogonalEmbedding(D, d, proj_seed).embed(sample_toy(dist, n, d, g))
    eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
    if of == "z":
        return param.interpolate(x, eps, torch.full((n,), float(t)))
    return param.targets(x, eps)[of]


def toy_dimensions(dist: str, d: int, D: int, n: int, of: str = "x", t: float = 1.0, seed: int = 0,
                   estimators: tuple[str, ...] = ESTIMATORS, **kw) -> dict:
    """Estimate the dimension of one noised toy cloud; returns {dist, d, k, D, n, of, t, <estimator>: value}.

    kw: per-estimator keyword dicts, e.g. ``pca={"k": 50}``.
    """
    for name in estimators:
        check_choice("intrinsic-dimension estimator", name, ESTIMATORS)
    X = noised_cloud(dist, d, D, n, of, t, seed)
    record = {"dist": dist, "d": d, "k": manifold_dimension(dist, d), "D": D, "n": n, "of": of, "t": t}
    return record | {name: estimate(X, name, **kw.get(name, {})) for name in estimators}


# ---- Jacobian local dimension ---------------------------------------------------------------------------
def denoiser_jacobian(denoiser, net, z: torch.Tensor, t: float, chunk_size: int | None = None) -> torch.Tensor:
    """Jacobians dx_hat/dz of the clean-data estimate at each of the B points z (B, D): (B, D, D).

    x_hat(z, t) = param.convert(net(z, t), denoiser.pred, "x", z, t, denoiser.t_eps), so any prediction
    target works. t: a scalar in [0, 1] shared by the batch. Computed with torch.func (vmap of jacrev) in
    the dtype of z; ``chunk_size`` bounds how many points vmap takes at once. z of any rank (B, ...) is
    accepted and flattened: the result is then (B, N, N) with N the size of one sample.
    """
    if not 0 <= t <= 1:
        raise ConfigError(f"t must be in [0, 1], got {t!r}")
    tt = torch.full((1,), float(t), dtype=z.dtype, device=z.device)

    def x_hat(zi: torch.Tensor) -> torch.Tensor:
        zb = zi[None]
        return param.convert(net(zb, tt), denoiser.pred, "x", zb, tt, denoiser.t_eps)[0]

    jac = torch.func.vmap(torch.func.jacrev(x_hat), chunk_size=chunk_size)(z.detach())
    size = z[0].numel()
    return jac.reshape(len(z), size, size)


def jacobian_spectrum(denoiser, net, z: torch.Tensor, t: float, chunk_size: int | None = None) -> torch.Tensor:
    """Singular values of dx_hat/dz (see :func:`denoiser_jacobian`) at the B points z (B, D): (B, D),
    float64, descending."""
    return torch.linalg.svdvals(denoiser_jacobian(denoiser, net, z, t, chunk_size).double())


def count_large(sv: torch.Tensor, rel: float = 0.5) -> torch.Tensor:
    """Number of singular values above ``rel`` times the largest, per row: sv (..., D) -> (...,) int64.

    Rule: relative to the largest, so an overall gain of the denoiser does not matter; 0.5 is the midpoint
    of the ideal spectrum near t = 1 (about 1 on the k tangent directions, about 0 on the normal ones), so
    a working denoiser gives the same count for any rel well inside (0, 1).
    """
    if not 0 < rel < 1:
        raise ConfigError(f"rel must be in (0, 1), got {rel!r}")
    return (sv > rel * sv.amax(dim=-1, keepdim=True)).sum(-1)
