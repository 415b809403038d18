"""Look at what the studies produced, without training anything (the API behind notebooks/explore.ipynb).

A study's results are ``<results>/<study>/summary.csv`` (or ``.parquet``; tidy: study, run_id, one column
per parameter, metric, value; one row per run and metric), its figures ``fig_*.png`` and, where the runs
were made on this machine, one folder per run (``metrics.json``, ``config.json``, ``curve.csv``,
``samples.npz``, ...). Committed results hold only the summaries and figures.

    from manifold_lab import explore
    explore.list_studies()                              # studies with results
    df = explore.load_summary("toy_fig2")               # tidy, derived settings (token_dim, k, ...) as columns
    explore.wide(df)                                    # one row per run, one column per metric
    explore.table(df, "nn_dist", rows="D", cols="pred") # mean over seeds
    explore.status("toy_fig2")                          # done / total grid points, seeds
    explore.runs("toy_fig2")                            # run ids, parameters, folder, on this machine?
    explore.draw("toy_fig2", "metric_vs_D")             # any registered figure, drawn from the summary
    explore.beside_paper("image_pred_loss", "fd_feat")  # ours next to the paper's FID where it has one
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from manifold_lab import io, paper, paths

ID_COLUMNS = ("study", "run_id", "metric", "value")
# Settings a run derives from its parameters (not measurements). Older summaries carry them as metric rows;
# load_summary turns such rows into columns, so both forms read the same.
DERIVED_SETTINGS = ("token_dim", "img_size", "params", "k")


def _results(results_dir) -> Path:
    return Path(results_dir) if results_dir is not None else paths.results_dir()


def study_dir(study: str, results_dir=None) -> Path:
    return _results(results_dir) / study


def list_studies(results_dir=None) -> list[str]:
    """Names of the studies that have a summary under ``results_dir`` (default: the project's results/)."""
    root = _results(results_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (p / "summary.csv").is_file() or (p / "summary.parquet").is_file())


def read_summary(study: str, results_dir=None) -> pd.DataFrame:
    """The summary as written (parquet if present, else csv); FileNotFoundError naming the folder if none."""
    d = study_dir(study, results_dir)
    if (d / "summary.parquet").is_file():
        return pd.read_parquet(d / "summary.parquet")
    if (d / "summary.csv").is_file():
        return pd.read_csv(d / "summary.csv")
    have = ", ".join(list_studies(results_dir)) or "none"
    raise FileNotFoundError(f"no summary for study {study!r} in {d} (studies with results: {have})")


def tidy(summary: pd.DataFrame) -> pd.DataFrame:
    """Metric rows named like a derived setting (DERIVED_SETTINGS) become columns of their run; the rest stays
    one row per run and metric. A summary that already has them as columns passes through unchanged."""
    derived = summary[summary["metric"].isin(DERIVED_SETTINGS)]
    if derived.empty:
        return summary.reset_index(drop=True)
    cols = derived.pivot_table(index="run_id", columns="metric", values="value", aggfunc="first")
    cols = cols.apply(lambda c: c.astype("Int64") if (c.dropna() % 1 == 0).all() else c)
    rest = summary[~summary["metric"].isin(DERIVED_SETTINGS)].drop(columns=list(cols.columns), errors="ignore")
    out = rest.merge(cols, left_on="run_id", right_index=True, how="left")
    order = [c for c in out.columns if c not in ("metric", "value")] + ["metric", "value"]
    return out[order].reset_index(drop=True)


def load_summary(study: str, results_dir=None) -> pd.DataFrame:
    """The study's tidy table: study, run_id, one column per parameter and derived setting, metric, value."""
    return tidy(read_summary(study, results_dir))


def parameters(df: pd.DataFrame) -> list[str]:
    """The parameter (and derived-setting) columns of a tidy table."""
    return [c for c in df.columns if c not in ID_COLUMNS]


def wide(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its parameters, then one column per metric."""
    index = ["run_id"] + parameters(df)
    keyed = df.assign(**{c: df[c].astype(object).where(df[c].notna(), "") for c in index})
    out = keyed.pivot_table(index=index, columns="metric", values="value", aggfunc="first").reset_index()
    out.columns.name = None
    return out


def table(df: pd.DataFrame, metric: str, rows, cols, agg: str = "mean", **where) -> pd.DataFrame:
    """``metric`` pivoted to ``rows`` x ``cols`` (a name or a list), aggregated over the rest (seeds) with
    ``agg`` (mean, min, max, median, count); ``where`` keeps rows whose column equals the value."""
    have = sorted(df["metric"].unique())
    if metric not in have:
        raise KeyError(f"no metric {metric!r} in this summary; it has {', '.join(have)}")
    sel = df[df["metric"] == metric]
    for col, val in where.items():
        sel = sel[sel[col] == val]
    return sel.pivot_table(index=rows, columns=cols, values="value", aggfunc=agg)


def _yaml(study: str, results_dir=None) -> Path:
    """``studies/<study>.yaml`` beside the results folder when it has one, else the project's."""
    beside = _results(results_dir).resolve().parent / "studies" / f"{study}.yaml"
    return beside if beside.is_file() else paths.studies_dir() / f"{study}.yaml"


def spec(study: str, results_dir=None):
    """The study's YAML (``studies/<study>.yaml``), or None when there is none."""
    from manifold_lab.studies.spec import load_study

    path = _yaml(study, results_dir)
    return load_study(path) if path.is_file() else None


def question(study: str, results_dir=None) -> str:
    """One line: the study YAML's first comment line, else the first sentence of its description."""
    path = _yaml(study, results_dir)
    if not path.is_file():
        return ""
    first = path.read_text().splitlines()[:1]
    if first and first[0].startswith("#"):
        return first[0].lstrip("# ").strip()
    s = spec(study, results_dir)
    return s.description.split(". ")[0].strip() if s else ""


def grid_text(s) -> str:
    """The grid as ``D: 2, 8, 16, 512 × pred: x, eps, v``; a linked axis lists its entries."""
    def value(v):
        return "{" + ", ".join(f"{k}: {x}" for k, x in v.items()) + "}" if isinstance(v, dict) else str(v)
    return " × ".join(f"{k}: {', '.join(value(v) for v in vals)}" for k, vals in s.grid.items())


def runs(study: str, results_dir=None) -> pd.DataFrame:
    """One row per run of the grid or the summary: run_id, the grid's parameters, in_grid, in_summary,
    folder (its path), on_disk (the run folder is complete on this machine), status (done or pending)."""
    from manifold_lab.studies import results

    d = study_dir(study, results_dir)
    try:
        summary = read_summary(study, results_dir)
    except FileNotFoundError:
        summary = pd.DataFrame(columns=list(ID_COLUMNS))
    s = spec(study, results_dir)
    grid = [(s.format_id(p), p) for p in s.points()] if s else []
    rows = {rid: {"run_id": rid, **p, "in_grid": True} for rid, p in grid}
    params = [c for c in summary.columns if c not in ID_COLUMNS]
    for rid, first in summary.drop_duplicates("run_id").set_index("run_id")[params].iterrows():
        rows.setdefault(rid, {"run_id": rid, **first.to_dict(), "in_grid": False})
    out = pd.DataFrame(list(rows.values()))
    if out.empty:
        return out
    out["in_summary"] = out["run_id"].isin(set(summary["run_id"]))
    out["folder"] = [str(results.run_dir(d, r)) for r in out["run_id"]]
    out["on_disk"] = [results.is_complete(Path(f)) for f in out["folder"]]
    out["status"] = ["done" if a or b else "pending" for a, b in zip(out["in_summary"], out["on_disk"])]
    return out


def status(study: str, results_dir=None) -> dict:
    """Where a study stands: grid points done / total, the seeds in its summary, runs beyond the grid (e.g.
    extra seeds run with --set), the pending run ids, and how many run folders are on this machine."""
    r = runs(study, results_dir)
    grid = r[r["in_grid"]] if not r.empty else r
    summary_runs = r[r["in_summary"]] if not r.empty else r
    seeds = sorted(summary_runs["seed"].dropna().unique().tolist()) if "seed" in r.columns else []
    return {"study": study, "question": question(study, results_dir), "total": len(grid),
            "done": int((grid["status"] == "done").sum()) if len(grid) else 0,
            "pending": grid.loc[grid["status"] == "pending", "run_id"].tolist() if len(grid) else [],
            "runs_in_summary": len(summary_runs), "beyond_grid": int((~r["in_grid"]).sum()) if len(r) else 0,
            "seeds": [int(x) if float(x).is_integer() else x for x in seeds],
            "on_disk": int(r["on_disk"].sum()) if len(r) else 0}


def status_line(st: dict) -> str:
    seeds = ", ".join(str(s) for s in st["seeds"]) or "-"
    beyond = f", {st['beyond_grid']} more beyond the grid" if st["beyond_grid"] else ""
    return (f"{st['study']}: {st['done']} of {st['total']} grid points done{beyond}; seeds {seeds}; "
            f"{st['on_disk']} run folders on this machine")


def run_folder(study: str, run_id: str, results_dir=None) -> Path:
    """The folder of one finished run; FileNotFoundError when it is not on this machine."""
    d = study_dir(study, results_dir) / run_id
    if not (d / "metrics.json").is_file():
        raise FileNotFoundError(f"run {run_id!r} of {study} is not on this machine ({d}): committed results hold "
                                f"only summaries and figures; run the study to make its run folders")
    return d


def load_curve(study: str, run_id: str, results_dir=None) -> pd.DataFrame:
    """The run's loss curve (curve.csv: one row per step)."""
    return pd.read_csv(run_folder(study, run_id, results_dir) / "curve.csv")


def load_samples(study: str, run_id: str, results_dir=None) -> dict:
    """The run's samples.npz as a dict of arrays (toy: samples N x D, P D x d, reference; images: N x C x H x W)."""
    import numpy as np

    path = run_folder(study, run_id, results_dir) / "samples.npz"
    if not path.is_file():
        raise FileNotFoundError(f"run {run_id!r} of {study} has no samples.npz ({path.parent})")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_metrics(study: str, run_id: str, results_dir=None) -> dict:
    return io.read_json(run_folder(study, run_id, results_dir) / "metrics.json")


def figures(study: str, results_dir=None) -> list[Path]:
    """The study's saved figures (fig_*.png), in the YAML's order where it lists them."""
    d = study_dir(study, results_dir)
    found = sorted(d.glob("fig_*.png"))
    s = spec(study, results_dir)
    order = [f"fig_{n}.png" for n in (s.figures if s else [])]
    return sorted(found, key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))


def draw(study: str, name: str, results_dir=None):
    """Draw the registered figure ``name`` (manifold_lab.plots) from the study's summary; returns the Figure.
    Figures of per-run files (samples, curves) need the run folders on this machine."""
    from manifold_lab.plots import figure_registry

    reg = figure_registry()
    if name not in reg:
        raise KeyError(f"no figure {name!r}; registered: {', '.join(sorted(reg))}")
    try:
        return reg[name](read_summary(study, results_dir), study_dir(study, results_dir))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"figure {name!r} reads per-run files that are not on this machine ({e.filename}); "
                                f"the saved fig_{name}.png shows it (explore.figures)") from None


