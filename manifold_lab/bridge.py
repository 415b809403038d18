"""The bridge: does the toy phase diagram predict the image studies?

``python -m manifold_lab bridge`` reads committed tables only (``results/toy_phase/boundary.csv`` and
``boundary_fit.csv``, ``results/image_intrinsic_dim/summary.csv``, and the summaries of ``image_pred_loss``,
``image_patch``, ``image_width``) and writes ``results/bridge/predictions.csv`` (one row per cell),
``results/bridge/agreement.csv`` and ``results/bridge/fig_bridge.png``.

The rule (fixed and committed before any prediction was computed; not to be tuned to the outcome)
--------------------------------------------------------------------------------------------------------
Cells: every (study, patch_size, hidden_size, loss, steps, pred) of the three committed image studies with
pred in {eps, v}; x-prediction at the same (study, patch_size, hidden_size, loss, steps) is the reference.

Observed: ``ratio`` = (mean over seeds of the target's ``fd_feat``) / (mean over seeds of x-prediction's
``fd_feat``); the per-seed ratios (seed s against x's seed s) give its range. **Observed fail: ratio > 3**,
the toy's own threshold (:data:`manifold_lab.plots.phase.FACTOR`, where the toy compares nn_dist).

Predicted, from the toy (spiral, d = 2, 5-layer MLP, v-loss, 2000 steps):

1. the image cell's ambient dimension is its token dimension ``D_img = 3 p^2``, its intrinsic dimension
   ``d_img`` the TwoNN estimate of its p x p x 3 patches at the study's image size (4 p px, 16 tokens) in
   ``results/image_intrinsic_dim`` (step 1 of the issue);
2. the map from toy to image keeps the **ratio of ambient to intrinsic dimension**: the toy's D with its d = 2
   corresponds to ``D_eq = 2 * D_img / d_img`` (a toy cell and an image cell are alike when the data fill the
   same fraction of the ambient space: the denoiser of eps or v must reproduce D - d noise directions out of
   D, which the width must carry);
3. the toy's boundary at the image cell's width w (the JiT hidden size read as the MLP width):
   - v: the power-law fit ``D*(w) = a w^b`` of ``boundary_fit.csv`` (extrapolated below the toy's widths
     64 .. 1024 for the image widths 16 and 32);
   - eps (no fit: fewer than two crossing widths): ``boundary.csv`` at the toy width nearest in log2 (16, 32,
     64 -> 64; 128 -> 128): ``fails_everywhere`` gives D* = 1 (every D_eq >= 2 fails: the toy eps fails
     already at D = 2), ``crossing`` its D_star, ``bracketed`` the geometric mean of D_pass and D_fail (or
     D_fail / 2 without D_pass), ``passes_*`` infinity;
4. **predicted fail: D_eq > D*(w)**.

The prediction ignores the image cell's loss space and step budget (the toy phase diagram has only v-loss,
2000 steps); the agreement is reported over all cells and over the v-loss cells. image_patch's patch-4 cells
are the same runs as image_width's width-64 cells (same config); both studies list them, so they count twice.

Sensitivity only (not the rule; columns ``pred_fail_diff`` and ``pred_fail_mle``): the map ``D_eq = 2 +
(D_img - d_img)`` (the same number of excess dimensions), and the ratio map with the MLE's d_img.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from manifold_lab import io
from manifold_lab.checks import ConfigError

FACTOR = 3.0                 # observed fail: target's fd_feat > FACTOR x x-prediction's (the toy's threshold)
TOY_D = 2                    # the toy's d (the spiral's subspace)
TARGETS = ("eps", "v")
IMAGE_STUDIES = ("image_pred_loss", "image_patch", "image_width")
CELL = ["study", "patch_size", "hidden_size", "loss", "steps"]


# ---- the toy side --------------------------------------------------------------------------------
def toy_boundary(target: str, width: float, boundary: pd.DataFrame, fit: pd.DataFrame) -> tuple[float, str]:
    """D*(width) for target by rule step 3: (D*, how it was read)."""
    if target == "v":
        row = fit[fit["target"] == "v"].iloc[0]
        if math.isfinite(row["a"]):
            return float(row["a"] * width ** row["b"]), f"fit {row['formula']}"
    sub = boundary[boundary["target"] == target]
    if sub.empty:
        raise ConfigError(f"boundary.csv has no rows for target {target!r}")
    widths = sub["hidden_size"].astype(float).to_numpy()
    r = sub.iloc[int(np.argmin(np.abs(np.log2(widths) - math.log2(width))))]
    how = f"toy width {int(r['hidden_size'])}: {r['status']}"
    if r["status"] == "fails_everywhere":
        return 1.0, how
    if str(r["status"]).startswith("crossing"):
        return float(r["D_star"]), how
    if r["status"] == "bracketed":
        lo = r["D_pass"] if math.isfinite(r["D_pass"]) else r["D_fail"] / 2
        return float(math.sqrt(lo * r["D_fail"])), how
    return math.inf, how


# ---- the image side ------------------------------------------------------------------------------
def patch_dimensions(id_summary: pd.DataFrame) -> pd.DataFrame:
    """Per patch_size (> 0): d_twonn and d_mle, the estimates of the image_intrinsic_dim study."""
    est = id_summary[(id_summary["metric"] == "estimate") & (id_summary["patch_size"] > 0)]
    wide = est.pivot_table(index="patch_size", columns="estimator", values="value", aggfunc="mean")
    return wide.rename(columns={"twonn": "d_twonn", "mle": "d_mle"}).reset_index()


def observed_cells(summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per cell of the rule: CELL columns, pred, fd_feat, fd_feat_x, ratio, ratio_min, ratio_max,
    n_seeds."""
    rows = []
    for study, s in summaries.items():
        df = s[s["metric"] == "fd_feat"].assign(study=study)
        for key, g in df.groupby(CELL):
            x = g[g["pred"] == "x"].set_index("seed")["value"]
            for target in TARGETS:
                t = g[g["pred"] == target].set_index("seed")["value"]
                if t.empty or x.empty:
                    continue
                per_seed = (t / x).dropna()
                rows.append(dict(zip(CELL, key)) | {
                    "pred": target, "fd_feat": t.mean(), "fd_feat_x": x.mean(), "ratio": t.mean() / x.mean(),
                    "ratio_min": per_seed.min(), "ratio_max": per_seed.max(), "n_seeds": len(per_seed)})
    return pd.DataFrame(rows)


