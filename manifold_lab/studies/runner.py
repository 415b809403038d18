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
from manifold_lab.config import check_types, config_from_values, defaults
from manifold_lab.studies import backends, interrupt, results
from manifold_lab.studies.spec import RUNNER_PARAMS, StudySpec, check_against_notebook, load_study
from manifold_lab.studies.status import format_kept_aside, format_status, study_status

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def run_study(spec: StudySpec, results_dir: str | Path = "results", *, workers: int | None = None,
              backend: str = "local", wait: bool = True, progress: bool = True, figures: bool = True) -> dict:
    """Run every unfinished grid point of ``spec`` on ``backend`` (local or slurm); write the summary and
    figures. Returns a report with the lists ``ran``, ``skipped`` (done before), ``elsewhere`` (done by
    another runner meanwhile), ``failed`` and ``submitted`` (slurm), and ``wall_s``."""
    check_choice("backend", backend, backends.BACKENDS)
    points = checked_points(spec)
    if backend == "local":
        check_this_machine(spec, points)
    resources = backends.check_resources(spec.resources, str(spec.source)) if backend == "slurm" else None
    study_dir = Path(results_dir) / spec.study
    study_dir.mkdir(parents=True, exist_ok=True)    # only once every point's config is valid
    current = {rid: results.is_current(results.run_dir(study_dir, rid), p, spec.run) for rid, p in points}
    todo = [(rid, p) for rid, p in points if not current[rid]]
    workers = max(1, min(workers or spec.workers, len(todo) or 1))
    start = time.perf_counter()
    bar = _bar(spec, len(points), len(points) - len(todo)) if progress else None
    if backend == "local" and todo:
        from manifold_lab.studies.plan import sgemm_gflops

        sgemm_gflops()   # measured once, before any kernel loads the machine (as --plan measures it idle)
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


def checked_points(spec: StudySpec) -> list[tuple[str, dict]]:
    """The study's points [(run_id, params)], every one checked before anything runs: the notebook knows each
    parameter, and the config of each point builds (its kind's config dataclass: types, values, combinations).
    A bad point -> one ConfigError naming the point, the key, the value and what is allowed."""
    check_against_notebook(spec)
    if spec.run is not None:
        from manifold_lab.runs import registry

        cls = registry.get(spec.run).config
        for params in spec.grid_points():
            values = {k: v for k, v in params.items() if k not in RUNNER_PARAMS}
            check_point(cls, _point_name(spec, params), values, spec.source)
    return [(spec.format_id(p), p) for p in spec.points()]


def check_this_machine(spec: StudySpec, points: list[tuple[str, dict]]) -> None:
    """Local runs: a point asking for bf16 on a CPU without native bf16 (AMX or AVX512-BF16) is one ConfigError
    naming the point, before any folder or kernel (each kernel would refuse it, point after point)."""
    for rid, p in points:
        if str(p.get("precision")) != "bf16":
            continue
        from manifold_lab.device import resolve_device, uses_bf16  # imports torch: only for a bf16 point
        try:
            uses_bf16("bf16", resolve_device(str(p.get("device", "auto"))))
        except ConfigError as e:
            raise ConfigError(f"{spec.source}, point {rid}: {e}") from None


def _point_name(spec: StudySpec, params: dict) -> str:
    """The run id of a point, or its parameters where the id cannot be formatted (a value of a wrong type)."""
    try:
        return spec.format_id(params)
    except ConfigError:
        return ", ".join(f"{k}={v!r}" for k, v in params.items())


def check_point(cls, run_id: str, values: dict, source) -> None:
    """``cls(**values)`` or a ConfigError naming the study, the point, the offending key and value."""
    try:
        config_from_values(cls, values, "")
    except ConfigError as e:
        msg = str(e)
        culprit = _culprit(cls, values, msg)
        if msg.startswith(culprit.split("=")[0] + " must"):   # a type error names its key already
            culprit = ""
        raise ConfigError(f"{source}, point {run_id}: {culprit}{msg}") from None