# The paper's numbers that a study can stand beside: study -> (what, key columns, rows of key values + FID).
def _paper_rows(study: str) -> tuple[str, list[str], list[tuple]]:
    t2 = [(k[0], k[1], k[2], v) for k, v in paper.TABLE2.items()]
    t3 = [(m, p, v) for (m, p), v in paper.TABLE3.items()]
    if study == "image_pred_loss":   # patch 8 (192-d tokens) stands for 256 px / patch 16, patch 2 for 64 px / 4
        return ("Table 2, FID-50K on ImageNet (patch 8 ~ JiT-B/16 at 256 px, patch 2 ~ JiT-B/4 at 64 px)",
                ["patch_size", "loss", "pred"], [({256: 8, 64: 2}[s], lo, pr, v) for s, lo, pr, v in t2])
    if study == "imagenet_pred_loss":
        return ("Table 2, FID-50K", ["config", "loss", "pred"],
                [({256: "jit_b16_in256", 64: "jit_b4_in64"}[s], lo, pr, v) for s, lo, pr, v in t2])
    if study in ("image_noise_shift", "imagenet_noise_shift"):
        return "Table 3, FID-50K on ImageNet (JiT-B/16, 256 px)", ["p_mean", "pred"], t3
    if study == "image_bottleneck":  # our d' = 0 is the plain embedding, the paper's "none"
        return ("Fig. 4, FID-50K on ImageNet (JiT-B/16, 256 px; values read from the plot)", ["bottleneck_dim"],
                [(0 if d is None else d, v) for d, v in paper.FIG4.items() if v is not None])
    return "", [], []


