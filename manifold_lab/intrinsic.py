"""Intrinsic-dimension diagnostics of the toy: one study point and the ``id`` command.

Two dimensions, always both stated: the toy's ``d`` is the dimension of the subspace P spans, and ``k``
(:func:`manifold_lab.metrics.intrinsic_dim.manifold_dimension`) the manifold's own dimension, which the
estimators measure (sphere S^(d-1): k = d - 1; flat torus: k = d / 2 for even d; spiral: 1; Gaussian: d).

``run_intrinsic_point(IntrinsicConfig(...), out_dir)`` for one (dist, d, D):

1. the estimated dimension (TwoNN, MLE, local PCA of :mod:`manifold_lab.metrics.intrinsic_dim`) of ``n``
   draws of x, eps, v = x - eps and of z_t = t x + (1 - t) eps at every t of ``t_grid``;
2. trains one toy model per target of ``preds`` (:func:`manifold_lab.toy.run_toy_model`, v-loss by default)
   into ``out_dir/model_<pred>/`` and estimates the dimension of its ``n_samples`` generated points, in R^D
   (``samples``) and in the d-dim subspace (``samples_proj``: P^T s, the off-subspace residual removed);
3. the Jacobian spectrum of each model's clean estimate x_hat(z, t) with respect to z at ``jac_points``
   points z_t = t x + (1 - t) eps (fresh x on the manifold, the same x and eps at every t of ``jac_t``), and
   the count of singular values above ``jac_rel`` times the largest (:func:`count_large`).

Files: ``dims.csv`` (quantity, pred, t, estimator, value, d, k, D, n), ``jacobian.csv`` (pred, t, i, mean /
median / 10 % / 90 % quantile over the points of the i-th singular value divided by the largest, for the
first ``JAC_KEEP``), ``jac_counts.csv`` (pred, t, point, count), ``config.json`` (``derived``: ``k``),
``metrics.json`` (flat: ``id_<est>_<x|eps|v>``, ``id_<est>_z_t<t>``, ``id_<est>_samples_<pred>``,
``id_<est>_samples_proj_<pred>``, ``jac_count_<pred>_t<t>`` (the median over the points),
``jac_count_mean_<pred>_t<t>``, ``nn_dist_<pred>``), written last.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from manifold_lab import io, seeds
from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.config import add_config_flags, config_from_values, overrides_from_args
from manifold_lab.data.manifold import ColumnOrthogonalEmbedding, check_dist, sample_toy
from manifold_lab.device import PRECISIONS, check_device
from manifold_lab.metrics import intrinsic_dim as idim
from manifold_lab.runs.writer import finish_run
from manifold_lab.toy import ToyConfig, run_toy_model

JAC_KEEP = 32   # singular values per point kept in jacobian.csv


@dataclass
class IntrinsicConfig:
    dist: str = "sphere"        # sphere, torus or gaussian (any d), or a 2-D toy
    d: int = 5                  # dimension of the data subspace (the manifold's own dimension k can be lower)
    D: int = 512                # ambient dimension (at least d)
    n: int = 5000               # points per cloud for the estimators (x, eps, v, z_t)
    estimators: list = field(default_factory=lambda: ["twonn", "mle", "pca"])  # twonn, mle, pca
    mle_k: int = 20             # neighbours of the MLE
    pca_k: int = 50             # neighbours of local PCA (it counts at most this many directions)
    t_grid: list = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0])  # t of z_t
    preds: list = field(default_factory=lambda: ["x", "eps", "v"])  # targets trained (empty: estimators only)
    loss: str = "v"             # loss space of every model
    hidden_size: int = 256      # MLP hidden width
    depth: int = 5              # MLP Linear layers
    steps: int = 2000           # training steps per model
    batch_size: int = 512       # training batch
    lr: float = 4e-3            # AdamW peak learning rate
    n_samples: int = 5000       # generated points per model (their dimension is estimated)
    sample_steps: int = 50      # ODE steps of sampling
    jac_points: int = 16        # points z_t at which the Jacobian is taken
    jac_t: list = field(default_factory=lambda: [0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])  # t of the Jacobians
    jac_rel: float = 0.5        # a singular value counts when above jac_rel x the largest
    seed: int = 0               # seeds the clouds, the models and the Jacobian points
    device: str = "auto"        # auto (CUDA when present, else the CPU), cpu, cuda, cuda:N
    precision: str = "auto"     # auto (bf16 autocast on CUDA, none on the CPU), bf16 or fp32

    def __post_init__(self):
        check_dist(self.dist, self.d)
        ColumnOrthogonalEmbedding.check_dims(self.D, self.d)
        for name in self.estimators:
            check_choice("intrinsic-dimension estimator", name, idim.ESTIMATORS)
        for pred in self.preds:
            check_choice("prediction target", pred, ("x", "eps", "v"))
        for name in ("n", "mle_k", "pca_k", "n_samples", "jac_points", "steps"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("t_grid", "jac_t"):
            if not all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in getattr(self, name)):
                raise ConfigError(f"every t of {name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0 < self.jac_rel < 1:
            raise ConfigError(f"jac_rel must be in (0, 1), got {self.jac_rel!r}")
        check_choice("precision", self.precision, PRECISIONS)
        check_device(self.device)

    @property
    def k(self) -> int:
        return idim.manifold_dimension(self.dist, self.d)

    def toy_config(self, pred: str) -> ToyConfig:
        keep = ("dist", "d", "D", "loss", "hidden_size", "depth", "steps", "batch_size", "lr", "n_samples",
                "sample_steps", "seed", "device", "precision")
        return ToyConfig(pred=pred, **{name: getattr(self, name) for name in keep})


def _estimates(X, cfg: IntrinsicConfig) -> dict[str, float]:
    """Every estimator of cfg on the cloud X (NaN for a cloud with non-finite points)."""
    if not torch.isfinite(torch.as_tensor(X)).all():
        return {name: math.nan for name in cfg.estimators}
    kw = {"twonn": {}, "mle": {"k": cfg.mle_k}, "pca": {"k": cfg.pca_k}}
    return {name: idim.estimate(X, name, **kw[name]) for name in cfg.estimators}


def cloud_dimensions(cfg: IntrinsicConfig) -> pd.DataFrame:
    """Rows (quantity, pred, t, estimator, value) for x, eps, v and z_t over cfg.t_grid (one draw of x and eps)."""
    rows = []
    clouds = [(of, math.nan, idim.noised_cloud(cfg.dist, cfg.d, cfg.D, cfg.n, of, 1.0, cfg.seed))
              for of in ("x", "eps", "v")]
    clouds += [("z", float(t), idim.noised_cloud(cfg.dist, cfg.d, cfg.D, cfg.n, "z", float(t), cfg.seed))
               for t in cfg.t_grid]
    for of, t, X in clouds:
        rows += [{"quantity": of, "pred": "", "t": t, "estimator": e, "value": v}
                 for e, v in _estimates(X, cfg).items()]
    return pd.DataFrame(rows)


def jacobian_points(cfg: IntrinsicConfig, emb: ColumnOrthogonalEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh x on the manifold (jac_points, D) and eps of the same shape, seeded apart from every other draw."""
    g = seeds.generator(cfg.seed, "jacobian")
    x = emb.embed(sample_toy(cfg.dist, cfg.jac_points, cfg.d, g))
    return x, torch.randn(x.shape, generator=g)


