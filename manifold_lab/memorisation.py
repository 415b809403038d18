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

Metrics: :mod:`manifold_lab.metrics.memorisation` (``memorisation_metrics``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from manifold_lab import io, seeds
from manifold_lab.checks import ConfigError
from manifold_lab.data.manifold import ColumnOrthogonalEmbedding, sample_toy
from manifold_lab.metrics.memorisation import memorisation_metrics
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
    g = seeds.generator(cfg.seed, "memorisation")
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
