"""`python -m manifold_lab report`: the results gallery ``results/README.md``, plain Markdown that renders on
any git host. Per study with a summary: its question in one line, its grid, grid points done out of the
total and the seeds, its figures (links relative to results/), a compact table (mean over seeds, min–max
where there are several), the paper's numbers beside ours where the paper has them, the study's notes
(``results/<study>/NOTES.md``, written by hand: what was measured and what it shows) and provenance (the
commit and date of the summary, the processor where recorded, the summed run time). The study runner
regenerates it after each study.
"""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pandas as pd

from manifold_lab import explore, io, paper, paths
from manifold_lab.studies import results

ORDER = ("toy_fig2", "toy_pred_loss", "toy_preconditioner", "image_pred_loss", "image_width", "image_patch",
         "image_bottleneck", "image_noise_shift", "toy_phase", "toy_phase_fast", "toy_phase_long", "toy_intrinsic_dim",
         "image_intrinsic_dim", "toy_memorisation", "toy_sample_complexity", "image_skip", "toy_skip",
         "toy_data_scale", "toy_phase_seeds")


def fmt(x) -> str:
    """A number in 3 significant digits (integers as they are); NaN as an empty cell."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, (int,)) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e6):
        return str(int(x))
    return f"{x:.3g}"


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame (index included) as a Markdown table."""
    df = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    head = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(v if isinstance(v, str) else fmt(v) for v in row) + " |")
    return "\n".join(lines)