def model_jacobians(model, x: torch.Tensor, eps: torch.Tensor, cfg: IntrinsicConfig) -> tuple[list, list]:
    """Spectrum rows (pred, t, i, statistics of sv_i / sv_1) and count rows (pred, t, point, count) of one model."""
    spec_rows, count_rows = [], []
    device = next(model.net.parameters()).device
    for t in cfg.jac_t:
        z = (float(t) * x + (1 - float(t)) * eps).to(device)
        sv = idim.jacobian_spectrum(model.denoiser, model.net, z, float(t)).cpu()
        counts = idim.count_large(sv, cfg.jac_rel)
        rel = (sv / sv[:, :1].clamp_min(1e-300)).numpy()
        pred = model.cfg.pred
        count_rows += [{"pred": pred, "t": float(t), "point": p, "count": int(c)} for p, c in enumerate(counts)]
        for i in range(min(JAC_KEEP, sv.shape[1])):
            col = rel[:, i]
            spec_rows.append({"pred": pred, "t": float(t), "i": i + 1, "mean": col.mean(), "median": np.median(col),
                              "q10": np.quantile(col, 0.1), "q90": np.quantile(col, 0.9),
                              "sv1_median": float(sv[:, 0].median())})
    return spec_rows, count_rows


def sample_dimensions(model, cfg: IntrinsicConfig) -> pd.DataFrame:
    """Rows for a model's generated samples: quantity ``samples`` (the points in R^D) and ``samples_proj``
    (their coordinates P^T s in the d-dim subspace: the off-subspace residual removed, which the estimators
    otherwise see at the scale of the nearest neighbours)."""
    proj = model.embedding.project(model.samples.double())
    rows = [{"quantity": q, "pred": model.cfg.pred, "t": 1.0, "estimator": e, "value": v}
            for q, X in (("samples", model.samples), ("samples_proj", proj)) for e, v in _estimates(X, cfg).items()]
    return pd.DataFrame(rows)


