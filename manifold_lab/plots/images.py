"""Image-study figures (Table 2, Table 3, Fig. 4 analogues), drawn from a study's summary table.

Every metric figure shows the two Fréchet distances of :mod:`manifold_lab.metrics.images` (log scale), one
line per prediction target: the mean over seeds, a band from the lowest to the highest seed, and the
real-vs-real noise floor as a dashed grey line. ``image_curves`` and ``image_samples`` read the run folders.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from manifold_lab import io
from manifold_lab.plots import finish_grid, register
from manifold_lab.plots.style import PRED_COLORS, PRED_ORDER, theme

METRICS = ("fd_feat", "fd_pix")
METRIC_LABELS = {"fd_feat": "Fréchet distance, rotation-net features", "fd_pix": "Fréchet distance, pixel PCA-64"}
NOT_FACETS = {"pred", "seed"}   # parameters that never split panels


def tile_images(images: np.ndarray, ncol: int) -> np.ndarray:
    """uint8 images (n, C, h, w) -> one uint8 (rows*h, ncol*w, C) mosaic, row-major, white where empty."""
    n, c, h, w = images.shape
    rows = -(-n // ncol)
    canvas = np.full((rows * h, ncol * w, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, ncol)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = img.transpose(1, 2, 0)
    return canvas


def save_image_grid(path, images: np.ndarray, ncol: int = 8, min_px: int = 32) -> Path:
    """Write uint8 images (n, 3, h, w) as one PNG grid, nearest-upscaled so each image is >= min_px wide."""
    from PIL import Image

    canvas = tile_images(images, ncol)
    scale = max(1, -(-min_px // images.shape[-1]))
    pil = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST)
    return io.atomic_write(path, lambda tmp: pil.save(tmp, format="png"))


DERIVED = ("token_dim", "img_size", "params")   # settings computed from the parameters (summary columns)


def _params(summary: pd.DataFrame) -> list[str]:
    """The run parameters: every summary column but study, run_id, the derived settings, metric and value."""
    return [c for c in summary.columns if c not in ("study", "run_id", "metric", "value", *DERIVED)]


def _wide(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run_id, the parameters, the derived settings, and one column per metric."""
    derived = [c for c in DERIVED if c in summary.columns]
    return summary.pivot_table(index=["run_id", *_params(summary), *derived], columns="metric", values="value",
                               aggfunc="first").reset_index()


def _facets(runs: pd.DataFrame, params: list[str], exclude=()) -> list[str]:
    """The parameters that vary across runs and split panels (never pred or seed, nor ``exclude``)."""
    return [c for c in params if c not in {*NOT_FACETS, *exclude} and runs[c].nunique() > 1]


def _label(row, keys) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys) or "all runs"


