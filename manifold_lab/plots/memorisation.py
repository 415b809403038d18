"""Memorisation-study figures: the metrics of :mod:`manifold_lab.memorisation` against the training-set size N."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from manifold_lab.plots import register
from manifold_lab.plots.style import PRED_COLORS, PRED_ORDER
from manifold_lab.sample_complexity import wide

PANELS = (("paired_dist_rel", "paired distance of the two models'\nsamples / data pair distance", True),
          ("copy_share", "share of samples copying a training point\n(dots: in the subspace; dashed: the null)", False),
          ("train_ratio_proj", "distance to own training set /\nto the other set (in the subspace)", True),
          ("nn_dist", "nn_dist (sample quality)", True))




def plot_memorisation_point(proj_a: np.ndarray, proj_b: np.ndarray, train_a: np.ndarray, train_b: np.ndarray,
                            reference: np.ndarray, cfg, metrics: dict):
    """One point: the two models' samples (colour; proj_*: (n, d) in-subspace coordinates P^T s) over their
    training sets (train_*: (N, d); black: own, grey: the other's crosses), first two d-dim axes."""
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.8))
    lim = float(np.abs(reference[:, :2]).max()) * 1.25
    for ax, pts, own, other, name in ((axes[0], proj_a, train_a, train_b, "a"), (axes[1], proj_b, train_b, train_a, "b")):
        ok = np.isfinite(pts).all(1)
        ax.scatter(reference[:5000, 0], reference[:5000, 1], s=1, c="0.9", rasterized=True)
        ax.scatter(pts[ok, 0], pts[ok, 1], s=2, c=PRED_COLORS[cfg.pred], rasterized=True, label="samples")
        for tr, c, lab in ((own, "k", "own training set"), (other, "0.6", "other set")):
            if len(tr) <= 4096:
                ax.scatter(tr[:, 0], tr[:, 1], s=14, marker="x", c=c, lw=0.8, label=lab)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"model {name}: copy share {metrics[f'copy_share_{name}']:.2f} "
                     f"(in subspace {metrics[f'copy_share_proj_{name}']:.2f})", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{cfg.dist} (d={cfg.d}) in D={cfg.D}, N={cfg.n_train}, {cfg.pred}-pred: paired distance "
                 f"{metrics['paired_dist_rel']:.2f} of a data pair", fontsize=9)
    fig.tight_layout()
    return fig


@register("memorisation_vs_N")
def fig_memorisation_vs_N(summary: pd.DataFrame, study_dir: Path):
    """Rows: D; columns: paired distance, copy share (with its null), own/other training-set distance ratio
    and nn_dist, against the training-set size N, one line per target."""
    runs = wide(summary)
    Ds = sorted(runs["D"].unique())
    fig, axes = plt.subplots(len(Ds), len(PANELS), figsize=(3.6 * len(PANELS), 3.0 * len(Ds)), squeeze=False)
    for i, D in enumerate(Ds):
        sub = runs[runs["D"] == D]
        for ax, (metric, label, logy) in zip(axes[i], PANELS):
            for pred in [p for p in PRED_ORDER if p in set(sub["pred"])]:
                s = sub[sub["pred"] == pred].groupby("n_train")[metric].mean()
                ax.plot(s.index, s.values, "o-", color=PRED_COLORS[pred], label=f"{pred}-pred")
                if metric == "copy_share":
                    for other, ls in (("copy_share_proj", ":"), ("copy_share_null", "--")):
                        if other in sub:
                            o = sub[sub["pred"] == pred].groupby("n_train")[other].mean()
                            ax.plot(o.index, o.values, ls, color=PRED_COLORS[pred], lw=1.0)
            if metric == "train_ratio_proj":
                ax.axhline(1, color="0.5", ls=":", lw=1)
            ax.set_xscale("log", base=2)
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel("training-set size N")
            ax.set_title(f"D = {D}: {label}", fontsize=8)
        axes[i, 0].legend(fontsize=7)
    k = runs["k"].iloc[0] if "k" in runs else "?"
    fig.suptitle(f"Memorisation -> generalisation: {runs['dist'].iloc[0]}, d = {runs['d'].iloc[0]}, k = {int(k)}; "
                 f"copy: closer than {runs['copy_frac'].iloc[0] if 'copy_frac' in runs else 0.1} x the set's spacing",
                 y=1.0, fontsize=10)
    fig.tight_layout()
    return fig