def predict(cells: pd.DataFrame, dims: pd.DataFrame, boundary: pd.DataFrame, fit: pd.DataFrame) -> pd.DataFrame:
    """The rule applied to every observed cell: adds D_img, d_img, D_eq, D_star, predicted / observed
    verdicts, agree, and the sensitivity columns."""
    out = cells.merge(dims, on="patch_size", how="left")
    if out["d_twonn"].isna().any():
        missing = sorted(out.loc[out["d_twonn"].isna(), "patch_size"].unique())
        raise ConfigError(f"no measured patch dimension for patch sizes {missing} (run image_intrinsic_dim)")
    out["D_img"] = 3 * out["patch_size"] ** 2
    out["d_img"] = out["d_twonn"]
    out["D_eq"] = TOY_D * out["D_img"] / out["d_img"]
    star = [toy_boundary(p, w, boundary, fit) for p, w in zip(out["pred"], out["hidden_size"])]
    out["D_star"], out["boundary_from"] = [s[0] for s in star], [s[1] for s in star]
    out["predicted"] = np.where(out["D_eq"] > out["D_star"], "fail", "pass")
    out["observed"] = np.where(out["ratio"] > FACTOR, "fail", "pass")
    out["agree"] = out["predicted"] == out["observed"]
    out["pred_fail_diff"] = (TOY_D + out["D_img"] - out["d_img"]) > out["D_star"]
    out["pred_fail_mle"] = (TOY_D * out["D_img"] / out["d_mle"]) > out["D_star"]
    return out


def agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Agreement rates: all cells, v-loss cells, per study, per target; and the two sensitivity maps."""
    obs = table["observed"] == "fail"
    groups = [("all cells", table.index), ("v-loss cells", table.index[table["loss"] == "v"])]
    groups += [(f"study {s}", g.index) for s, g in table.groupby("study")]
    groups += [(f"target {p}", g.index) for p, g in table.groupby("pred")]
    rows = [{"subset": name, "cells": len(idx), "agree": int(table.loc[idx, "agree"].sum()),
             "rate": float(table.loc[idx, "agree"].mean()) if len(idx) else math.nan} for name, idx in groups]
    for col, name in (("pred_fail_diff", "sensitivity: D - d map"), ("pred_fail_mle", "sensitivity: MLE d")):
        rows.append({"subset": name, "cells": len(table), "agree": int((table[col] == obs).sum()),
                     "rate": float((table[col] == obs).mean())})
    return pd.DataFrame(rows)


def build(results_dir: str | Path = "results") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, agreement) from the committed tables under results_dir."""
    root = Path(results_dir)
    need = [root / "toy_phase" / "boundary.csv", root / "toy_phase" / "boundary_fit.csv",
            root / "image_intrinsic_dim" / "summary.csv"] + [root / s / "summary.csv" for s in IMAGE_STUDIES]
    for path in need:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (the bridge reads committed study tables)")
    summaries = {s: pd.read_csv(root / s / "summary.csv") for s in IMAGE_STUDIES}
    table = predict(observed_cells(summaries), patch_dimensions(pd.read_csv(need[2])),
                    pd.read_csv(need[0]), pd.read_csv(need[1]))
    return table, agreement(table)


def register(sub) -> None:
    p = sub.add_parser("bridge", help="predict the image studies from the toy phase diagram", allow_abbrev=False,
                       description="Apply the fixed rule of manifold_lab.bridge (toy boundary D*(width) against "
                                   "2 * token dim / patch ID) to every committed image-study cell; write "
                                   "OUT/predictions.csv, OUT/agreement.csv, OUT/fig_bridge.png.")
    p.add_argument("--results-dir", default="results", help="where the committed study tables are")
    p.add_argument("--out", default="results/bridge", help="output folder (default: results/bridge)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from manifold_lab.plots.bridge import plot_bridge

    table, agree = build(args.results_dir)
    out = Path(args.out)
    io.save_table(out / "predictions.csv", table)
    io.save_table(out / "agreement.csv", agree)
    io.save_figure(out / "fig_bridge.png", plot_bridge(table, agree))
    top = agree.iloc[0]
    print(f"bridge: {top['agree']} of {top['cells']} cells agree ({top['rate']:.0%}); "
          f"{int((~table['agree']).sum())} disagreements listed in {out / 'predictions.csv'}")
    return 0
