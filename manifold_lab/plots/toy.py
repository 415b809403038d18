"""Toy-study figures: the paper's Fig. 2 grid and metrics against D."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from manifold_lab import io
from manifold_lab.plots import register
from manifold_lab.plots.style import PRED_COLORS, PRED_ORDER, theme


def _scatter(ax, pts, ref, lim, color="k"):
    ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.85", rasterized=True)
    ok = np.isfinite(pts).all(1)
    ax.scatter(pts[ok, 0], pts[ok, 1], s=1.5, c=color, rasterized=True)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")


def plot_toy_samples(x_d: np.ndarray, reference: np.ndarray, title: str = ""):
    """One run: generated points (n, 2+) in d-dim coordinates over the ground truth (m, 2+), first 2 axes."""
    fig, ax = plt.subplots(figsize=(4, 4))
    _scatter(ax, x_d, reference, lim=_lim(reference))
    ax.set_title(title, fontsize=9)
    return fig


def _lim(ref):
    return float(np.abs(ref[:, :2]).max()) * 1.25


def _run_points(summary: pd.DataFrame, study_dir: Path, run_id: str):
    from manifold_lab.run_files import run_file

    with np.load(run_file(study_dir, run_id, "samples")) as f:
        return f["samples"] @ f["P"], f["reference"]


@register("toy_grid")
def fig_toy_grid(summary: pd.DataFrame, study_dir: Path):
    """Paper Fig. 2: rows = prediction target, columns = ground truth then each D (first seed, v-loss if present)."""
    runs = summary.drop_duplicates("run_id")
    if "loss" in runs and (runs["loss"] == "v").any():
        runs = runs[runs["loss"] == "v"]
    runs = runs[runs["seed"] == runs["seed"].min()]
    Ds = sorted(runs["D"].unique())
    preds = [p for p in PRED_ORDER if p in set(runs["pred"])]
    fig, axes = plt.subplots(len(preds), len(Ds) + 1, figsize=(2.2 * (len(Ds) + 1), 2.2 * len(preds)),
                             squeeze=False)
    for i, pred in enumerate(preds):
        for j, D in enumerate(Ds):
            row = runs[(runs["pred"] == pred) & (runs["D"] == D)]
            ax = axes[i, j + 1]
            if row.empty:
                ax.axis("off")
                continue
            pts, ref = _run_points(summary, study_dir, row["run_id"].iloc[0])
            _scatter(ax, pts, ref, _lim(ref), PRED_COLORS[pred])
            if i == 0:
                ax.set_title(f"D = {D}")
        axes[i, 0].set_ylabel(f"{pred}-pred", fontsize=11)
        _scatter(axes[i, 0], ref[:0], ref, _lim(ref))
        axes[i, 0].scatter(ref[:2000, 0], ref[:2000, 1], s=1, c="k", rasterized=True)
        if i == 0:
            axes[0, 0].set_title("ground truth")
    fig.suptitle("Generated samples projected back with P (v-loss)", y=1.0)
    fig.tight_layout()
    return fig


@theme("whitegrid")
def _metric_vs(summary: pd.DataFrame, x: str, metrics=("nn_dist", "off_manifold", "energy_distance"),
               hue: str = "pred"):
    import seaborn as sns

    df = summary[summary["metric"].isin(metrics)].copy()
    df["value"] = df["value"].astype(float).clip(lower=1e-5, upper=1e6)  # D = d gives exact zeros
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sub = df[df["metric"] == m]
        sns.lineplot(sub, x=x, y="value", hue=hue, hue_order=[p for p in PRED_ORDER if p in set(sub[hue])],
                     palette=PRED_COLORS, marker="o", errorbar=("pi", 100), ax=ax)
        ax.set_xscale("log", base=2)
        ticks = sorted(sub[x].unique())
        ax.set_xticks(ticks, [str(int(v)) for v in ticks])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_title(m)
        ax.set_ylabel(m)
    fig.tight_layout()
    return fig


@register("metric_vs_D")
def fig_metric_vs_D(summary: pd.DataFrame, study_dir: Path):
    """Nearest-neighbour distance, off-manifold residual and energy distance against D, one line per target."""
    return _metric_vs(summary, "D")


@register("pred_loss_heatmap")
def fig_pred_loss_heatmap(summary: pd.DataFrame, study_dir: Path, metric: str = "nn_dist"):
    """One heatmap per D: rows loss space, columns prediction target, cells the mean metric (log colour)."""
    import seaborn as sns

    df = summary[summary["metric"] == metric].copy()
    df["value"] = df["value"].astype(float)
    Ds = sorted(df["D"].unique())
    fig, axes = plt.subplots(1, len(Ds), figsize=(3.4 * len(Ds), 3.0), squeeze=False)
    for ax, D in zip(axes[0], Ds):
        tab = df[df["D"] == D].pivot_table(index="loss", columns="pred", values="value", aggfunc="mean")
        tab = tab.reindex(index=PRED_ORDER, columns=PRED_ORDER)
        sns.heatmap(np.log10(tab.clip(lower=1e-4)), annot=tab.map(lambda v: f"{v:.3g}"), fmt="", cbar=False,
                    cmap="magma_r", vmin=-2, vmax=1, ax=ax)
        ax.set_title(f"D = {D}: {metric}")
        ax.set_xlabel("prediction target")
        ax.set_ylabel("loss space")
    fig.tight_layout()
    return fig


# ---- long skip and data scale (toy_skip, image_skip, toy_data_scale) -------------------------------------
def skip_ratios(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, pred, long_skip, seed): the metric (nn_dist for the toy, fd_feat for images) over plain
    x-prediction's (long_skip false) at the same cell and seed. Cell: every parameter but pred, seed,
    long_skip and the derived parameter count ``params`` (the skip's gates add to it); the cells sorted by their
    settings (width, then D). Columns: cell (text), pred, long_skip, seed, value, ratio."""
    metric = "nn_dist" if "nn_dist" in set(summary["metric"]) else "fd_feat"
    df = summary[summary["metric"] == metric].copy()
    skip = {"study", "run_id", "metric", "value", "pred", "seed", "long_skip", "params"}
    keys = [c for c in df.columns if c not in skip and df[c].nunique() > 1]
    df = df.sort_values(keys, kind="stable") if keys else df             # cells in the order of their settings
    df["cell"] = df[keys].apply(lambda r: " ".join(f"{k}={r[k]}" for k in keys), axis=1) if keys else "all"
    df["long_skip"] = df["long_skip"].astype(str).str.lower().isin(["true", "1", "1.0"])
    ref = df[(df["pred"] == "x") & ~df["long_skip"]].set_index(["cell", "seed"])["value"]
    df["ratio"] = df["value"].to_numpy() / ref.reindex(list(zip(df["cell"], df["seed"]))).to_numpy()
    return df[["cell", "pred", "long_skip", "seed", "value", "ratio"]]


