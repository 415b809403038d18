"""``id --accuracy``: the intrinsic-dimension estimators checked where the answer is known.

For each k, n points of x (the toy's sphere S^k, d = k + 1, embedded in D dims), of eps and of v = x - eps
(t = 1 for the noise pair: the toy's convention, t = 1 clean) are measured with TwoNN and the MLE. The
table (one row per k, quantity, estimator) gives the estimate, its relative error against k, and its ratio to
the estimate of x: x should read k, eps and v about D. This is the accuracy table of
``results/toy_intrinsic_dim/estimators_on_spheres.csv``::

    python -m manifold_lab id --accuracy 2 4 8 --D 512 --n 5000 --out results/toy_intrinsic_dim/estimators_on_spheres.csv
"""
from __future__ import annotations

import time

import pandas as pd

from manifold_lab.metrics import intrinsic_dim as idim

QUANTITIES = ("x", "eps", "v")
ESTIMATORS = ("twonn", "mle")


def accuracy_table(ks=(2, 4, 8), D: int = 512, n: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Columns: dist, d, k, D, n, of, estimator, estimate, seconds, rel_error_vs_k, ratio_to_x."""
    rows = []
    for k in ks:
        for of in QUANTITIES:
            X = idim.noised_cloud("sphere", k + 1, D, n, of, 1.0, seed)     # (n, D)
            for est in ESTIMATORS:
                t0 = time.perf_counter()
                value = idim.estimate(X, est)
                rows.append({"dist": "sphere", "d": k + 1, "k": k, "D": D, "n": n, "of": of, "estimator": est,
                             "estimate": value, "seconds": time.perf_counter() - t0})
    df = pd.DataFrame(rows)
    x = df[df["of"] == "x"].set_index(["k", "estimator"])["estimate"]
    df["rel_error_vs_k"] = (df["estimate"] - df["k"]) / df["k"]
    df["ratio_to_x"] = [r.estimate / x[(r.k, r.estimator)] for r in df.itertuples()]
    return df


def describe(df: pd.DataFrame) -> str:
    """The estimates (k x estimator rows, quantity columns), x's largest error, eps and v over x."""
    xs, noisy = df[df["of"] == "x"], df[df["of"] != "x"]
    return "\n".join([
        df.pivot_table(index=["k", "estimator"], columns="of", values="estimate").round(3).to_string(), "",
        f"x against k: largest |error| {xs['rel_error_vs_k'].abs().max():.1%}",
        f"eps and v over x: {noisy['ratio_to_x'].min():.1f}x .. {noisy['ratio_to_x'].max():.1f}x"])