def paper_numbers(study: str) -> pd.DataFrame:
    """The paper's FID for the study's settings, keyed by our parameter names (empty where the paper has none)."""
    what, keys, rows = _paper_rows(study)
    df = pd.DataFrame(rows, columns=[*keys, "paper_fid"])
    df.attrs["source"] = what
    return df


def beside_paper(study: str, metric: str, results_dir=None) -> pd.DataFrame:
    """Ours (``metric``: mean, min, max and count over seeds) beside the paper's FID where it has the setting.
    Not the same instrument: ours is measured at laptop scale; only the ordering is comparable."""
    theirs = paper_numbers(study)
    keys = [c for c in theirs.columns if c != "paper_fid"]
    if not keys:
        raise KeyError(f"the paper has no numbers for {study!r}; it has some for image_pred_loss, "
                       "image_noise_shift, image_bottleneck, imagenet_pred_loss, imagenet_noise_shift")
    df = load_summary(study, results_dir)
    ours = df[df["metric"] == metric].groupby(keys)["value"].agg(["mean", "min", "max", "count"]).reset_index()
    ours.columns = [*keys, f"{metric}_mean", f"{metric}_min", f"{metric}_max", "seeds"]
    if "p_mean" in keys:
        ours["p_mean"], theirs["p_mean"] = ours["p_mean"].round(2), theirs["p_mean"].round(2)
    out = ours.merge(theirs, on=keys, how="left")
    out.attrs["source"] = theirs.attrs["source"]
    return out


