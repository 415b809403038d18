"""ImageNet study figures: our FID beside the paper's (Tables 2, 3, 4 and Fig. 4; values in manifold_lab.paper).

Each reads the study's summary (metric ``fid``, one row per point) and draws the paper's number for the same
setting next to ours. A study run with the ``tiny`` feature extractor (the tests) is labelled: its numbers are
no FIDs. A point not yet run is simply missing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from manifold_lab import paper  # noqa: E402
from manifold_lab.plots import register  # noqa: E402
from manifold_lab.plots.toy import PRED_COLORS, PRED_ORDER  # noqa: E402


def _runs(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per point: its parameters and its fid (model_args parsed back from JSON)."""
    runs = summary[summary["metric"] == "fid"].copy()
    if "model_args" in runs:
        runs["model_args"] = runs["model_args"].map(lambda s: json.loads(s) if isinstance(s, str) else (s or {}))
    return runs.rename(columns={"value": "fid"})


def _ours_label(summary: pd.DataFrame) -> str:
    kinds = set(summary.get("feature_extractor", pd.Series(["inception"])).dropna())
    return "ours" if kinds <= {"inception"} else "ours (tiny stand-in extractor: not an FID)"


def _resolution(config: str) -> int:
    m = re.search(r"_in(\d+)", str(config))
    return int(m.group(1)) if m else 0


@register("imagenet_pred_loss")
def fig_imagenet_pred_loss(summary: pd.DataFrame, study_dir: Path):
    """Table 2: one heatmap per resolution, rows loss space, columns target; 'ours / paper' in each cell."""
    sns.set_theme(style="white", font_scale=0.9)
    runs = _runs(summary)
    runs["img"] = runs["config"].map(_resolution)
    sizes = sorted(runs["img"].unique(), reverse=True) or [256]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 3.6), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        sub = runs[runs["img"] == size].groupby(["loss", "pred"])["fid"].mean().unstack()
        ours = sub.reindex(index=PRED_ORDER, columns=PRED_ORDER)
        text = ours.copy().astype(object)
        for r in PRED_ORDER:
            for c in PRED_ORDER:
                p = paper.TABLE2.get((size, r, c))
                o = ours.loc[r, c]
                text.loc[r, c] = f"{'-' if pd.isna(o) else f'{o:.2f}'}\n({p})" if p is not None else ""
        sns.heatmap(np.log10(ours.astype(float)), annot=text, fmt="", cbar=False, cmap="magma_r", ax=ax)
        ax.set(title=f"{size} px: {_ours_label(summary)} (paper)", xlabel="prediction target", ylabel="loss space")
    fig.suptitle("Prediction target x loss space on ImageNet (Table 2), FID", y=1.02)
    fig.tight_layout()
    return fig


def _beside_paper(ax, theirs: dict, ours: pd.Series, color, label: str, ours_label: str) -> None:
    """The paper's values ({x: FID}, dashed) and ours (a Series indexed by x, solid with dots) on one axis."""
    xs = sorted(theirs)
    ax.plot(xs, [theirs[x] for x in xs], "--", color=color, alpha=0.6, label=f"{label}paper")
    if len(ours):
        ax.plot(ours.index, ours.values, "o-", color=color, label=f"{label}{ours_label}")


@register("imagenet_noise_shift")
def fig_imagenet_noise_shift(summary: pd.DataFrame, study_dir: Path):
    """Table 3: FID against the noise shift p_mean, one colour per target; ours solid, the paper dashed."""
    sns.set_theme(style="whitegrid", font_scale=0.9)
    runs = _runs(summary)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for pred in PRED_ORDER:
        _beside_paper(ax, {m: v for (m, p), v in paper.TABLE3.items() if p == pred},
                      runs[runs["pred"] == pred].groupby("p_mean")["fid"].mean(), PRED_COLORS[pred],
                      f"{pred}-pred, ", _ours_label(summary))
    ax.set(yscale="log", xlabel="p_mean (logit-normal mean of t; more negative = noisier)", ylabel="FID",
           title="Noise shift on ImageNet (Table 3)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


@register("imagenet_bottleneck")
def fig_imagenet_bottleneck(summary: pd.DataFrame, study_dir: Path):
    """Fig. 4: FID against the bottleneck d' (no bottleneck drawn at 768, the patch dimension)."""
    sns.set_theme(style="whitegrid", font_scale=0.9)
    runs = _runs(summary)
    runs["d"] = runs["model_args"].map(lambda a: a.get("bottleneck_dim") or 768)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    _beside_paper(ax, {(d or 768): v for d, v in paper.FIG4.items() if v is not None},
                  runs.groupby("d")["fid"].mean(), PRED_COLORS["x"], "", _ours_label(summary))
    ax.set(xscale="log", xlabel="bottleneck d' (768: none, a plain linear embedding)", ylabel="FID",
           title="Bottleneck patch embedding on ImageNet (Fig. 4)")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _rung(row) -> tuple[str, str]:
    a = row["model_args"]
    model = {"jit_l16_in256": "JiT-L/16"}.get(row["config"], "JiT-B/16")
    rung = "in_context" if a.get("in_context_len") else "rope_qknorm" if a.get("rope") else "baseline"
    return model, rung


@register("imagenet_ablation")
def fig_imagenet_ablation(summary: pd.DataFrame, study_dir: Path):
    """Table 4: one pair of bars per rung of the ladder, ours beside the paper's (with the CFG interval)."""
    sns.set_theme(style="whitegrid", font_scale=0.9)
    runs = _runs(summary)
    ours = {_rung(r): r["fid"] for _, r in runs.iterrows()}
    keys = list(paper.TABLE4)
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.bar(x - 0.2, [paper.TABLE4[k][1] for k in keys], 0.4, color="0.6", label="paper (with CFG interval)")
    ax.bar(x + 0.2, [ours.get(k, np.nan) for k in keys], 0.4, color=PRED_COLORS["x"], label=_ours_label(summary))
    ax.set_xticks(x, [f"{m}\n{r.replace('_', ' + ').replace('qknorm', 'qk-norm')}" for m, r in keys], fontsize=8)
    ax.set(ylabel="FID", title="The Table 4 ladder on ImageNet")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@register("imagenet_preconditioner")
def fig_imagenet_preconditioner(summary: pd.DataFrame, study_dir: Path):
    """Table 10: our FID per (loss, parameterisation) beside the paper's, as two heatmaps."""
    from manifold_lab.plots.precond import precond_figure

    runs = _runs(summary).rename(columns={"fid": "value"})
    return precond_figure(runs, [(f"{_ours_label(summary)}: FID", runs)], "Pre-conditioners on ImageNet (Table 10)")
