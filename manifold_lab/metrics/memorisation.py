"""Memorisation metrics of two toy models trained on disjoint sets (after Kadkhodaie et al., ICLR 2024).

Metrics (all distances in the ambient R^D: a sample s has in-subspace coordinates P^T s and the residual
|(I - P P^T) s|, and the training points lie in the subspace; means over the two models unless named _a/_b):

- ``paired_dist``: mean |s_a - s_b| over paired samples (the same initial noise); ``paired_dist_rel``
  divides it by the mean distance between two independent data points (0: the models produce the same
  point, as two generalising models do; about 1 or more: unrelated points).
- ``dist_train``: mean distance of a sample to the nearest point of its own training set;
  ``dist_other_train``: to the nearest point of the *other* model's training set (the null: for a model
  that generalises the two are equal); ``train_ratio`` = dist_train / dist_other_train (well below 1:
  memorisation). ``dist_manifold``: to the true data distribution, approximated by ``n_manifold`` fresh
  ground-truth points (a far denser set than any training set).
- the same measured inside the d-dim subspace (``dist_train_proj``, ``dist_other_train_proj``,
  ``dist_manifold_proj``, ``train_ratio_proj``, ``copy_share_proj``: from P^T s, the off-subspace residual
  left out; equal to the ambient ones when D = d). At large D a model's samples carry a residual off the
  subspace that can exceed the copy threshold, so the ambient copy share can read 0 while the in-subspace
  positions copy the training points: the two tell apart "lands on a training point" from "lands near it
  in the data's own coordinates".
- ``copy_share``: the share of samples closer to a training point of their own set than ``copy_frac``
  times the set's spacing (``spacing``: the mean distance of a training point to its nearest other training
  point; ``copy_threshold`` = copy_frac * spacing). ``copy_share_null``: the same share for fresh
  ground-truth points (what a perfect generaliser scores; about copy_frac where the set looks 1-D at the
  scale of its spacing, about pi copy_frac^2 / 4 where it looks 2-D).
- per model quality from the toy run: ``nn_dist``, ``off_manifold``, ``energy_distance`` (means of a and b).
- ``shared_train_points``: how many points of set a are also in set b (float32 coincidences; see MAX_SHARED).
"""
from __future__ import annotations

import numpy as np
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.data.manifold import ColumnOrthogonalEmbedding
from manifold_lab.metrics.knn import nearest

# Two independent float32 draws of a continuous distribution can still hold identical points (on a circle
# the angle has about 2^24 values: two sets of 16384 share about 16 of them). Up to this share of a set is
# such a coincidence, counted in ``shared_train_points``; more means the sets were not drawn independently.
MAX_SHARED = 0.01


def _nearest(points: np.ndarray, queries: np.ndarray, k: int = 1) -> np.ndarray:
    """Distance from each query (q, d) to its k-th nearest row of points (n, d): (q,) float64."""
    return nearest(points, queries, k).numpy()


def _ambient(in_subspace: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Distances in R^D from the in-subspace distance to a point of the subspace and the residual."""
    return np.sqrt(in_subspace ** 2 + residual ** 2)


def spacing(train: np.ndarray) -> float:
    """Mean distance of a training point (N, d) to its nearest other training point."""
    return float(_nearest(train, train, k=2).mean())


def sample_distances(samples, embedding: ColumnOrthogonalEmbedding, train: np.ndarray, other: np.ndarray,
                     manifold: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample distances of samples (n, D) to the own training set, the other set and the manifold (each an
    (m, d) array of d-dim coordinates): ``d_train``, ``d_other``, ``d_manifold`` in R^D and the same with
    ``_proj`` in the d-dim subspace (from P^T s: the off-subspace residual left out). Non-finite samples get +inf."""
    s = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
    ok = torch.isfinite(s).all(1).numpy()
    s = torch.where(torch.isfinite(s), s, torch.zeros_like(s))
    xd = embedding.project(s).numpy()
    res = (embedding.off_manifold(s) if embedding.D > embedding.d else torch.zeros(len(s), dtype=s.dtype)).numpy()
    out = {}
    for name, ref in (("d_train", train), ("d_other", other), ("d_manifold", manifold)):
        inside = _nearest(ref, xd)
        out[name] = np.where(ok, _ambient(inside, res), np.inf)
        out[f"{name}_proj"] = np.where(ok, inside, np.inf)
    return out


def memorisation_metrics(samples_a, samples_b, train_a: np.ndarray, train_b: np.ndarray,
                         embedding: ColumnOrthogonalEmbedding, manifold: np.ndarray, fresh: np.ndarray,
                         copy_frac: float = 0.1) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The metrics of the module docstring and the per-sample arrays. samples_*: (n, D) generated from the
    same noise; train_*: (N, d) the two training sets; manifold: (M, d) dense ground truth; fresh: (f, d)
    ground truth independent of both sets (the null)."""
    shared = int(np.count_nonzero(_nearest(train_a, train_b) == 0))
    if shared > MAX_SHARED * len(train_a):
        raise ConfigError(f"the two training sets share {shared} of {len(train_a)} points; they must be disjoint "
                          f"(draws of different data seeds share at most {MAX_SHARED:.0%}: float32 coincidences)")
    metrics: dict[str, float] = {"shared_train_points": float(shared)}
    per_sample: dict[str, np.ndarray] = {}
    for tag, samples, own, other in (("a", samples_a, train_a, train_b), ("b", samples_b, train_b, train_a)):
        dist = sample_distances(samples, embedding, own, other, manifold)
        gap = spacing(own)
        null = _nearest(own, fresh)
        metrics |= {f"spacing_{tag}": gap, f"copy_share_null_{tag}": float((null < copy_frac * gap).mean()),
                    f"dist_train_null_{tag}": null.mean()}
        for sfx in ("", "_proj"):
            metrics |= {f"dist_train{sfx}_{tag}": dist[f"d_train{sfx}"].mean(),
                        f"dist_other_train{sfx}_{tag}": dist[f"d_other{sfx}"].mean(),
                        f"dist_manifold{sfx}_{tag}": dist[f"d_manifold{sfx}"].mean(),
                        f"copy_share{sfx}_{tag}": float((dist[f"d_train{sfx}"] < copy_frac * gap).mean())}
        per_sample |= {f"{k}_{tag}": v for k, v in dist.items()}
    for name in ("dist_train", "dist_other_train", "dist_manifold", "copy_share", "dist_train_proj",
                 "dist_other_train_proj", "dist_manifold_proj", "copy_share_proj", "spacing", "copy_share_null",
                 "dist_train_null"):
        metrics[name] = (metrics[f"{name}_a"] + metrics[f"{name}_b"]) / 2
    metrics["copy_threshold"] = copy_frac * metrics["spacing"]
    metrics["train_ratio"] = metrics["dist_train"] / metrics["dist_other_train"]
    metrics["train_ratio_proj"] = metrics["dist_train_proj"] / metrics["dist_other_train_proj"]
    a, b = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (samples_a, samples_b))
    per_sample["paired"] = (a - b).norm(dim=1).numpy()
    pair_scale = float(np.linalg.norm(fresh[: len(fresh) // 2] - fresh[len(fresh) // 2: 2 * (len(fresh) // 2)],
                                      axis=1).mean())
    metrics["paired_dist"] = float(per_sample["paired"].mean())
    metrics["paired_dist_rel"] = metrics["paired_dist"] / pair_scale
    metrics["data_pair_dist"] = pair_scale
    return {k: float(v) for k, v in metrics.items()}, per_sample