PREFERRED_METRICS = ("nn_dist", "fd_feat", "copy_share_proj", "id_twonn_samples_proj_x", "fid")


# The headline view of the committed studies: (metric, rows, cols); rows may be a list of parameters.
VIEWS = {
    "toy_fig2": ("nn_dist", "D", "pred"), "toy_pred_loss": ("nn_dist", ["D", "loss"], "pred"),
    "image_pred_loss": ("fd_feat", ["patch_size", "loss"], "pred"), "image_width": ("fd_feat", "hidden_size", "pred"),
    "image_patch": ("fd_feat", "patch_size", "pred"), "image_bottleneck": ("fd_feat", "bottleneck_dim", "pred"),
    "image_noise_shift": ("fd_feat", "p_mean", "pred"), "toy_phase": ("nn_dist", ["pred", "D"], "hidden_size"),
    "toy_phase_fast": ("nn_dist", ["pred", "D"], "hidden_size"),
    "toy_phase_long": ("nn_dist", ["hidden_size", "D"], "pred"),
    "toy_intrinsic_dim": ("id_twonn_samples_proj_x", ["dist", "d"], "D"),
    "toy_memorisation": ("copy_share_proj", ["D", "pred"], "n_train"),
    "toy_preconditioner": ("nn_dist", ["D", "loss"], "pred"), "image_preconditioner": ("fd_feat", "loss", "pred"),
    "image_skip": ("fd_feat", ["patch_size", "long_skip"], "pred"),
    "toy_skip": ("nn_dist", ["hidden_size", "D", "long_skip"], "pred"),
    "toy_data_scale": ("nn_dist", ["D", "data_scale"], "pred"), "toy_phase_seeds": ("nn_dist", ["hidden_size", "D"], "pred"),
    "toy_sample_complexity": ("copy_share_proj", ["dist", "d"], "n_train"),
}


def default_view(df: pd.DataFrame) -> tuple[str, str | list, str]:
    """A sensible (metric, rows, cols) for a first look: the study's entry of VIEWS, else the headline metric,
    the varied parameter as rows and the prediction target (or the next varied parameter) as columns."""
    study = df["study"].iloc[0] if "study" in df.columns and len(df) else None
    if study in VIEWS and VIEWS[study][0] in set(df["metric"]):
        return VIEWS[study]
    metrics = list(df["metric"].unique())
    metric = next((m for m in PREFERRED_METRICS if m in metrics), metrics[0])
    varied = [c for c in parameters(df) if c != "seed" and c not in DERIVED_SETTINGS and df[c].nunique() > 1]
    cols = "pred" if "pred" in varied else (varied[1] if len(varied) > 1 else "seed")
    rows = [c for c in varied if c != cols]     # every other varied parameter: only seeds are averaged over
    return metric, (rows[0] if len(rows) == 1 else rows or "run_id"), cols


def run_images(study: str, run_id: str, results_dir=None) -> list[Path]:
    """The PNGs a finished run saved (the toy's fig_samples.png, an image run's samples.png, ...)."""
    return sorted(run_folder(study, run_id, results_dir).glob("*.png"))