def _culprit(cls, values: dict, msg: str) -> str:
    """``key=value: `` of the first value that fails on its own with the same message ``msg`` (the others at
    their defaults), or the values that differ from the defaults when only their combination fails."""
    for key, value in values.items():
        try:
            check_types(cls, {key: value}, "")
            cls(**{key: value})
        except (ConfigError, TypeError, ValueError) as e:
            if str(e) == msg:
                return f"{key}={value!r}: "
    base = defaults(cls)
    changed = ", ".join(f"{k}={v!r}" for k, v in values.items() if base.get(k) != v)
    return f"the combination {changed}: " if changed else ""


def study_points(spec: StudySpec, points: list) -> list[tuple[str, dict]]:
    """``points`` (this call's), then every other point of the study's full grid as its YAML states it (a
    narrowing ``--set`` chooses what runs, not what the summary holds)."""
    if spec.source is None or not Path(spec.source).is_file():
        return list(points)
    seen = {rid for rid, _ in points}
    try:
        full = load_study(spec.source)
        extra = [(rid, p) for rid, p in ((full.format_id(p), p) for p in full.points()) if rid not in seen]
    except ConfigError:
        extra = []
    return list(points) + extra


def collect(spec: StudySpec, study_dir: Path, points: list, *, figures: bool = True):
    """The study's summary (summary.csv, summary.parquet) and its figures: every done point of the full grid
    on disk, merged into the existing summary by run id (:func:`results.merge_summary`), so rows of points
    that are not on disk (a fresh clone, a narrowing ``--set``) are kept."""
    kind = _kind(spec)
    fresh = results.summarise(spec.study, study_dir, study_points(spec, points), spec.run,
                              kind.derived if kind else ())
    summary = results.merge_summary(results.read_summary(study_dir), fresh)
    if not summary.empty:
        results.write_summary(summary, study_dir)
        if figures:
            render_figures(spec, summary, study_dir)
        __import__("manifold_lab.report").report.write_gallery(study_dir.parent)  # results/README.md, the gallery
    return summary


def _kind(spec: StudySpec):
    from manifold_lab.runs import registry

    return registry.get(spec.run) if spec.run else None


def _bar(spec: StudySpec, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"study {spec.study}", unit="run")


@contextlib.contextmanager
def _one_thread_per_worker(on: bool):
    """With several local workers, each papermill kernel uses one torch thread (they inherit the variables);
    every kernel draws off-screen (MPLBACKEND=Agg; ipykernel would pick the inline backend)."""
    saved = {k: os.environ.get(k) for k in (*_THREAD_VARS, "MPLBACKEND")}
    os.environ["MPLBACKEND"] = "Agg"
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
    """Draw each figure the study lists from its summary table into study_dir/fig_<name>.png. A figure that
    needs run files not on disk (rows kept from a summary made elsewhere) is kept as it was, said in one line."""
    from manifold_lab.plots import figure_registry
    from manifold_lab.run_files import MissingRunFile

    reg, out = figure_registry(), []
    for name in spec.figures:
        try:
            fig = reg[name](summary, study_dir)
        except MissingRunFile as e:
            import matplotlib.pyplot as plt

            plt.close(plt.gcf())   # the figure it had begun
            print(f"figure {name} not redrawn ({e}); the existing fig_{name}.png is kept", file=sys.stderr)
            continue
        out.append(io.save_figure(study_dir / f"fig_{name}.png", fig))
    return out


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
        if args.backend == "local":          # the estimate stands for a machine that can run it; say this one cannot
            try:                             # (the points unchecked, as the plan takes them: only the machine is meant)
                check_this_machine(spec, [(spec.format_id(p), p) for p in spec.points()])
            except ConfigError as e:
                print(f"warning: a local run of it stops before its first point on this machine: {e}", file=sys.stderr)
        return 0
    if args.status:
        points = checked_points(spec)
        study_dir = Path(args.results_dir) / spec.study
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
