"""Intrinsic-dimension figures, drawn from the run folders of the ``toy_intrinsic_dim`` study
(``dims.csv``, ``jacobian.csv``, ``jac_counts.csv`` of :mod:`manifold_lab.intrinsic`). Every panel states
both dimensions: d (the subspace P spans) and k (the manifold's own dimension, what the estimators measure)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import LogLocator, ScalarFormatter

from manifold_lab.plots import finish_grid, register
from manifold_lab.plots.style import PRED_COLORS, PRED_ORDER

EST_STYLE = {"twonn": "o-", "mle": "s--", "pca": "^:"}
QUANTITY_COLORS = {"x": "#1b7837", "eps": "#c51b7d", "v": "#2166ac"}


def _runs(summary: pd.DataFrame, study_dir: Path, name: str) -> list[tuple[pd.Series, pd.DataFrame]]:
    """(parameters of the run, its table ``name``: a run-file key, dims, jacobian or jac_counts) for every
    run of the summary, sorted by (dist, d, D); a run folder not on disk raises MissingRunFile."""
    from manifold_lab.run_files import run_file

    runs = summary.drop_duplicates("run_id").sort_values([c for c in ("dist", "d", "D") if c in summary])
    out = []
    for _, r in runs.iterrows():
        out.append((r, pd.read_csv(run_file(study_dir, r["run_id"], name))))
    return out


def _title(r: pd.Series, table: pd.DataFrame) -> str:
    return f"{table['dist'].iloc[0] if 'dist' in table else r.get('dist', '')}, d = {int(table['d'].iloc[0])}, " \
           f"k = {int(table['k'].iloc[0])}, D = {int(r['D'])}"


def _log_y(ax) -> None:
    """Log y axis with plain-number tick labels (dimensions read as 2, 5, 10, 20, 50 ...)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(plt.NullFormatter())