@theme("whitegrid")
def _metric_vs(summary: pd.DataFrame, x: str, *, logx: bool = True, title: str = "", vline: str | None = None,
               xlabel: str | None = None):
    """Rows: one per extra varying parameter value (e.g. loss space); columns: the two metrics."""
    runs = _wide(summary)
    # a parameter tied to x (one value per x, e.g. a per-patch step budget) does not split the panels
    facets = [c for c in _facets(runs, _params(summary), exclude=(x,)) if runs.groupby(x)[c].nunique().max() > 1]
    groups = list(runs.groupby(facets, sort=True)) if facets else [((), runs)]
    fig, axes = plt.subplots(len(groups), len(METRICS), figsize=(4.4 * len(METRICS), 3.2 * len(groups)),
                             squeeze=False)
    for i, (key, sub) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        for ax, m in zip(axes[i], METRICS):
            for pred in [p for p in PRED_ORDER if p in set(sub["pred"])]:
                s = sub[sub["pred"] == pred].groupby(x)[m].agg(["mean", "min", "max"]).reset_index()
                ax.plot(s[x], s["mean"], "o-", color=PRED_COLORS[pred], label=f"{pred}-pred")
                ax.fill_between(s[x], s["min"], s["max"], color=PRED_COLORS[pred], alpha=0.2, lw=0)
            floor = sub.groupby(x)[f"{m}_floor"].mean()
            ax.plot(floor.index, floor.values, "--", color="0.5", label="real vs real")
            if vline is not None:
                for v in sorted(set(sub[vline])):
                    ax.axvline(v, color="0.3", ls=":", lw=1)
            if logx:
                ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(xlabel or x)
            ax.set_ylabel(m)
            ax.set_title(" | ".join(filter(None, [METRIC_LABELS[m], _label(dict(zip(facets, key)), facets)])),
                         fontsize=9)
        axes[i, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig


def _with_token_dim(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with its token_dim column (a derived setting, from the runs' config.json)."""
    if "token_dim" not in summary.columns:
        raise ValueError("the summary has no token_dim column (a summary written before derived settings became "
                         "columns: see manifold_lab.studies.results.migrate_summary)")
    return summary.copy()


@register("image_pred_loss")
def fig_image_pred_loss(summary: pd.DataFrame, study_dir: Path):
    """Table 2 analogue: metric against the token dimension (patch size), one line per target, per loss."""
    df = _with_token_dim(summary).drop(columns=["patch_size"], errors="ignore")
    return _metric_vs(df, "token_dim", vline="hidden_size", xlabel="token dimension 3p² (dotted: width)",
                      title="Prediction target x loss space, 16 tokens per image (Table 2 analogue)")


@register("image_vs_width")
def fig_image_vs_width(summary: pd.DataFrame, study_dir: Path):
    """Width sweep at a fixed patch; the dotted line marks the token dimension."""
    df = _with_token_dim(summary)
    return _metric_vs(df, "hidden_size", vline="token_dim", xlabel="JiT width (dotted: token dimension)",
                      title="Metric against width at a fixed patch size")


@register("image_vs_patch")
def fig_image_vs_patch(summary: pd.DataFrame, study_dir: Path):
    """Patch sweep at a fixed width and sequence length: metric against the token dimension."""
    df = _with_token_dim(summary).drop(columns=["patch_size"], errors="ignore")
    return _metric_vs(df, "token_dim", vline="hidden_size", xlabel="token dimension 3p² (16 tokens; dotted: width)",
                      title="Metric against patch size at a fixed width")


@register("image_vs_bottleneck")
def fig_image_vs_bottleneck(summary: pd.DataFrame, study_dir: Path):
    """Fig. 4 analogue: metric against the bottleneck dim d' (0, no bottleneck, is drawn at twice the token dim)."""
    df = _with_token_dim(summary)
    df["bottleneck_dim"] = np.where(df["bottleneck_dim"] == 0, 2 * df["token_dim"], df["bottleneck_dim"])
    return _metric_vs(df, "bottleneck_dim", vline="hidden_size",
                      xlabel="bottleneck d' (rightmost point: no bottleneck; dotted: width)",
                      title="Bottleneck patch embedding (Fig. 4 analogue)")


@register("image_vs_mu")
def fig_image_vs_mu(summary: pd.DataFrame, study_dir: Path):
    """Table 3 analogue: metric against the logit-normal mean p_mean of training t (more negative = noisier)."""
    return _metric_vs(summary, "p_mean", logx=False, xlabel="noise shift p_mean = mu (logit-normal mean of t)",
                      title="Noise shift (Table 3 analogue)")


@register("image_curves")
@theme("whitegrid")
def fig_image_curves(summary: pd.DataFrame, study_dir: Path, smooth: int = 25):
    """Training loss curves (running mean over ``smooth`` steps), one panel per setting, one colour per target."""
    from manifold_lab.run_files import run_file

    runs = summary.drop_duplicates("run_id")
    facets = _facets(runs, _params(summary))
    groups = list(runs.groupby(facets, sort=True)) if facets else [((), runs)]
    ncol = min(4, len(groups))
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.8 * nrow), squeeze=False)
    for ax, (key, sub) in zip(axes.flat, groups):
        key = key if isinstance(key, tuple) else (key,)
        labelled = set()
        for _, r in sub.iterrows():
            c = pd.read_csv(run_file(study_dir, r["run_id"], "curve"))
            ax.plot(c["step"], c["loss"].rolling(smooth, min_periods=1).mean(), color=PRED_COLORS[r["pred"]],
                    lw=1, label=None if r["pred"] in labelled else f"{r['pred']}-pred")
            labelled.add(r["pred"])
        ax.set_yscale("log")
        ax.set_title(_label(dict(zip(facets, key)), facets), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (smoothed)")
        if labelled:
            ax.legend(fontsize=7)
    return finish_grid(fig, axes, len(groups))


@register("image_samples")
def fig_image_samples(summary: pd.DataFrame, study_dir: Path, n: int = 16):
    """The first ``n`` samples of each run (lowest seed): rows = settings, columns = prediction target."""
    from manifold_lab.run_files import run_file

    runs = summary.drop_duplicates("run_id")
    if "seed" in runs:
        runs = runs[runs["seed"] == runs["seed"].min()]
    facets = _facets(runs, _params(summary))
    groups = list(runs.groupby(facets, sort=True)) if facets else [((), runs)]
    preds = [p for p in PRED_ORDER if p in set(runs["pred"])]
    fig, axes = plt.subplots(len(groups), len(preds), figsize=(2.2 * len(preds), 2.3 * len(groups)), squeeze=False)
    for i, (key, sub) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        for j, pred in enumerate(preds):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            row = sub[sub["pred"] == pred]
            path = run_file(study_dir, row["run_id"].iloc[0], "samples") if len(row) else None
            if path is None:
                ax.axis("off")
                continue
            with np.load(path) as f:
                imgs = f["samples"][:n]
            ax.imshow(tile_images(imgs, int(np.ceil(np.sqrt(len(imgs))))), interpolation="nearest")
            if i == 0:
                ax.set_title(f"{pred}-pred", fontsize=10)
            if j == 0:
                ax.set_ylabel(_label(dict(zip(facets, key)), facets).replace(", ", "\n"), fontsize=8)
    fig.tight_layout()
    return fig


@register("image_pred_loss_table")
def fig_image_pred_loss_table(summary: pd.DataFrame, study_dir: Path, metric: str = "fd_feat"):
    """Table 2 as heatmaps, one per token dimension: rows loss space, columns target; mean over seeds
    with the (min-max) seed range, log colour scale."""
    import seaborn as sns

    runs = _wide(_with_token_dim(summary))
    dims = sorted(runs["token_dim"].unique(), reverse=True)
    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.3), squeeze=False)
    for ax, dim in zip(axes[0], dims):
        g = runs[runs["token_dim"] == dim].groupby(["loss", "pred"])[metric]
        mean = g.mean().unstack().reindex(index=PRED_ORDER, columns=PRED_ORDER)
        lo, hi = g.min().unstack().reindex_like(mean), g.max().unstack().reindex_like(mean)
        n = g.count().unstack().reindex_like(mean)
        text = mean.copy().astype(object)
        for r in mean.index:
            for c in mean.columns:
                v = mean.loc[r, c]
                text.loc[r, c] = "" if pd.isna(v) else (f"{v:.2f}" if n.loc[r, c] < 2 else
                                                        f"{v:.2f}\n({lo.loc[r, c]:.2f}-{hi.loc[r, c]:.2f})")
        sns.heatmap(np.log10(mean.astype(float)), annot=text, fmt="", cbar=False, cmap="magma_r", ax=ax,
                    vmin=np.log10(runs[f"{metric}_floor"].min()), vmax=np.log10(runs[metric].max()))
        budget = sorted(runs.loc[runs["token_dim"] == dim, "steps"].unique()) if "steps" in runs else []
        ax.set_title(f"{int(dim)}-d tokens" + "".join(f", {int(b)} steps" for b in budget) + f": {metric}",
                     fontsize=10)
        ax.set_xlabel("prediction target")
        ax.set_ylabel("loss space")
    fig.tight_layout()
    return fig
