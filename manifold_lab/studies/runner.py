"""`python -m manifold_lab study studies/<name>.yaml`: run a study grid with papermill, then summarise.

Each grid point executes the study's notebook once (papermill, kernel ``python3``) with the point's
parameters plus ``out_dir`` and ``threads``, after claiming it (:mod:`manifold_lab.studies.claims`), so two
runners on one study never run a point twice. Points already complete are skipped. ``--backend local`` runs
points on a pool of ``--workers`` (one torch thread each); ``--backend slurm`` submits them as one SLURM job
array through submitit, at most ``--workers`` at once, with the study's ``resources:``. Afterwards
``summary.csv``/``summary.parquet`` (tidy) and every figure listed in the YAML are written.
``--status`` prints one line per point (:mod:`manifold_lab.studies.status`) and collects what is finished.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from manifold_lab import io
from manifold_lab.checks import ConfigError, check_choice
from manifold_lab.studies import backends, interrupt, results
from manifold_lab.studies.spec import StudySpec, check_against_notebook, load_study
from manifold_lab.studies.status import format_kept_aside, format_status, study_status

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def run_study(spec: StudySpec, results_dir: str | Path = "results", *, workers: int | None = None,
              backend: str = "local", wait: bool = True, progress: bool = True, figures: bool = True) -> dict:
    """Run every unfinished grid point of ``spec`` on ``backend`` (local or slurm); write the summary and
    figures. Returns a report with the lists ``ran``, ``skipped`` (done before), ``elsewhere`` (done by
    another runner meanwhile), ``failed`` and ``submitted`` (slurm), and ``wall_s``."""
    check_choice("backend", backend, backends.BACKENDS)
    check_against_notebook(spec)
    resources = backends.check_resources(spec.resources, str(spec.source)) if backend == "slurm" else None
    study_dir = Path(results_dir) / spec.study
    study_dir.mkdir(parents=True, exist_ok=True)
    points = [(spec.format_id(p), p) for p in spec.points()]
    current = {rid: results.is_current(results.run_dir(study_dir, rid), p) for rid, p in points}
    todo = [(rid, p) for rid, p in points if not current[rid]]
    workers = max(1, min(workers or spec.workers, len(todo) or 1))
    start = time.perf_counter()
    bar = _bar(spec, len(points), len(points) - len(todo)) if progress else None
    with _one_thread_per_worker(workers > 1 and backend == "local"):
        if backend == "local":
            rep = backends.run_local(spec.notebook, study_dir, todo, workers=workers, threads=1 if workers > 1 else 0,
                                     bar=bar)
        else:
            mine, held = backends.submit_slurm(spec.notebook, study_dir, spec.study, todo, workers=workers,
                                               resources=resources)
            rep = backends.new_report() | {"submitted": [rid for rid, _ in mine]}
            if wait:
                backends.wait_slurm(study_dir, mine, held, rep, bar)
    if bar is not None:
        bar.close()
    rep.update(skipped=[rid for rid, _ in points if current[rid]], wall_s=time.perf_counter() - start,
               study_dir=str(study_dir))
    collect(spec, study_dir, points, figures=figures)
    return rep


def collect(spec: StudySpec, study_dir: Path, points: list, *, figures: bool = True):
    """The summary table of every finished point (summary.csv, summary.parquet) and the study's figures."""
    summary = results.summarise(spec.study, study_dir, points)
    if not summary.empty:
        results.write_summary(summary, study_dir)
        if figures:
            render_figures(spec, summary, study_dir)
    return summary


def _bar(spec: StudySpec, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"study {spec.study}", unit="run")