@register("skip_ratio")
def fig_skip_ratio(summary: pd.DataFrame, study_dir: Path):
    """Each target's metric over plain x-prediction's per cell, without (open) and with (filled) the long skip;
    bars: the mean over seeds, dots: each seed; dashed: the failure threshold 3. Writes skip_ratio.csv (the
    ratios, tidy) beside the figure."""
    r = skip_ratios(summary)
    io.save_table(Path(study_dir) / "skip_ratio.csv", r)
    cells = list(dict.fromkeys(r["cell"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(cells) + 2), 4.0))
    combos = [(p, s) for p in PRED_ORDER for s in (False, True) if ((r["pred"] == p) & (r["long_skip"] == s)).any()]
    width = 0.8 / max(1, len(combos))
    for i, (p, s) in enumerate(combos):
        sub = r[(r["pred"] == p) & (r["long_skip"] == s)]
        pos = np.array([cells.index(c) for c in sub["cell"]]) + (i - (len(combos) - 1) / 2) * width
        mean = sub.groupby("cell")["ratio"].mean().reindex(cells)
        ax.bar(np.arange(len(cells)) + (i - (len(combos) - 1) / 2) * width, mean, width,
               color=PRED_COLORS[p] if s else "none", edgecolor=PRED_COLORS[p], label=f"{p}{' + skip' if s else ''}")
        ax.scatter(pos, sub["ratio"], s=8, color="k", zorder=3)
    ax.axhline(3.0, ls="--", color="0.4", lw=1, label="3x: the failure threshold")
    ax.set_xticks(range(len(cells)), [c.replace(" ", "\n") for c in cells], fontsize=7)
    metric = "nn_dist" if "nn_dist" in set(summary["metric"]) else "fd_feat"
    ax.set(yscale="log", ylabel=f"{metric} / plain x-prediction's\n(same cell and seed; dots: seeds)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return fig


@register("scale_vs_D")
@theme("whitegrid", 0.9)
def fig_scale_vs_D(summary: pd.DataFrame, study_dir: Path, metric: str = "nn_dist"):
    """nn_dist (in units of the data's RMS) against D, one panel per target, one line per data scale s."""
    import seaborn as sns

    df = summary[summary["metric"] == metric].copy()
    df["value"] = df["value"].astype(float).clip(lower=1e-5, upper=1e6)
    preds = [p for p in PRED_ORDER if p in set(df["pred"])]
    df["s"] = df["data_scale"].map(lambda v: f"{float(v):g}")
    order = sorted(df["s"].unique(), key=float)
    fig, axes = plt.subplots(1, len(preds), figsize=(4.2 * len(preds), 3.4), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], preds):
        sns.lineplot(df[df["pred"] == p], x="D", y="value", hue="s", hue_order=order, palette="plasma_r",
                     marker="o", errorbar=("pi", 100), ax=ax)
        ax.set(xscale="log", yscale="log", title=f"{p}-prediction", ylabel=f"{metric} (data RMS units)")
        ax.legend(title="data scale s", fontsize=7, title_fontsize=7)
    fig.suptitle("Data of RMS s against unit noise (bands: min-max over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def scale_ratios(summary: pd.DataFrame, metric: str = "nn_dist") -> pd.DataFrame:
    """Per (data_scale, D, pred, seed): the metric over x-prediction's at the same data scale, D and seed.
    Columns: data_scale, D, pred, seed, value, ratio."""
    df = summary[summary["metric"] == metric]
    wide = df.pivot_table(index=["data_scale", "D", "seed"], columns="pred", values="value", aggfunc="first")
    out = wide.stack().rename("value").reset_index()
    out["ratio"] = out["value"].to_numpy() / wide["x"].reindex(
        list(zip(out["data_scale"], out["D"], out["seed"]))).to_numpy()
    return out[["data_scale", "D", "pred", "seed", "value", "ratio"]]


def _short(v: float, digits: int) -> str:
    """A ratio in a heatmap cell: whole numbers from 100 on, else ``digits`` significant digits."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.{digits}g}"


@register("scale_ratio")
def fig_scale_ratio(summary: pd.DataFrame, study_dir: Path, metric: str = "nn_dist"):
    """One heatmap per target other than x: rows the data scale s, columns D; the mean (over seeds) of the
    metric over x-prediction's, with its seed range; outlined where every seed fails (> 3). Writes
    scale_ratio.csv."""
    r = scale_ratios(summary, metric)
    io.save_table(Path(study_dir) / "scale_ratio.csv", r)
    preds = [p for p in PRED_ORDER if p != "x" and p in set(r["pred"])]
    fig, axes = plt.subplots(1, len(preds), figsize=(5.4 * len(preds), 3.8), squeeze=False)
    fig.subplots_adjust(wspace=0.3)
    for ax, p in zip(axes[0], preds):
        g = r[r["pred"] == p].groupby(["data_scale", "D"])["ratio"]
        mean, lo, hi = (g.agg(a).unstack("D") for a in ("mean", "min", "max"))
        im = ax.imshow(np.log10(mean.to_numpy(float)), origin="lower", cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
        for (i, j), v in np.ndenumerate(mean.to_numpy(float)):
            ax.text(j, i, f"{_short(v, 3)}\n({_short(lo.iloc[i, j], 2)}-{_short(hi.iloc[i, j], 2)})", ha="center",
                    va="center", fontsize=7, color="w" if abs(np.log10(v)) > 1.2 else "k")
            if lo.iloc[i, j] > 3:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="k", lw=1.5))
        ax.set_xticks(range(mean.shape[1]), [str(int(D)) for D in mean.columns])
        ax.set_yticks(range(mean.shape[0]), [f"{float(s):g}" for s in mean.index])
        ax.set(xlabel="ambient dimension D", ylabel="data scale s")
        ax.set_title(f"{p}-prediction: {metric} / x-prediction's\n(outlined: every seed > 3x)",
                     color=PRED_COLORS[p], fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="log10 ratio")
    return fig