@register("memorisation_samples")
def fig_memorisation_samples(summary: pd.DataFrame, study_dir: Path):
    """Samples of both models (colour: model a, grey: model b) over the training set of model a (black
    crosses) at the smallest D: rows target, columns N."""
    from manifold_lab.run_files import run_file

    runs = summary.drop_duplicates("run_id")
    runs = runs[runs["D"] == runs["D"].min()]
    Ns = sorted(runs["n_train"].unique())
    preds = [p for p in PRED_ORDER if p in set(runs["pred"])]
    fig, axes = plt.subplots(len(preds), len(Ns), figsize=(2.2 * len(Ns), 2.3 * len(preds)), squeeze=False)
    for i, pred in enumerate(preds):
        for j, N in enumerate(Ns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            row = runs[(runs["pred"] == pred) & (runs["n_train"] == N)]
            files = [run_file(study_dir, row["run_id"].iloc[0], f"samples_{t}") for t in "ab"] if len(row) else []
            if not files:
                ax.axis("off")
                continue
            with np.load(files[0]) as fa, np.load(files[1]) as fb:
                pa, pb, ref, train = fa["samples"] @ fa["P"], fb["samples"] @ fb["P"], fa["reference"], fa["train"]
            lim = float(np.abs(ref[:, :2]).max()) * 1.25
            ax.scatter(pb[:, 0], pb[:, 1], s=1, c="0.6", rasterized=True)
            ax.scatter(pa[:, 0], pa[:, 1], s=1, c=PRED_COLORS[pred], rasterized=True)
            if len(train) <= 1024:
                ax.scatter(train[:, 0], train[:, 1], s=8, marker="x", c="k", lw=0.6)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(f"N = {N}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{pred}-pred", fontsize=10)
    fig.suptitle(f"D = {runs['D'].min()}: model a (colour), model b (grey), a's training set (x)", y=1.0, fontsize=10)
    fig.tight_layout()
    return fig


@register("n_star_vs_k")
def fig_n_star_vs_k(summary: pd.DataFrame, study_dir: Path):
    """Left: each model's copy share over its (floored) null against N, one colour per manifold dimension k,
    the rule's factor dashed; right: N* against k (crosses: models a and b; triangles: censored, N* beyond
    the grid) with the exponential and power fits on both models. Writes n_star.csv and n_star_fit.csv
    (manifold_lab.sample_complexity states the rule)."""
    from manifold_lab import io
    from manifold_lab import sample_complexity as sc

    n_samples = int(summary["n_samples"].iloc[0]) if "n_samples" in summary else sc.N_SAMPLES_DEFAULT
    ratios = sc.copy_ratio_table(summary, n_samples)
    table = sc.n_star_table(summary, n_samples)
    fit = sc.fit_n_star(table)
    io.save_table(Path(study_dir) / "n_star.csv", table)
    io.save_table(Path(study_dir) / "n_star_fit.csv", fit)
    ks = sorted(ratios["k"].unique())
    colors = dict(zip(ks, plt.cm.viridis(np.linspace(0.05, 0.85, len(ks)))))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k in ks:
        for m, ls in (("a", "-"), ("b", "--")):
            s = ratios[(ratios["k"] == k) & (ratios["model"] == m)].groupby("n_train")["ratio"].mean()
            ax.plot(s.index, s.clip(lower=1e-2).values, ls, marker="o", ms=3, color=colors[k],
                    label=f"k = {int(k)}" if m == "a" else None)
    ax.axhline(sc.FACTOR, color="0.3", ls=":", lw=1.2, label=f"rule: {sc.FACTOR:g}x the null")
    ax.set(xscale="log", yscale="log", xlabel="training-set size N (per model)",
           ylabel="copy share / null (null floored at 1/n_samples)")
    ax.set_title("copying a training point (in the data's subspace); solid: model a, dashed: b", fontsize=9)
    ax.legend(fontsize=8)
    n_max = int(table["n_max"].max())
    for m, marker in (("a", "x"), ("b", "+")):
        sub = table[table["model"] == m]
        done = sub[~sub["censored"]]
        bx.scatter(done["k"], done["n_star"], marker=marker, s=60, color="k", label=f"N*, model {m}")
        cens = sub[sub["censored"]]
        if len(cens):
            bx.scatter(cens["k"], [2 * n_max] * len(cens), marker="^", s=50, facecolor="none", edgecolor="crimson",
                       label="beyond the grid" if m == "a" else None)
    kk = np.linspace(min(ks), max(ks), 50)
    for form, ls in (("exponential", "-"), ("power", "--")):
        row = fit[(fit["model"] == "both") & (fit["form"] == form)]
        if len(row):
            r = row.iloc[0]
            y = r["a"] * (r["c"] ** kk if form == "exponential" else kk ** r["b"])
            bx.plot(kk, y, ls, color="tab:blue", label=f"{r['formula']} (rms {r['rms_log2']:.2f} in log2)")
    bx.set(yscale="log", xlabel="manifold dimension k", ylabel="N* (memorisation -> generalisation)")
    bx.set_xticks(ks, [str(int(k)) for k in ks])
    D = ", ".join(str(int(x)) for x in sorted(table["D"].unique()))
    bx.set_title(f"N* against k at D = {D}", fontsize=9)
    bx.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
