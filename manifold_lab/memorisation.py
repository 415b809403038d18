"""Memorisation -> generalisation on the toy (after Kadkhodaie, Guth, Simoncelli & Mallat, ICLR 2024).

One study point (``run_memorisation_point``): two toy models of the same configuration and the same
``seed`` (so the same initialisation, the same t / eps / batch-order draws and the same sampling noise)
trained on two disjoint training sets of N = ``n_train`` points of the same distribution (``data_seed``
and ``data_seed + 1``: independent draws, checked to share no point), then sampled from the same noise.
Written to ``out_dir``::

    out_dir/model_a/, model_b/   the two toy run folders (samples.npz holds each one's training set)
    out_dir/memorisation.npz     per-sample distances (d_train_*, d_other_*, d_manifold_*, paired)
    out_dir/config.json          the resolved MemorisationConfig; ``derived``: k (the manifold's dimension)
    out_dir/metrics.json         the metrics below (flat), written last
    out_dir/fig_memorisation.png the two models' samples and training sets (first two d-dim axes)

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
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from manifold_lab import io
from manifold_lab.checks import ConfigError
from manifold_lab.data.manifold import ColumnOrthogonalEmbedding, sample_toy
from manifold_lab.runs.writer import finish_run
from manifold_lab.toy import ToyConfig, run_toy


@dataclass
class MemorisationConfig(ToyConfig):
    n_train: int = 1024         # training points per model (two disjoint sets of this size)
    copy_frac: float = 0.1      # a sample copies a training point when closer than copy_frac x the set's spacing
    n_manifold: int = 200000    # fresh ground-truth points standing for the true manifold

    def __post_init__(self):
        super().__post_init__()
        if self.n_train < 2:
            raise ConfigError(f"n_train must be >= 2 for a memorisation point, got {self.n_train}")
        if not 0 < self.copy_frac < 1:
            raise ConfigError(f"copy_frac must be in (0, 1), got {self.copy_frac!r}")
        if not isinstance(self.n_manifold, int) or self.n_manifold < 1000:
            raise ConfigError(f"n_manifold must be an integer >= 1000, got {self.n_manifold!r}")

    def toy_config(self, data_seed: int) -> ToyConfig:
        """The ToyConfig of one of the two models (its training set drawn with ``data_seed``)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(ToyConfig)}
        return ToyConfig(**{**values, "data_seed": data_seed})


def _nearest(points: np.ndarray, queries: np.ndarray, k: int = 1) -> np.ndarray:
    """Distance from each query (q, d) to its k-th nearest row of points (n, d): (q,) float64."""
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(np.asarray(points, np.float64)).query(np.asarray(queries, np.float64), k=[k])
    return dist[:, 0]


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
    if np.any(_nearest(train_a, train_b) == 0):
        raise ConfigError("the two training sets share a point; they must be disjoint")
    metrics: dict[str, float] = {}
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


def run_memorisation_point(cfg: MemorisationConfig, out_dir: str | Path, *, progress: bool = False) -> dict[str, float]:
    """Train the two models, sample them from the same noise, measure; write the folder (module docstring)."""
    out_dir = Path(out_dir)
    for i, tag in enumerate("ab"):
        run_toy(cfg.toy_config(cfg.data_seed + i), out_dir / f"model_{tag}", progress=progress)
    return measure_point(cfg, out_dir)


def measure_point(cfg: MemorisationConfig, out_dir: str | Path) -> dict[str, float]:
    """Measure a point from the files of its two trained models (``out_dir/model_a``, ``model_b``: samples,
    training set, metrics), without training: what :func:`run_memorisation_point` calls after training, and
    what re-measures a finished point when a metric is added. Writes memorisation.npz, the figure and
    metrics.json (last)."""
    out_dir = Path(out_dir)
    emb = ColumnOrthogonalEmbedding(cfg.D, cfg.d, seed=cfg.proj_seed)
    files, runs = {}, {}
    for tag in "ab":
        with np.load(out_dir / f"model_{tag}" / "samples.npz") as f:
            files[tag] = {name: f[name] for name in ("samples", "train", "reference")}
        runs[tag] = io.read_json(out_dir / f"model_{tag}" / "metrics.json")
    g = torch.Generator().manual_seed(30_000 + cfg.seed)
    manifold = sample_toy(cfg.dist, cfg.n_manifold, cfg.d, g).numpy()
    fresh = sample_toy(cfg.dist, cfg.n_samples, cfg.d, g).numpy()
    a, b = files["a"], files["b"]
    metrics, per_sample = memorisation_metrics(a["samples"], b["samples"], a["train"], b["train"], emb, manifold,
                                               fresh, cfg.copy_frac)
    for name in ("nn_dist", "off_manifold", "energy_distance", "train_s"):
        metrics[name] = (runs["a"][name] + runs["b"][name]) / 2
    from manifold_lab.plots.memorisation import plot_memorisation_point

    proj = {tag: emb.project(torch.as_tensor(files[tag]["samples"], dtype=torch.float64)).numpy() for tag in "ab"}
    fig = plot_memorisation_point(proj["a"], proj["b"], a["train"], b["train"], a["reference"], cfg, metrics)
    return finish_run(out_dir, cfg, metrics, kind="memorisation", derived={"k": _k(cfg)},
                      arrays={"memorisation.npz": per_sample}, figures={"fig_memorisation.png": fig})


def _k(cfg: ToyConfig) -> int:
    from manifold_lab.metrics.intrinsic_dim import manifold_dimension

    return manifold_dimension(cfg.dist, cfg.d)
