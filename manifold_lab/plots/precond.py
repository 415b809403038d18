"""Pre-conditioner figures (the paper's Table 10): x-prediction beside the EDM-style and linear
pre-conditioners under the x-, eps- and v-loss, ours beside the paper's FIDs (manifold_lab.paper.TABLE10).

Each cell of ours reads "mean [min, max]" over seeds (one value where one seed ran); the paper's table is drawn
as its own panel, since its metric (FID-50K on ImageNet) is not ours (toy: nn_dist; image: fd_feat).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from manifold_lab import paper
from manifold_lab.plots import register
from manifold_lab.plots.style import theme

LOSS_ORDER = ["x", "eps", "v"]
PREDS = list(paper.TABLE10_PREDS)


def _cell(values: pd.Series) -> str:
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.3g}"
    return f"{values.mean():.3g}\n[{values.min():.3g}, {values.max():.3g}]"


def table_panel(ax, df: pd.DataFrame, title: str, value: str = "value") -> None:
    """One heatmap: rows loss space, columns x / edm / linear; annotated 'mean [min, max]' over seeds."""
    groups = df.groupby(["loss", "pred"])[value]
    mean = groups.mean().unstack().reindex(index=LOSS_ORDER, columns=PREDS).astype(float)
    text = mean.copy().astype(object)
    for r in LOSS_ORDER:
        for c in PREDS:
            text.loc[r, c] = _cell(df[(df["loss"] == r) & (df["pred"] == c)][value].astype(float))
    sns.heatmap(np.log10(mean.clip(lower=1e-6)), annot=text, fmt="", cbar=False, cmap="magma_r", ax=ax,
                annot_kws={"fontsize": 7})
    ax.set(title=title, xlabel="parameterisation", ylabel="loss space")


def paper_panel(ax) -> None:
    """The paper's Table 10 (JiT-B/16, 256 px, 200 epochs, FID-50K) as a heatmap."""
    tab = pd.DataFrame([[paper.TABLE10[(r, c)] for c in PREDS] for r in LOSS_ORDER], index=LOSS_ORDER, columns=PREDS)
    sns.heatmap(np.log10(tab), annot=tab.map(lambda v: f"{v:.2f}"), fmt="", cbar=False, cmap="magma_r", ax=ax)
    ax.set(title="paper, Table 10 (ImageNet FID)", xlabel="parameterisation", ylabel="loss space")


@theme("white", 0.85)
def precond_figure(df: pd.DataFrame, panels: list[tuple[str, pd.DataFrame]], suptitle: str):
    """``panels``: (title, rows with loss, pred, value) for ours, then the paper's panel on the right."""
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.6 * (len(panels) + 1), 3.4), squeeze=False)
    for ax, (title, sub) in zip(axes[0], panels):
        table_panel(ax, sub, title)
    paper_panel(axes[0, -1])
    fig.suptitle(suptitle, y=1.02)
    fig.tight_layout()
    return fig


@register("toy_preconditioner")
def fig_toy_preconditioner(summary: pd.DataFrame, study_dir: Path, metric: str = "nn_dist"):
    """Per D a (loss x parameterisation) table of the toy's nn_dist over seeds, beside the paper's Table 10."""
    df = summary[summary["metric"] == metric].copy()
    panels = [(f"D = {D}: {metric}", df[df["D"] == D]) for D in sorted(df["D"].unique())]
    return precond_figure(df, panels, "Pre-conditioners on the toy (lower is better) and the paper's Table 10")


@register("image_preconditioner")
def fig_image_preconditioner(summary: pd.DataFrame, study_dir: Path, metric: str = "fd_feat"):
    """The image study's fd_feat per (loss, parameterisation) over seeds, beside the paper's Table 10."""
    df = summary[summary["metric"] == metric].copy()
    panels = [(f"{p * p * 3}-d tokens: {metric}", df[df["patch_size"] == p]) for p in sorted(df["patch_size"].unique())]
    return precond_figure(df, panels, "Pre-conditioners on photo crops (lower is better) and the paper's Table 10")