def _layout(n: int, ncol: int = 4):
    ncol = min(ncol, max(n, 1))
    nrow = -(-max(n, 1) // ncol)
    return nrow, ncol


@register("id_vs_t")
def fig_id_vs_t(summary: pd.DataFrame, study_dir: Path):
    """Per (dist, d, D): the estimated dimension of z_t against t (one line per estimator), x, eps and v as
    horizontal lines (TwoNN), each target's generated samples as markers at the right (in R^D, then their
    coordinates P^T s in the subspace; marker shape: estimator), k and d dotted."""
    runs = _runs(summary, study_dir, "dims")
    nrow, ncol = _layout(len(runs))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, (r, dims) in zip(axes.flat, runs):
        z = dims[dims["quantity"] == "z"]
        ts = sorted(z["t"].unique())  # equally spaced positions: the interesting part sits near t = 1
        for est, g in z.groupby("estimator"):
            g = g.sort_values("t")
            ax.plot([ts.index(t) for t in g["t"]], g["value"], EST_STYLE.get(est, "o-"), color="0.2", ms=4,
                    label=f"z_t ({est})")
        tw = dims[dims["estimator"] == "twonn"]
        for q in ("x", "eps", "v"):
            v = tw.loc[tw["quantity"] == q, "value"]
            if len(v):
                ax.axhline(v.iloc[0], color=QUANTITY_COLORS[q], lw=1, alpha=0.7, label=f"{q} (twonn)")
        for pos, q in ((len(ts) + 0.2, "samples"), (len(ts) + 1.2, "samples_proj")):
            for pred, g in dims[dims["quantity"] == q].groupby("pred"):
                for est, e in g.groupby("estimator"):
                    ax.plot([pos], e["value"].to_numpy()[:1], EST_STYLE.get(est, "o")[0], color=PRED_COLORS[pred],
                            ms=6, mec="k",
                            label=f"{pred}-pred samples" if est == "twonn" and pos < len(ts) + 1 else None)
        ax.set_xticks(list(range(len(ts))) + [len(ts) + 0.2, len(ts) + 1.2],
                      [f"{t:g}" for t in ts] + ["samples", "P^T s"], fontsize=7)
        d, k = int(dims["d"].iloc[0]), int(dims["k"].iloc[0])
        ax.axhline(k, color="k", ls=":", lw=1)
        ax.axhline(d, color="0.5", ls=":", lw=1)
        ax.text(0, k, f" k = {k}", va="bottom", fontsize=7)
        ax.text(0, d, f" d = {d}", va="bottom", fontsize=7, color="0.4")
        _log_y(ax)
        ax.set_xlabel("t of z_t (1 = clean), then each target's samples")
        ax.set_ylabel("estimated dimension")
        ax.set_title(_title(r, dims), fontsize=9)
    if runs:
        axes.flat[0].legend(fontsize=6, loc="center left", ncol=2)
    return finish_grid(fig, axes, len(runs))


@register("jacobian_counts")
def fig_jacobian_counts(summary: pd.DataFrame, study_dir: Path):
    """Per (dist, d, D): the count of singular values of d x_hat / d z above half the largest, against t,
    one line per target (median over the points, band: 10-90 % of the points); k and d dotted."""
    runs = _runs(summary, study_dir, "jac_counts")
    nrow, ncol = _layout(len(runs))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, (r, counts) in zip(axes.flat, runs):
        for pred in [p for p in PRED_ORDER if p in set(counts["pred"])]:
            g = counts[counts["pred"] == pred].groupby("t")["count"]
            med, lo, hi = g.median(), g.quantile(0.1), g.quantile(0.9)
            ax.plot(med.index, med.values, "o-", color=PRED_COLORS[pred], label=f"{pred}-pred")
            ax.fill_between(med.index, lo.values, hi.values, color=PRED_COLORS[pred], alpha=0.2, lw=0)
        d, k = int(counts["d"].iloc[0]), int(counts["k"].iloc[0])
        ax.axhline(k, color="k", ls=":", lw=1)
        ax.axhline(d, color="0.5", ls=":", lw=1)
        _log_y(ax)
        ax.set_xlabel("t (1 = clean)")
        ax.set_ylabel("singular values > 0.5 x largest")
        ax.set_title(f"{_title(r, counts.assign(dist=r.get('dist', '')))} (k, d dotted)", fontsize=9)
    if runs:
        axes.flat[0].legend(fontsize=7)
    return finish_grid(fig, axes, len(runs))


@register("jacobian_spectra")
def fig_jacobian_spectra(summary: pd.DataFrame, study_dir: Path, n_show: int = 16):
    """The normalised Jacobian spectra sv_i / sv_1 (median over the points) against i, one panel per target,
    one colour per t, for the run with the largest D of each (dist, d); the count rule (0.5) dashed."""
    runs = _runs(summary, study_dir, "jacobian")
    runs = [(r, t) for r, t in runs if r["D"] == max(x["D"] for x, y in runs if x.get("dist") == r.get("dist")
                                                          and x.get("d") == r.get("d"))]
    preds = [p for p in PRED_ORDER if any(p in set(t["pred"]) for _, t in runs)]
    fig, axes = plt.subplots(max(len(runs), 1), max(len(preds), 1), figsize=(3.6 * max(len(preds), 1),
                             2.9 * max(len(runs), 1)), squeeze=False)
    for i, (r, spec) in enumerate(runs):
        ts = sorted(spec["t"].unique())
        colors = plt.cm.plasma(np.linspace(0, 0.85, len(ts)))
        for j, pred in enumerate(preds):
            ax = axes[i, j]
            for c, t in zip(colors, ts):
                g = spec[(spec["pred"] == pred) & (spec["t"] == t)].sort_values("i").head(n_show)
                ax.plot(g["i"], g["median"], "o-", ms=2.5, lw=1, color=c, label=f"t = {t:g}")
            ax.axhline(0.5, color="0.5", ls="--", lw=0.8)
            ax.axvline(int(spec["k"].iloc[0]) + 0.5, color="k", ls=":", lw=0.8)
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("index i")
            ax.set_title(f"{pred}-pred | {_title(r, spec.assign(dist=r.get('dist', '')))}", fontsize=8)
        axes[i, 0].set_ylabel("sv_i / sv_1 (median)")
    if runs:
        axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    return fig


# ---- real images and patches (the image_intrinsic_dim study) ---------------------------------------------
# Whole-image context, not a target: Pope et al. 2021 (ICLR), MLE with k = 20 neighbours.
LITERATURE_WHOLE_IMAGE_MLE = {"CIFAR-10": 25.0, "ImageNet": 43.0}


def image_id_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (size, patch_size, estimator): token_dim, estimate, half_min, half_max, n_points
    (seed-averaged). token_dim is the point's derived setting (a summary column, ImageIdConfig.token_dim)."""
    wide = summary.pivot_table(index=["run_id", "size", "patch_size", "estimator", "token_dim"], columns="metric",
                               values="value").reset_index()
    extra = [c for c in ("n_points", "n_images_read") if c in summary]
    if extra:
        wide = wide.merge(summary.groupby("run_id", as_index=False)[extra].first(), on="run_id")
    cols = [c for c in ("token_dim", "estimate", "half_min", "half_max", "half_std", *extra) if c in wide]
    return wide.groupby(["size", "patch_size", "estimator"], as_index=False)[cols].mean()


@register("image_id_vs_token_dim")
def fig_image_id_vs_token_dim(summary: pd.DataFrame, study_dir: Path):
    """Estimated intrinsic dimension of JiT patches (and whole images) of the shipped photos against the
    token dimension, bars: range over random halves; dotted: ID = token dimension; dashed: the
    literature's whole-image MLE (k = 20) figures as context."""
    t = image_id_table(summary)
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for est, g in t.groupby("estimator"):
        for whole, part in g.groupby(g["patch_size"] == 0):
            part = part.sort_values("token_dim")
            err = np.vstack([part["estimate"] - part.get("half_min", part["estimate"]),
                             part.get("half_max", part["estimate"]) - part["estimate"]]).clip(0)
            ax.errorbar(part["token_dim"], part["estimate"], yerr=err, marker="D" if whole else EST_STYLE[est][0],
                        ls="none" if whole else EST_STYLE[est][1:], capsize=3, color="k" if whole else None,
                        mfc="none" if est == "mle" else None,
                        label=f"{est}, {'whole images' if whole else 'patches'}")
    lo, hi = t["token_dim"].min() / 1.5, t["token_dim"].max() * 1.5
    ax.plot([lo, hi], [lo, hi], ":", color="0.6", label="ID = token dimension")
    for i, (name, val) in enumerate(LITERATURE_WHOLE_IMAGE_MLE.items()):
        ax.axhline(val, ls="--", lw=1, color=f"C{5 + i}", label=f"{name} whole images, MLE k=20 (Pope et al.)")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(2, 200), xlabel="token dimension p*p*3 (whole image: 3*S*S)",
           ylabel="estimated intrinsic dimension", title="Intrinsic dimension of shipped photo patches")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