def compact_table(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The study's headline metric, rows x cols, as 'mean (min–max)' over seeds where there are several."""
    metric, rows, cols = explore.default_view(df)
    mean = explore.table(df, metric, rows, cols)
    if explore.table(df, metric, rows, cols, agg="count").max().max() <= 1:
        return metric, mean
    lo, hi = explore.table(df, metric, rows, cols, agg="min"), explore.table(df, metric, rows, cols, agg="max")
    text = mean.copy().astype(object)
    for r in mean.index:
        for c in mean.columns:
            text.loc[r, c] = "" if pd.isna(mean.loc[r, c]) else \
                f"{fmt(mean.loc[r, c])} ({fmt(lo.loc[r, c])}–{fmt(hi.loc[r, c])})"
    return metric, text


def _git(args: list[str]) -> str:
    try:
        return subprocess.run(["git", *args], cwd=paths.project_root(), capture_output=True, text=True, check=False,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _run_time_s(df: pd.DataFrame) -> float:
    """Seconds summed over the runs of a tidy summary: each run's :func:`results.run_seconds` (wall_s, else
    train_s + sample_s; a run with neither counts 0)."""
    if df.empty or "run_id" not in df:
        return 0.0
    runs = (dict(zip(rows["metric"], rows["value"])) for _, rows in df.groupby("run_id", sort=False))
    return float(sum(results.run_seconds(m)[0] or 0.0 for m in runs))


def provenance(study: str, results_dir=None) -> str:
    """Commit and date of the summary (git), the processor (results/<study>/provenance.json, where recorded),
    and the run time summed over the runs (wall_s, else train_s + sample_s)."""
    d = explore.study_dir(study, results_dir)
    log = _git(["log", "-1", "--format=%h %cs", "--", str((d / "summary.csv").resolve())])
    prov = io.read_json(d / "provenance.json") if (d / "provenance.json").is_file() else {}
    df = explore.read_summary(study, results_dir)
    wall = _run_time_s(df)
    parts = [f"commit {log.replace(' ', ', ')}" if log else "not committed yet",
             f"processor {prov['processor']}" if prov.get("processor") else "processor not recorded",
             f"run time {wall / 3600:.2f} h summed over the runs" if wall else "run time not recorded"]
    return "; ".join(parts)



def section(study: str, results_dir=None) -> str:
    """The gallery's Markdown for one study (links relative to the results folder)."""
    st = explore.status(study, results_dir)
    s = explore.spec(study, results_dir)
    out = [f"## {study}", "", st["question"] or "(no study YAML)", ""]
    if s is not None:
        out += [f"Grid: {explore.grid_text(s)}.", ""]
    seeds = ", ".join(str(x) for x in st["seeds"]) or "-"
    beyond = f", plus {st['beyond_grid']} runs beyond it (e.g. more seeds)" if st["beyond_grid"] else ""
    out += [(f"Done: **{st['done']} of {st['total']}** grid points{beyond}; seeds {seeds}. "
             f"Tidy table: [`{study}/summary.csv`]({study}/summary.csv)."), ""]
    out += [f"![{p.stem}]({study}/{p.name})\n" for p in explore.figures(study, results_dir)]
    df = explore.load_summary(study, results_dir)
    metric, tab = compact_table(df)
    keys = [*tab.index.names, tab.columns.name]
    sel = df[df["metric"] == metric]
    over = [c for c in explore.parameters(sel) if c not in keys and sel.groupby(keys)[c].nunique().max() > 1]
    agg = f"mean (min–max) over {', '.join(over)}" if tab.dtypes.eq(object).any() else "one run per cell"
    out += [f"`{metric}` ({agg}; rows {', '.join(tab.index.names)}, columns {tab.columns.name}):", "", md_table(tab), ""]
    theirs = explore.paper_numbers(study)
    if not theirs.empty:
        b = explore.beside_paper(study, metric, results_dir)
        out += [f"Beside the paper ({theirs.attrs['source']}; not the same instrument, compare the ordering):", "",
                md_table(b.drop(columns=[f"{metric}_min", f"{metric}_max"])), ""]
    notes = explore.study_dir(study, results_dir) / "NOTES.md"
    if notes.is_file():
        out += [notes.read_text().strip(), ""]
    out += [f"Provenance: {provenance(study, results_dir)}.", ""]
    return "\n".join(out)


def gallery(results_dir=None) -> str:
    """The whole results/README.md."""
    studies = explore.list_studies(results_dir)
    ordered = [s for s in ORDER if s in studies] + [s for s in studies if s not in ORDER]
    head = ["# Results gallery", "",
            ("Generated by `python -m manifold_lab report` (and by the study runner after each study) from "
             "each study's `summary.csv`, its figures and its hand-written `NOTES.md`; do not edit by hand. "
             "Convention: t = 1 is clean data. Explore the same tables in JupyterLab with "
             "`notebooks/explore.ipynb` (`manifold_lab.explore`)."), "",
            "| study | question | done |", "|---|---|---|"]
    for s in ordered:
        try:
            st = explore.status(s, results_dir)
            head.append(f"| [{s}](#{s}) | {st['question']} | {st['done']} of {st['total']} |")
        except Exception as e:  # noqa: BLE001 - reported in the study's section below
            head.append(f"| [{s}](#{s}) | could not read: {type(e).__name__} | |")
    body = []
    for s in ordered:
        try:
            body.append(section(s, results_dir))
        except Exception as e:  # noqa: BLE001 - one unreadable study must not cost the gallery of the others
            body.append(f"## {s}\n\ncould not summarise: {type(e).__name__}: {e}\n")
    return ("\n".join(head) + "\n\n" + paper_map(set(studies)) + "\n" + "\n".join(body)
            + analyses(results_dir, set(studies)))


def paper_map_table(studies: set[str], link_prefix: str = "") -> str:
    """The paper map (manifold_lab.paper.PAPER_MAP) as a markdown table: item, what, the laptop-scale study
    (linked to ``{link_prefix}#{study}`` where it has results, else marked not run), the cluster study and its
    expected cost, or why a side has none. The gallery uses it with no prefix, the README with
    ``results/README.md`` (tests/test_paper_map.py checks the README holds this exact table)."""
    def cpu(s):
        if s is None:
            return ""
        return f"[`{s}`]({link_prefix}#{s})" if s in studies else f"`{s}` (not run here)"
    lines = ["| item | what | laptop study | cluster study | expected cost, or why no study |", "|---|---|---|---|---|"]
    for row in paper.PAPER_MAP:
        full = f"`{row['full']}`" if row["full"] else ""
        note = "; ".join(x for x in (row["cost"], row.get("none") or "") if x)
        lines.append(f"| {row['item']} | {row['what']} | {cpu(row['cpu'])} | {full} | {note} |")
    return "\n".join(lines) + "\n"


def paper_map(studies: set[str]) -> str:
    """The gallery's section "The paper, item by item": a lead paragraph and `paper_map_table`."""
    lead = ["## The paper, item by item", "",
            "Every numbered figure and table of the paper and the study that regenerates it: on a laptop, and as "
            "a cluster study (`python -m manifold_lab study studies/<study>.yaml --backend slurm --set "
            "data_path=TRAIN`) with its expected cost on 8 H100 (`manifold_lab.cost`: JiT-B/16 from a measured "
            "rate, the others estimates).", ""]
    return "\n".join(lead) + "\n" + paper_map_table(studies)


def analyses(results_dir, studies: set[str]) -> str:
    """Folders of results/ made by an analysis over other studies (e.g. ``bridge``: no grid, no summary.csv):
    their figures, their tables and their NOTES.md, so every committed figure is in the gallery."""
    root = Path(results_dir) if results_dir is not None else paths.results_dir()
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in studies and not p.name.startswith(".")):
        figs, tables = sorted(d.glob("fig_*.png")), sorted(d.glob("*.csv"))
        if not figs:
            continue
        out += [f"## {d.name}", "", "An analysis over other studies' summaries (no grid of its own). Tables: "
                + (", ".join(f"[`{d.name}/{t.name}`]({d.name}/{t.name})" for t in tables) or "none") + ".", ""]
        out += [f"![{f.stem}]({d.name}/{f.name})\n" for f in figs]
        if (d / "NOTES.md").is_file():
            out += [(d / "NOTES.md").read_text().strip(), ""]
    return ("\n" + "\n".join(out)) if out else ""


def write_gallery(results_dir=None) -> Path:
    """Write ``<results>/README.md`` atomically; returns its path."""
    root = Path(results_dir) if results_dir is not None else paths.results_dir()
    return io.write_text(root / "README.md", gallery(root))


def register(sub) -> None:
    p = sub.add_parser("report", help="write the results gallery results/README.md", allow_abbrev=False,
                       description="Write <results>/README.md: per study its question, grid, status, figures, "
                                   "a compact table, the paper's numbers where it has them, notes and provenance.")
    p.add_argument("--results-dir", default=None, help="the results folder (default: the project's results/)")
    p.add_argument("--paper-map", action="store_true",
                   help="print the paper map table as the project's README holds it (links into results/README.md) "
                        "and write nothing")
    p.set_defaults(func=_main)


def _main(args) -> None:
    if args.paper_map:
        print(paper_map_table(set(explore.list_studies(args.results_dir)), link_prefix="results/README.md"), end="")
    else:
        print(write_gallery(args.results_dir))
