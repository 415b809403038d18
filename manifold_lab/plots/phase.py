"""Capacity phase diagram of the toy: nn_dist over MLP width x D per target, the failure boundary, its fit.

A cell (width, D) of target T *fails* when T's nn_dist is more than ``FACTOR`` (3) times x-prediction's in
the same cell. Per width, the boundary D* is where the ratio first passes FACTOR going up in D, interpolated
in log D and log ratio between the last passing D and the first failing D when both cells were run
(:func:`boundary_table`; a cell not run is unknown, never assumed). The fit (:func:`fit_boundary`) is a
power law D* = a * width^b by least squares in log-log over the widths with a crossing inside the grid;
widths that fail at the smallest D, pass at the largest, or have cells missing at the edge only bound D*.

Over seeds (:func:`boundary_by_seed`): the same rule on each seed's own cells gives one D* per seed where
that seed ran both deciding cells; ``boundary.csv`` carries their range (``D_star_min``, ``D_star_max``,
``n_seeds``) and every seed's own status counted (``seed_status``) beside the D* of the seed-mean, and the
fit an interval on a and b (2.5-97.5 % of a bootstrap over seeds: per width one of its seeds' D* drawn at
random, :data:`N_BOOT` times). The ``phase_diagram``
figure adds the seeds of the sibling study ``toy_phase_seeds`` (its summary.csv, when present) to the
study's own.

The ``phase_diagram`` figure writes both tables next to the summary (``boundary.csv``, ``boundary_fit.csv``)
through :func:`manifold_lab.io.save_table`, because the runner only draws figures from the summary.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from manifold_lab import io
from manifold_lab.plots import register
from manifold_lab.plots.style import PRED_COLORS, PRED_ORDER

FACTOR = 3.0
METRIC = "nn_dist"
N_BOOT = 2000


def cell_table(summary: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Wide table: index (hidden_size, D), one column per target, the mean metric over seeds."""
    df = summary[summary["metric"] == metric]
    return df.pivot_table(index=["hidden_size", "D"], columns="pred", values="value", aggfunc="mean")


def _crossing(Ds, ratios) -> dict:
    """The boundary of one width: Ds ascending (every D of the grid), ratios target / x (NaN: a cell not run).

    Status: ``crossing`` (the first failing D and the D just below it were both run: D_star interpolated;
    ``crossing_non_monotone`` when a larger D passes again), ``bracketed`` (cells below the first failure
    were not run: D* lies between D_pass, the last passing D run, if any, and D_fail; not interpolated, not
    fitted), ``fails_everywhere`` (fails at the smallest D), ``passes_everywhere`` (passes at every D, the
    largest included), ``passes_where_run`` (no failure, but the largest D was not run), ``no_cells``."""
    row = {"D_pass": math.nan, "D_fail": math.nan, "ratio_pass": math.nan, "ratio_fail": math.nan,
           "D_star": math.nan}
    known = [i for i, r in enumerate(ratios) if not math.isnan(r)]
    if not known:
        return row | {"status": "no_cells"}
    fail = [i for i in known if ratios[i] > FACTOR]
    if not fail:
        last = known[-1]
        return row | {"status": "passes_everywhere" if last == len(Ds) - 1 else "passes_where_run",
                      "D_pass": Ds[last], "ratio_pass": ratios[last]}
    i = fail[0]
    row |= {"D_fail": Ds[i], "ratio_fail": ratios[i]}
    below = [j for j in known if j < i]
    if below:
        row |= {"D_pass": Ds[below[-1]], "ratio_pass": ratios[below[-1]]}
    if i == 0:
        return row | {"status": "fails_everywhere"}
    if not below or below[-1] != i - 1:
        return row | {"status": "bracketed"}
    (D1, r1), (D2, r2) = (Ds[i - 1], ratios[i - 1]), (Ds[i], ratios[i])
    frac = (math.log(FACTOR) - math.log(r1)) / (math.log(r2) - math.log(r1)) if math.isfinite(r2) else 0.0
    row["D_star"] = math.exp(math.log(D1) + frac * (math.log(D2) - math.log(D1)))
    monotone = all(ratios[j] > FACTOR for j in known if j > i)
    return row | {"status": "crossing" if monotone else "crossing_non_monotone"}


