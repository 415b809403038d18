"""The memorisation -> generalisation transition N* of a memorisation study, against the manifold's dimension k.

The rule, fixed before any sphere point was run (issue 22, item 6; ``studies/toy_sample_complexity.yaml``):

* per model (a, b) and grid point, the copy share is measured in the data's d-dim subspace
  (``copy_share_proj_{a,b}``: at D = 2 it equals the ambient one; at D = 512 the ambient share is 0 for every
  target because of the samples' small off-subspace residual, toy_memorisation);
* its null is what fresh draws of the distribution score against the same training set
  (``copy_share_null_{a,b}``), floored at one sample's share 1 / n_samples (a null of 0, as on a k = 8
  sphere, would otherwise demand a copy share of exactly 0);
* a model *generalises* at N when copy share <= FACTOR x max(null, 1 / n_samples), FACTOR = 2;
* N* is the smallest N of the grid from which on the model generalises at every larger N of the grid
  (censored, ``n_star = inf``, where it does not at the largest N);
* N*(k) is fitted, on log2 N*, as an exponential N* = a * c^k and as a power N* = a * k^b (least squares,
  per model and on both models' N* together); the spread between the two models is the interval.

Shapes: the summary is the runner's long table (one row per run and metric); every table returned is tidy.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

FACTOR = 2.0
N_SAMPLES_DEFAULT = 2000      # ToyConfig.n_samples: the floor of the null is 1 / n_samples
KEYS = ["dist", "d", "k", "D", "pred", "seed"]


def wide(summary: pd.DataFrame) -> pd.DataFrame:
    """The long summary as one row per run: its parameters, then a column per metric."""
    keys = [c for c in summary.columns if c not in ("study", "metric", "value")]
    return summary.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()


def copy_ratio_table(summary: pd.DataFrame, n_samples: int = N_SAMPLES_DEFAULT) -> pd.DataFrame:
    """Per run and model (a, b): n_train, the subspace copy share, the null, the floored null, their ratio and
    whether the model generalises there (the module's rule)."""
    runs = wide(summary)
    keys = [k for k in KEYS if k in runs.columns]
    rows = []
    for _, r in runs.iterrows():
        for m in "ab":
            share, null = float(r[f"copy_share_proj_{m}"]), float(r[f"copy_share_null_{m}"])
            floor = max(null, 1.0 / n_samples)
            rows.append({**{k: r[k] for k in keys}, "n_train": int(r["n_train"]), "model": m,
                         "copy_share": share, "null": null, "null_floored": floor, "ratio": share / floor,
                         "generalises": share <= FACTOR * floor})
    return pd.DataFrame(rows).sort_values(keys + ["model", "n_train"]).reset_index(drop=True)


def n_star_table(summary: pd.DataFrame, n_samples: int = N_SAMPLES_DEFAULT) -> pd.DataFrame:
    """Per (dist, d, k, D, pred, seed, model): N* (inf where censored), ``censored``, and the grid's N range."""
    ratios = copy_ratio_table(summary, n_samples)
    keys = [k for k in KEYS if k in ratios.columns] + ["model"]
    rows = []
    for key, g in ratios.groupby(keys, sort=True):
        g = g.sort_values("n_train")
        ok = g["generalises"].to_numpy()
        # the first index from which every later point generalises
        tail_ok = np.flip(np.logical_and.accumulate(np.flip(ok)))
        n_star = float(g["n_train"].to_numpy()[tail_ok.argmax()]) if tail_ok.any() else np.inf
        rows.append({**dict(zip(keys, key)), "n_star": n_star, "censored": not tail_ok.any(),
                     "n_min": int(g["n_train"].min()), "n_max": int(g["n_train"].max()), "n_points": len(g)})
    return pd.DataFrame(rows)


def _lsq(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Slope, intercept and the root-mean-square residual of y = intercept + slope * x."""
    slope, intercept = np.polyfit(x, y, 1)
    rms = float(np.sqrt(np.mean((y - (intercept + slope * x)) ** 2)))
    return float(slope), float(intercept), rms


def fit_n_star(table: pd.DataFrame) -> pd.DataFrame:
    """Fits of log2 N* against k per (D, pred) and model (a, b, both): ``exponential`` N* = a * c^k and
    ``power`` N* = a * k^b, with the rms residual in log2 units. Censored points are left out (and
    counted); a fit needs 2 or more distinct k."""
    rows = []
    for (D, pred), g in table.groupby(["D", "pred"], sort=True):
        for model in ("a", "b", "both"):
            sub = g if model == "both" else g[g["model"] == model]
            ok = sub[~sub["censored"]]
            base = {"D": D, "pred": pred, "model": model, "n_fitted": len(ok), "n_censored": int(sub["censored"].sum())}
            if ok["k"].nunique() < 2:
                rows.append({**base, "form": "none", "formula": "fewer than 2 uncensored k"})
                continue
            k, y = ok["k"].to_numpy(float), np.log2(ok["n_star"].to_numpy(float))
            s, i, rms = _lsq(k, y)
            rows.append({**base, "form": "exponential", "a": 2 ** i, "c": 2 ** s, "b": np.nan, "rms_log2": rms,
                         "formula": f"N* = {2 ** i:.3g} * {2 ** s:.3g}^k"})
            s, i, rms = _lsq(np.log2(k), y)
            rows.append({**base, "form": "power", "a": 2 ** i, "c": np.nan, "b": s, "rms_log2": rms,
                         "formula": f"N* = {2 ** i:.3g} * k^{s:.2f}"})
    return pd.DataFrame(rows)