def _metrics(cfg: IntrinsicConfig, dims: pd.DataFrame, counts: pd.DataFrame, quality: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in dims.itertuples():
        name = {"z": f"z_t{r.t:.2f}", "samples": f"samples_{r.pred}",
                "samples_proj": f"samples_proj_{r.pred}"}.get(r.quantity, r.quantity)
        out[f"id_{r.estimator}_{name}"] = r.value
    for (pred, t), g in counts.groupby(["pred", "t"]):
        out[f"jac_count_{pred}_t{t:.2f}"] = float(g["count"].median())
        out[f"jac_count_mean_{pred}_t{t:.2f}"] = float(g["count"].mean())
    return out | quality


def run_intrinsic_point(cfg: IntrinsicConfig, out_dir: str | Path, *, progress: bool = False) -> dict[str, float]:
    """Clouds, models, samples and Jacobians of one (dist, d, D); writes the files of the module docstring."""
    out_dir = Path(out_dir)
    dims = cloud_dimensions(cfg)
    spec_rows, count_rows, quality = [], [], {}
    for pred in cfg.preds:
        metrics, model = run_toy_model(cfg.toy_config(pred), out_dir / f"model_{pred}", progress=progress)
        quality |= {f"nn_dist_{pred}": metrics["nn_dist"], f"off_manifold_{pred}": metrics["off_manifold"]}
        dims = pd.concat([dims, sample_dimensions(model, cfg)], ignore_index=True)
        x, eps = jacobian_points(cfg, model.embedding)
        s, c = model_jacobians(model, x, eps, cfg)
        spec_rows, count_rows = spec_rows + s, count_rows + c
    dims = dims.assign(d=cfg.d, k=cfg.k, D=cfg.D, n=cfg.n, dist=cfg.dist)
    counts = pd.DataFrame(count_rows, columns=["pred", "t", "point", "count"]).assign(d=cfg.d, k=cfg.k)
    tables = {"dims.csv": dims, "jacobian.csv": pd.DataFrame(spec_rows).assign(d=cfg.d, k=cfg.k),
              "jac_counts.csv": counts}
    return finish_run(out_dir, cfg, _metrics(cfg, dims, counts, quality), kind="intrinsic", derived={"k": cfg.k},
                      tables=tables)


# ---- the `id` command -----------------------------------------------------------------------------------
@dataclass
class IdConfig:
    dist: str = "sphere"        # sphere, torus, gaussian (any d) or a 2-D toy
    d: int = 5                  # dimension of the data subspace
    D: int = 512                # ambient dimension
    n: int = 5000               # points (with --samples: at most this many of the run's samples)
    of: str = "x"               # the cloud: x, eps, v (x - eps) or z (t x + (1 - t) eps)
    t: float = 0.5              # t of z (t 1 is clean; only for --of z)
    estimator: str = "twonn"    # twonn, mle or pca
    mle_k: int = 20             # neighbours of the MLE
    pca_k: int = 50             # neighbours of local PCA
    seed: int = 0               # seeds the draws of x and eps
    proj_seed: int = 0          # seeds the projection P

    def __post_init__(self):
        check_dist(self.dist, self.d)
        ColumnOrthogonalEmbedding.check_dims(self.D, self.d)
        check_choice("cloud", self.of, idim.CLOUDS)
        check_choice("intrinsic-dimension estimator", self.estimator, idim.ESTIMATORS)
        for name in ("n", "mle_k", "pca_k"):
            check_positive(name, getattr(self, name), integer=True)
        if not 0 <= self.t <= 1:
            raise ConfigError(f"t must be in [0, 1], got {self.t!r}")


def measure(cfg: IdConfig, samples: str | Path | None = None) -> dict:
    """The record the ``id`` command prints and saves: dist, d, k, D, n, of, t, estimator, estimate.

    ``samples``: a toy run folder; its samples.npz (the first cfg.n samples) is measured and its config.json
    gives dist, d and D."""
    if samples is None:
        X = idim.noised_cloud(cfg.dist, cfg.d, cfg.D, cfg.n, cfg.of, cfg.t, cfg.seed, cfg.proj_seed)
        rec = {"dist": cfg.dist, "d": cfg.d, "D": cfg.D, "of": cfg.of, "t": cfg.t if cfg.of == "z" else None}
    else:
        folder = Path(samples)
        if not (folder / "samples.npz").is_file():
            raise FileNotFoundError(f"no samples.npz in {folder} (give a toy run folder)")
        run = io.read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        with np.load(folder / "samples.npz") as f:
            X = f["samples"][: cfg.n]
        rec = {"dist": run.get("dist"), "d": run.get("d"), "D": int(X.shape[1]), "of": "samples", "t": None,
               "run": str(folder), "pred": run.get("pred")}
    kw = {"mle": {"k": cfg.mle_k}, "pca": {"k": cfg.pca_k}}.get(cfg.estimator, {})
    k = idim.manifold_dimension(rec["dist"], rec["d"]) if rec["dist"] is not None else None
    return rec | {"k": k, "n": int(len(X)), "estimator": cfg.estimator, "seed": cfg.seed,
                  "estimate": idim.estimate(X, cfg.estimator, **kw)}


def register(sub) -> None:
    p = sub.add_parser("id", help="estimate the intrinsic dimension of a toy cloud or of a run's samples",
                       allow_abbrev=False,
                       description="Estimate the intrinsic dimension k (TwoNN, MLE or local PCA) of n draws of a toy "
                                   "quantity (x, eps, v or z_t) in D dims, or of a toy run's generated samples "
                                   "(--samples RUN_DIR). Prints the estimate beside the toy's d and k; --out FILE "
                                   "saves it as JSON.")
    add_config_flags(p, IdConfig, title="cloud and estimator (IdConfig fields)")
    p.add_argument("--samples", default=None, metavar="RUN_DIR",
                   help="measure a toy run's samples.npz instead (dist, d, D from its config.json)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the record as JSON (--accuracy: the table, .csv or .parquet)")
    p.add_argument("--accuracy", type=int, nargs="+", default=None, metavar="K",
                   help="check the estimators on spheres S^K in --D dims (x, eps, v; n = --n): the accuracy table")
    from manifold_lab.image_id import add_image_flags

    add_image_flags(p)
    p.set_defaults(func=_main)


def _main(args) -> int:
    if args.images is not None:
        from manifold_lab.image_id import main_images

        return main_images(args, overrides_from_args(args, IdConfig))
    cfg = config_from_values(IdConfig, overrides_from_args(args, IdConfig), "flags")
    if args.out is not None:
        io.check_writable_file(args.out, "--out")
    if args.accuracy is not None:
        return _accuracy(args.accuracy, cfg, args.out)
    rec = measure(cfg, args.samples)
    what = rec["of"] if rec["of"] != "z" else f"z at t={rec['t']:g}"
    where = f"{rec['dist']}, d={rec['d']} (k={rec['k']}), D={rec['D']}, n={rec['n']}"
    print(f"{rec['estimator']} dimension of {what} ({where}): {rec['estimate']:.3f}")
    if args.out:
        io.write_json(args.out, rec)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _accuracy(ks: list[int], cfg: IdConfig, out: str | None) -> int:
    """``id --accuracy K ...``: the estimators on spheres (manifold_lab.id_accuracy)."""
    from manifold_lab.id_accuracy import accuracy_table, describe

    for k in ks:
        check_positive("--accuracy K", k, integer=True)
        if k + 1 > cfg.D:
            raise ConfigError(f"--accuracy K={k} needs D >= K + 1 = {k + 1}, got D={cfg.D}")
    df = accuracy_table(tuple(ks), cfg.D, cfg.n, cfg.seed)
    print(describe(df))
    if out:
        io.save_table(out, df)
        print(f"wrote {out}", file=sys.stderr)
    return 0