def _boundary_rows(cells: pd.DataFrame, Ds: list, **extra) -> list[dict]:
    """Per (target other than x, width) of a :func:`cell_table`: the row of :func:`_crossing` over ``Ds``
    (a D without a cell is NaN: unknown), with ``extra`` columns (e.g. the seed) after the width."""
    rows = []
    for target in [p for p in PRED_ORDER if p != "x" and p in cells.columns]:
        for width, sub in cells.groupby(level="hidden_size"):
            sub = sub.droplevel("hidden_size").reindex(Ds)
            ratio = (sub[target] / sub["x"]).replace(np.inf, 1e9) if "x" in sub else pd.Series(math.nan, index=Ds)
            rows.append({"target": target, "hidden_size": int(width), **extra, **_crossing(Ds, ratio.tolist())})
    return rows


def boundary_table(summary: pd.DataFrame, metric: str = METRIC, by_seed: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (target other than x, width): the deciding cells (D_pass, D_fail with their ratios to
    x-prediction), the interpolated D_star and a status (see :func:`_crossing`); missing cells stay unknown.
    With a ``seed`` column also the range of the seeds' own D* (``by_seed``: :func:`boundary_by_seed`,
    computed here when not given) over the ``n_seeds`` seeds that cross inside the grid, and ``seed_status``:
    every seed's own status counted (e.g. "2 fails_everywhere, 1 crossing"), so a range that leaves seeds out
    says so."""
    cells = cell_table(summary, metric)
    Ds = sorted(cells.index.get_level_values("D").unique())
    out = pd.DataFrame(_boundary_rows(cells, Ds))
    if "seed" in summary.columns and not out.empty:
        per = boundary_by_seed(summary, metric) if by_seed is None else by_seed
        got = per[per["D_star"].notna()].groupby(["target", "hidden_size"])["D_star"]
        rng = pd.DataFrame({"D_star_min": got.min(), "D_star_max": got.max(), "n_seeds": got.count()}).reset_index()
        out = out.merge(rng, on=["target", "hidden_size"], how="left")
        out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
        statuses = per.groupby(["target", "hidden_size"])["status"].agg(_status_counts).rename("seed_status")
        out = out.merge(statuses.reset_index(), on=["target", "hidden_size"], how="left")
    return out


def _status_counts(statuses: pd.Series) -> str:
    """The seeds' own statuses of one width, counted: e.g. "2 crossing, 1 bracketed" (most frequent first)."""
    return ", ".join(f"{n} {status}" for status, n in statuses.value_counts().items())