@contextlib.contextmanager
def _one_thread_per_worker(on: bool):
    """With several local workers, each papermill kernel uses one torch thread (they inherit the variables)."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    if on:
        os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def render_figures(spec: StudySpec, summary, study_dir: Path) -> list[Path]:
    """Draw each figure the study lists from its summary table into study_dir/fig_<name>.png."""
    from manifold_lab.plots import figure_registry

    reg = figure_registry()
    return [io.save_figure(study_dir / f"fig_{name}.png", reg[name](summary, study_dir)) for name in spec.figures]


def register(sub) -> None:
    p = sub.add_parser("study", help="run a study grid (papermill) and render its figures", allow_abbrev=False,
                       description="Expand a studies/*.yaml grid, execute its notebook once per point into "
                                   "<results>/<study>/<run_id>/, skip finished points, write summary.csv and figures.")
    p.add_argument("yaml", help="the study file, e.g. studies/toy_fig2.yaml")
    p.add_argument("--workers", type=int, default=None,
                   help="runs at once (default: the YAML's workers); with device=cuda they share the visible GPUs "
                        "round-robin, one GPU per kernel: several small runs per GPU, memory permitting")
    p.add_argument("--backend", default="local", choices=backends.BACKENDS,
                   help="local: a pool on this machine; slurm: one job array through submitit")
    p.add_argument("--no-wait", action="store_true", help="slurm: submit and return; a later call collects")
    p.add_argument("--status", action="store_true", help="one line per point (done, pending, running, queued, "
                   "failed, stale); writes the summary and figures of what is finished")
    p.add_argument("--plan", action="store_true", help="run nothing: print the points to run, the expected time "
                   "per point and in all (from recorded times, scaled by this machine's matmul rate) and the device")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (YAML value); on a grid key it replaces the list, e.g. seed=[0,1,2]")
    p.add_argument("--results-dir", default="results", help="where <study>/ is written")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--figures-only", action="store_true",
                   help="run nothing: redraw the figures from the existing summary.csv")
    p.set_defaults(func=_main)


def _main(args) -> int:
    if args.workers is not None and args.workers < 1:      # checked before anything is read or created
        raise ConfigError(f"--workers must be a positive integer (runs at once), got {args.workers}")
    spec = load_study(args.yaml)
    spec.override(args.overrides)
    if args.figures_only:
        import pandas as pd

        study_dir = Path(args.results_dir) / spec.study
        if not (study_dir / "summary.csv").is_file():
            raise FileNotFoundError(f"no summary to draw from: {study_dir / 'summary.csv'} (run the study first)")
        paths = render_figures(spec, pd.read_csv(study_dir / "summary.csv"), study_dir)
        print("\n".join(str(p) for p in paths))
        return 0
    if args.plan:                                         # reads only: runs and writes nothing
        from manifold_lab.studies.plan import plan

        check_against_notebook(spec)
        print(plan(spec, args.results_dir, workers=args.workers, backend=args.backend)[0])
        return 0
    if args.status:
        check_against_notebook(spec)
        study_dir = Path(args.results_dir) / spec.study
        points = [(spec.format_id(p), p) for p in spec.points()]
        print(format_status(study_status(study_dir, points)))
        if format_kept_aside(study_dir):
            print(format_kept_aside(study_dir))
        try:
            collect(spec, study_dir, points)
        except OSError as e:             # a read-only results folder: --status only needs to read
            print(f"warning: the summary and figures were not written ({e.strerror or e}: {e.filename or study_dir})",
                  file=sys.stderr)
        return 0
    with interrupt.sigint_stops(args.backend):      # Ctrl-C: stop, summarise what finished, exit 130
        report = run_study(spec, args.results_dir, workers=args.workers, backend=args.backend,
                           wait=not args.no_wait, progress=not args.no_progress)
        print(_count_line(spec.study, report, args.backend))
        if interrupt.requested():
            hint = interrupt.scancel_hint() if args.backend == "slurm" else ""
            print(f"interrupted by Ctrl-C: {len(report['interrupted'])} point(s) not finished"
                  + (f"; the SLURM jobs keep running (`{hint}` cancels them)" if hint else ""), file=sys.stderr)
            return 130
    return 1 if report["failed"] or report.get("refused") else 0


def _count_line(study: str, report: dict, backend: str) -> str:
    done_elsewhere = f", {len(report['elsewhere'])} done by another runner" if report["elsewhere"] else ""
    submitted = f", submitted {len(report['submitted'])}" if backend == "slurm" else ""
    stopped = f", {len(report['interrupted'])} not finished (Ctrl-C)" if report.get("interrupted") else ""
    refused = (f", refused {len(report['refused'])} (held by another runner with other parameter values)"
               if report.get("refused") else "")
    return (f"study {study}: ran {len(report['ran'])}, skipped {len(report['skipped'])} finished{done_elsewhere}"
            f"{submitted}, failed {len(report['failed'])}{refused}{stopped} in {report['wall_s']:.0f} s -> {report['study_dir']}")
