"""The phase diagram in the fast CPU mode against the fp32 one, cell by cell (issue 20, item 5).

``toy_phase_fast`` runs toy_phase's cells in bf16 with the compiled loss; the figure ``fast_vs_fp32`` reads
the sibling study ``toy_phase`` (fp32, its summary.csv; seed 0, toy_phase's own seed) and writes beside the
fast study's summary:

    fast_vs_fp32.csv      per cell (hidden_size, D, pred): the metric in fp32 and fast, their ratio, and
                          whether the target passes (ratio to x-prediction <= 3, the boundary's rule) in each
    boundary_vs_fp32.csv  per (target, width): the boundary D* and its status in fp32 and in fast mode

Left panel: each cell's fast metric against its fp32 one (log-log, the diagonal = no change); right panel:
the boundary D* per width, fp32 solid and fast dashed, one colour per target.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import NullFormatter, ScalarFormatter

from manifold_lab import io
from manifold_lab.plots import register
from manifold_lab.plots.phase import FACTOR, METRIC, boundary_table, cell_table
from manifold_lab.plots.style import PRED_COLORS, PRED_ORDER

KEYS = ["hidden_size", "D", "pred"]


def _seed0(summary: pd.DataFrame) -> pd.DataFrame:
    """The seed-0 rows (toy_phase's own seed), so both sides compare one run per cell."""
    return summary[summary["seed"] == 0] if "seed" in summary.columns else summary


def _cells_long(summary: pd.DataFrame, metric: str, name: str) -> pd.DataFrame:
    """Long table of the seed-0 cells run (hidden_size, D, pred, ``name``) with ``passes_<name>``: the ratio to
    x-prediction's metric in the same cell <= FACTOR (a cell without its x-prediction run is left out)."""
    cells = cell_table(_seed0(summary), metric)
    if "x" not in cells:
        return pd.DataFrame(columns=KEYS + [name, f"passes_{name}"])
    ratio = cells.div(cells["x"], axis=0)
    long = cells.reset_index().melt(id_vars=["hidden_size", "D"], var_name="pred", value_name=name)
    rat = ratio.reset_index().melt(id_vars=["hidden_size", "D"], var_name="pred", value_name="ratio")
    long = long.merge(rat, on=KEYS).dropna(subset=[name, "ratio"])
    return long.assign(**{f"passes_{name}": long["ratio"] <= FACTOR}).drop(columns="ratio")


def cell_comparison(fp32: pd.DataFrame, fast: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """One row per cell run in both: the metric in fp32 and fast mode, fast / fp32, and whether each passes
    (its ratio to x-prediction's metric in the same cell and mode <= FACTOR; x always passes)."""
    out = _cells_long(fp32, metric, "fp32").merge(_cells_long(fast, metric, "fast"), on=KEYS)
    out["fast_over_fp32"] = out["fast"] / out["fp32"]
    cols = KEYS + ["fp32", "fast", "fast_over_fp32", "passes_fp32", "passes_fast"]
    return out[cols].sort_values(KEYS).reset_index(drop=True)


def boundary_comparison(fp32: pd.DataFrame, fast: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per (target, width): D* and the status of the boundary in fp32 and in fast mode (seed 0 each)."""
    keep = ["target", "hidden_size", "D_pass", "D_fail", "D_star", "status"]
    a, b = (boundary_table(_seed0(df).drop(columns="seed", errors="ignore"), metric)[keep] for df in (fp32, fast))
    return a.merge(b, on=["target", "hidden_size"], suffixes=("_fp32", "_fast"), how="outer")


@register("fast_vs_fp32")
def fig_fast_vs_fp32(summary: pd.DataFrame, study_dir: Path, metric: str = METRIC, reference: str = "toy_phase"):
    """Fast mode against fp32 (the sibling study ``reference``): cells on the left, the boundary on the right.
    Writes fast_vs_fp32.csv and boundary_vs_fp32.csv."""
    ref_path = Path(study_dir).parent / reference / "summary.csv"
    if not ref_path.is_file():
        raise FileNotFoundError(f"the fp32 reference {ref_path} is missing: run studies/{reference}.yaml first")
    fp32 = pd.read_csv(ref_path)
    cells, bound = cell_comparison(fp32, summary, metric), boundary_comparison(fp32, summary, metric)
    io.save_table(Path(study_dir) / "fast_vs_fp32.csv", cells)
    io.save_table(Path(study_dir) / "boundary_vs_fp32.csv", bound)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    for pred in [p for p in PRED_ORDER if p in set(cells["pred"])]:
        sub = cells[cells["pred"] == pred]
        ax.scatter(sub["fp32"], sub["fast"], s=14 + sub["hidden_size"] / 40, color=PRED_COLORS[pred],
                   alpha=0.75, label=f"{pred}-pred")
    lo, hi = cells[["fp32", "fast"]].min().min(), cells[["fp32", "fast"]].max().max()
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="no change")
    flips = cells[cells["passes_fp32"] != cells["passes_fast"]]
    ax.scatter(flips["fp32"], flips["fast"], s=80, facecolors="none", edgecolors="k",
               label=f"pass/fail differs ({len(flips)} of {len(cells)})")
    ax.set(xscale="log", yscale="log", xlabel=f"{metric}, fp32 (toy_phase)", ylabel=f"{metric}, bf16 + compile",
           title=f"Each cell: fast / fp32 median {cells['fast_over_fp32'].median():.2f}")
    ax.legend(fontsize=7)
    for target in [t for t in PRED_ORDER if t in set(bound["target"])]:
        sub = bound[bound["target"] == target].sort_values("hidden_size")
        for mode, ls, mk in (("fp32", "-", "o"), ("fast", "--", "s")):
            bx.plot(sub["hidden_size"], sub[f"D_star_{mode}"], ls, marker=mk, color=PRED_COLORS[target],
                    label=f"{target}, {mode}", alpha=0.9 if mode == "fp32" else 0.7)
    bx.set(xscale="log", yscale="log", xlabel="width (hidden_size)", ylabel="boundary D* (3x x-prediction)",
           title="Boundary per width (missing: no crossing in the grid)")
    bx.yaxis.set_major_formatter(ScalarFormatter())
    bx.yaxis.set_minor_formatter(NullFormatter())
    bx.set_yticks([2, 4, 8, 16])
    bx.legend(fontsize=7)
    fig.suptitle("toy_phase in the fast CPU mode (bf16 + compiled loss) against fp32", fontsize=10)
    fig.tight_layout()
    return fig