def boundary_by_seed(summary: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """One row per (target, width, seed): the boundary from that seed's cells alone (columns of
    :func:`boundary_table` plus ``seed``); a cell the seed did not run is unknown, so a seed with only the
    two deciding cells of a width still gives its D* when they are neighbours in the grid's D."""
    df = summary[summary["metric"] == metric]
    Ds = sorted(df["D"].unique())
    rows = []
    for seed, sub in df.groupby("seed"):
        rows += _boundary_rows(cell_table(sub, metric), Ds, seed=int(seed))
    return pd.DataFrame(rows)


FIT_COLUMNS = ["target", "a", "b", "n_widths", "widths", "formula", "a_lo", "a_hi", "b_lo", "b_hi", "n_boot"]


def _power_fit(widths, d_star) -> tuple[float, float]:
    b, loga = np.polyfit(np.log(np.asarray(widths, float)), np.log(np.asarray(d_star, float)), 1)
    return math.exp(loga), float(b)


def fit_boundary(boundary: pd.DataFrame, by_seed: pd.DataFrame | None = None, n_boot: int = N_BOOT) -> pd.DataFrame:
    """Per target: the power law D* = a * width^b fitted in log-log over the widths whose status starts with
    'crossing' (columns target, a, b, n_widths, widths, formula); NaN a, b with fewer than two widths.
    With ``by_seed`` (:func:`boundary_by_seed`), also a_lo, a_hi, b_lo, b_hi: the 2.5-97.5 % interval of a
    bootstrap over seeds (per fitted width one of its seeds' crossing D* drawn at random, seeded; n_boot
    times). One seed per width gives a zero-width interval: it says nothing about seeds, and n_boot is 0."""
    rows = []
    for target, sub in boundary.groupby("target", sort=False):
        use = sub[sub["status"].str.startswith("crossing") & sub["D_star"].notna()]
        a = b = math.nan
        if len(use) >= 2 and use["hidden_size"].nunique() >= 2:
            a, b = _power_fit(use["hidden_size"], use["D_star"])
        formula = f"D* = {a:.3g} w^{b:.2f}" if math.isfinite(b) else "no fit (fewer than 2 crossing widths)"
        row = {"target": target, "a": a, "b": b, "n_widths": len(use),
               "widths": " ".join(str(int(w)) for w in use["hidden_size"]), "formula": formula,
               "a_lo": math.nan, "a_hi": math.nan, "b_lo": math.nan, "b_hi": math.nan, "n_boot": 0}
        if by_seed is not None and math.isfinite(b):
            seeds = by_seed[(by_seed["target"] == target) & by_seed["status"].str.startswith("crossing")
                            & by_seed["D_star"].notna() & by_seed["hidden_size"].isin(use["hidden_size"])]
            per_width = [g["D_star"].to_numpy(float) for _, g in seeds.groupby("hidden_size")]
            widths = [w for w, _ in seeds.groupby("hidden_size")]
            if len(widths) >= 2 and max(len(p) for p in per_width) > 1:
                rng = np.random.default_rng(0)
                boot = np.array([_power_fit(widths, [p[rng.integers(len(p))] for p in per_width])
                                 for _ in range(n_boot)])
                (a_lo, b_lo), (a_hi, b_hi) = np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)
                row |= {"a_lo": a_lo, "a_hi": a_hi, "b_lo": b_lo, "b_hi": b_hi, "n_boot": n_boot,
                        "formula": f"{formula} (b {b_lo:.2f}-{b_hi:.2f})"}
        rows.append(row)
    return pd.DataFrame(rows, columns=FIT_COLUMNS)


def _draw_boundary(ax, rows: pd.DataFrame, widths: list, Ds: list) -> None:
    """The pass/fail edge as a step line along the cell edges (heatmap coordinates: cell centres at integers)."""
    ys = []
    for w in widths:
        r = rows[rows["hidden_size"] == w]
        if r.empty:
            ys.append(math.nan)
        elif r["status"].iloc[0] in ("passes_everywhere", "passes_where_run", "no_cells"):
            ys.append(len(Ds) - 0.5)
        else:
            ys.append(Ds.index(r["D_fail"].iloc[0]) - 0.5)
    xs = np.repeat(np.arange(len(widths) + 1) - 0.5, 2)[1:-1]
    ax.plot(xs, np.repeat(ys, 2), color="cyan", lw=2.5, solid_capstyle="butt")


