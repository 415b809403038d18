"""The bridge figure (:mod:`manifold_lab.bridge`): each image-study cell's observed ratio to x-prediction
against the toy's prediction, D_eq / D*(width) (right of 1: predicted fail; above 3: observed fail)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from manifold_lab.plots.style import PRED_COLORS

STUDY_MARKERS = {"image_pred_loss": "o", "image_patch": "s", "image_width": "^"}


def plot_bridge(table: pd.DataFrame, agree: pd.DataFrame):
    """Observed ratio (log) against D_eq / D* (log); disagreements circled in red; the agreement rate in the title."""
    fig, ax = plt.subplots(figsize=(7.2, 5.0))
    x = (table["D_eq"] / table["D_star"]).clip(upper=1e3)
    for (study, pred), g in table.groupby(["study", "pred"]):
        ax.scatter(x[g.index], g["ratio"], marker=STUDY_MARKERS.get(study, "o"), color=PRED_COLORS.get(pred),
                   alpha=0.8, label=f"{pred}, {study}")
    bad = table[~table["agree"]]
    ax.scatter(x[bad.index], bad["ratio"], s=160, facecolors="none", edgecolors="red", lw=1.5,
               label="disagreement")
    ax.axvline(1.0, color="0.4", ls="--", lw=1)
    ax.axhline(3.0, color="0.4", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="D_eq / D*(width)   (D_eq = 2 token_dim / patch ID; > 1: predicted fail)",
           ylabel="fd_feat / x-prediction's   (> 3: observed fail)")
    top = agree.iloc[0]
    ax.set_title(f"Toy phase diagram -> image studies: {top['agree']} of {top['cells']} cells agree "
                 f"({top['rate']:.0%})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    return fig
