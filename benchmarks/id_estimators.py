"""The intrinsic-dimension estimators on spheres S^k in D dims: the issue's acceptance table, measured.

For each k (sphere of the toy with d = k + 1, so its manifold dimension is k) draws n points of x, eps and
v = x - eps in D dims and prints TwoNN and MLE beside k, the relative error, and eps / v against x. Writes
the tidy table to --out (CSV). About 1-2 minutes on one core at the defaults.

    python benchmarks/id_estimators.py --out results/toy_intrinsic_dim/estimators_on_spheres.csv
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from manifold_lab import io
from manifold_lab.metrics import intrinsic_dim as idim


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4, 8], help="sphere dimensions")
    ap.add_argument("--D", type=int, default=512)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="CSV file for the table")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for k in args.k:
        for of in ("x", "eps", "v"):
            X = idim.noised_cloud("sphere", k + 1, args.D, args.n, of, 1.0, args.seed)
            for est in ("twonn", "mle"):
                t0 = time.perf_counter()
                value = idim.estimate(X, est)
                rows.append({"dist": "sphere", "d": k + 1, "k": k, "D": args.D, "n": args.n, "of": of,
                             "estimator": est, "estimate": value, "seconds": time.perf_counter() - t0})
    df = pd.DataFrame(rows)
    x = df[df["of"] == "x"].set_index(["k", "estimator"])["estimate"]
    df["rel_error_vs_k"] = (df["estimate"] - df["k"]) / df["k"]
    df["ratio_to_x"] = [r.estimate / x[(r.k, r.estimator)] for r in df.itertuples()]
    print(df.pivot_table(index=["k", "estimator"], columns="of", values="estimate").round(3).to_string())
    print()
    xs = df[df["of"] == "x"]
    print("x within 20% of k:", bool((xs["rel_error_vs_k"].abs() <= 0.2).all()),
          f"(largest |error| {xs['rel_error_vs_k'].abs().max():.1%})")
    noisy = df[df["of"] != "x"]
    print(f"eps and v over x: {noisy['ratio_to_x'].min():.1f}x .. {noisy['ratio_to_x'].max():.1f}x")
    if args.out:
        io.save_table(args.out, df)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