def _draw_fit(ax, fit: pd.Series, rows: pd.DataFrame, widths: list, Ds: list) -> None:
    def to_y(logD):  # log D -> row position, piecewise linear (extrapolated) between the grid's Ds
        return _position(logD, np.log(Ds))

    def to_x(logw):
        return _position(logw, np.log(widths))

    star = rows[rows["D_star"].notna()]
    ax.plot(to_x(np.log(star["hidden_size"].astype(float))), to_y(np.log(star["D_star"].astype(float))), "o",
            color="cyan", mec="k", ms=6, zorder=5)
    if "n_seeds" in rows:
        ranged = rows[rows["n_seeds"] > 1]
        for _, r in ranged.iterrows():  # beside the dot, black with caps: visible on the cyan step line
            x = to_x(np.log(float(r["hidden_size"]))) + 0.28
            lo, hi = to_y(np.log([r["D_star_min"], r["D_star_max"]]))
            ax.errorbar([x], [(lo + hi) / 2], yerr=[[(hi - lo) / 2]], fmt="none", ecolor="k", elinewidth=1.8,
                        capsize=3, zorder=6)
    if math.isfinite(fit["b"]):
        w = np.geomspace(min(widths), max(widths), 50)
        ax.plot(to_x(np.log(w)), to_y(np.log(fit["a"] * w ** fit["b"])), "--", color="w", lw=1.5)


def _position(v, grid: np.ndarray) -> np.ndarray:
    """Heatmap position of log values v on a log grid (cell centres at 0, 1, ...), extrapolated linearly."""
    v = np.asarray(v, float)
    if len(grid) < 2:
        return np.zeros_like(v)
    pos = np.interp(v, grid, np.arange(len(grid)))
    lo, hi = (grid[1] - grid[0]), (grid[-1] - grid[-2])
    pos = np.where(v < grid[0], (v - grid[0]) / lo, pos)
    return np.where(v > grid[-1], len(grid) - 1 + (v - grid[-1]) / hi, pos)


@register("phase_diagram")
def fig_phase_diagram(summary: pd.DataFrame, study_dir: Path, metric: str = METRIC,
                      seeds_study: str | None = None):
    """One heatmap per target: log10 nn_dist over width x D (mean over seeds); the step line is the 3x-x
    boundary, dots its interpolated D* (bars: the range over seeds), dashed the power-law fit (printed, with
    its bootstrap interval over seeds). The seeds of the sibling study ``seeds_study`` (default: this study's
    name + ``_seeds``, e.g. toy_phase_seeds beside toy_phase, none beside toy_phase_fast) are added when its
    summary.csv exists. Writes boundary.csv and boundary_fit.csv."""
    seeds_study = seeds_study or f"{Path(study_dir).name}_seeds"
    extra = Path(study_dir).parent / seeds_study / "summary.csv"
    if extra.is_file() and Path(study_dir).name != seeds_study:
        summary = pd.concat([summary, pd.read_csv(extra)], ignore_index=True).drop_duplicates(
            [c for c in ("hidden_size", "D", "pred", "seed", "steps", "metric") if c in summary.columns])
    cells = cell_table(summary, metric)
    by_seed = boundary_by_seed(summary, metric) if "seed" in summary.columns else None
    boundary, widths = boundary_table(summary, metric, by_seed), sorted(cells.index.get_level_values(0).unique())
    fit = fit_boundary(boundary, by_seed) if not boundary.empty else pd.DataFrame(columns=FIT_COLUMNS)
    io.save_table(Path(study_dir) / "boundary.csv", boundary)
    io.save_table(Path(study_dir) / "boundary_fit.csv", fit)
    Ds = sorted(cells.index.get_level_values(1).unique())
    preds = [p for p in PRED_ORDER if p in cells.columns]
    finite = cells.replace(np.inf, np.nan)
    vmin, vmax = np.log10(max(finite.min().min(), 1e-3)), np.log10(max(finite.max().max(), 1.0))
    fig, axes = plt.subplots(1, len(preds), figsize=(4.3 * len(preds), 4.0), squeeze=False)
    for ax, pred in zip(axes[0], preds):
        grid = cells[pred].unstack("hidden_size").reindex(index=Ds, columns=widths)
        im = ax.imshow(np.log10(grid.clip(lower=1e-6).to_numpy(float)), origin="lower", cmap="magma_r",
                       vmin=vmin, vmax=vmax, aspect="auto")
        for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
            ax.text(j, i, "" if np.isnan(v) else f"{v:.3g}", ha="center", va="center", fontsize=7,
                    color="w" if np.isfinite(v) and np.log10(max(v, 1e-6)) > (vmin + vmax) / 2 else "k")
        if pred == "x":
            for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
                if v > 0.1:  # x-prediction is expected under 0.1 everywhere: outline where it is not
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="cyan", lw=2))
        else:
            rows = boundary[boundary["target"] == pred]
            _draw_boundary(ax, rows, widths, Ds)
            _draw_fit(ax, fit[fit["target"] == pred].iloc[0], rows, widths, Ds)
        ax.set_xticks(range(len(widths)), [str(w) for w in widths])
        ax.set_yticks(range(len(Ds)), [str(D) for D in Ds])
        ax.set_xlabel("MLP width (hidden_size)")
        ax.set_ylabel("ambient dimension D")
        formula = "" if pred == "x" else "\n" + fit.loc[fit["target"] == pred, "formula"].iloc[0]
        ax.set_title(f"{pred}-prediction: {metric}{formula}", color=PRED_COLORS[pred], fontsize=10)
    fig.subplots_adjust(wspace=0.35)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=f"log10 {metric}")
    runs = summary.drop_duplicates("run_id")
    steps = sorted(runs["steps"].unique()) if "steps" in runs else []
    fig.suptitle(f"{runs['dist'].iloc[0]} (d = {runs['d'].iloc[0]}, k = 1) in D dims, v-loss, "
                 f"{'/'.join(map(str, steps))} steps: boundary where nn_dist > {FACTOR:g} x x-prediction's", y=1.02)
    return fig


@register("phase_vs_width")
def fig_phase_vs_width(summary: pd.DataFrame, study_dir: Path, metric: str = METRIC):
    """nn_dist against width, one line per D, one panel per target (log-log)."""
    cells = cell_table(summary, metric).replace(np.inf, np.nan)
    preds = [p for p in PRED_ORDER if p in cells.columns]
    Ds = sorted(cells.index.get_level_values(1).unique())
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(Ds)))
    fig, axes = plt.subplots(1, len(preds), figsize=(4.0 * len(preds), 3.4), squeeze=False, sharey=True)
    for ax, pred in zip(axes[0], preds):
        for c, D in zip(colors, Ds):
            s = cells[pred].xs(D, level="D").sort_index()
            ax.plot(s.index, s.values, "o-", color=c, label=f"D = {D}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("MLP width")
        ax.set_title(f"{pred}-prediction", color=PRED_COLORS[pred])
    axes[0, 0].set_ylabel(metric)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


@register("phase_steps")
def fig_phase_steps(summary: pd.DataFrame, study_dir: Path, metric: str = METRIC, base_study: str = "toy_phase"):
    """The deciding cells at more steps: nn_dist against training steps, one line per (target, width, D),
    the 2000-step points taken from the sibling study ``toy_phase`` (its summary.csv) when present."""
    df = summary[summary["metric"] == metric]
    base = Path(study_dir).parent / base_study / "summary.csv"
    if base.is_file():
        other = pd.read_csv(base)
        other = other[other["metric"] == metric]
        keys = df[["hidden_size", "D", "pred"]].drop_duplicates()
        df = pd.concat([df, other.merge(keys, on=["hidden_size", "D", "pred"])], ignore_index=True)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for (pred, w, D), g in df.groupby(["pred", "hidden_size", "D"]):
        s = g.groupby("steps")["value"].mean()
        ls = {512: "-", 2048: "--"}.get(D, ":")
        ax.plot(s.index, s.values, "o" + ls, color=PRED_COLORS[pred], alpha=0.4 + 0.6 * (w >= 1024),
                label=f"{pred}, width {w}, D {D}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Deciding cells: more steps", fontsize=10)
    fig.tight_layout()
    return fig
