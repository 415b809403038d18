"""`python -m manifold_lab study studies/<name>.yaml`: run a study grid with papermill, then summarise.

Each grid point executes the study's notebook once (papermill, kernel ``python3``) with the point's
parameters plus ``out_dir`` and ``threads``. Points already complete are skipped; points run in parallel
(``--workers``), each with one torch thread so two workers do not oversubscribe the cores. Afterwards
``summary.csv``/``summary.parquet`` (tidy) and every figure listed in the YAML are written.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from manifold_lab import io
from manifold_lab.studies import results
from manifold_lab.studies.spec import StudySpec, check_against_notebook, load_study

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _execute(spec: StudySpec, study_dir: Path, run_id: str, params: dict, threads: int) -> float:
    import papermill

    partial = results.partial_dir(study_dir, run_id)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    start = time.perf_counter()
    papermill.execute_notebook(str(spec.notebook), str(partial / "notebook.ipynb"),
                               parameters={**params, "out_dir": str(partial.resolve()), "threads": threads},
                               kernel_name="python3", progress_bar=False, cwd=str(Path.cwd()))
    wall = time.perf_counter() - start
    io.write_json(partial / "run.json", {"run_id": run_id, "wall_s": wall, "threads": threads, "params": params})
    results.finalize(partial, results.run_dir(study_dir, run_id))
    return wall


def run_study(spec: StudySpec, results_dir: str | Path = "results", *, workers: int | None = None,
              progress: bool = True, figures: bool = True) -> dict:
    """Run every unfinished grid point of ``spec``; write the summary and figures. Returns a report dict
    with the lists ``ran``, ``skipped``, ``failed`` (run ids) and ``wall_s``."""
    check_against_notebook(spec)
    study_dir = Path(results_dir) / spec.study
    study_dir.mkdir(parents=True, exist_ok=True)
    points = [(spec.format_id(p), p) for p in spec.points()]
    current = {rid: results.is_current(results.run_dir(study_dir, rid), p) for rid, p in points}
    todo = [(rid, p) for rid, p in points if not current[rid]]
    skipped = [rid for rid, _ in points if current[rid]]
    workers = max(1, min(workers or spec.workers, len(todo) or 1))
    threads = 1 if workers > 1 else 0
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    if workers > 1:
        os.environ.update({k: "1" for k in _THREAD_VARS})  # the kernels inherit it
    ran, failed = [], []
    start = time.perf_counter()
    try:
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(points), initial=len(skipped), desc=f"study {spec.study}", unit="run")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_execute, spec, study_dir, rid, p, threads): rid for rid, p in todo}
            for fut in as_completed(futures):
                rid = futures[fut]
                try:
                    fut.result()
                    ran.append(rid)
                except Exception as e:  # keep going; report at the end
                    failed.append(rid)
                    print(f"run {rid} failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
                          f" (notebook kept in {results.partial_dir(study_dir, rid)})", file=sys.stderr)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    summary = results.summarise(spec.study, study_dir, points)
    if not summary.empty:
        results.write_summary(summary, study_dir)
        if figures:
            render_figures(spec, summary, study_dir)
    return {"ran": ran, "skipped": skipped, "failed": failed, "wall_s": time.perf_counter() - start,
            "study_dir": str(study_dir)}


def render_figures(spec: StudySpec, summary, study_dir: Path) -> list[Path]:
    """Draw each figure the study lists from its summary table into study_dir/fig_<name>.png."""
    from manifold_lab.plots import figure_registry

    reg = figure_registry()
    return [io.save_figure(study_dir / f"fig_{name}.png", reg[name](summary, study_dir)) for name in spec.figures]


def register(sub) -> None:
    p = sub.add_parser("study", help="run a study grid (papermill) and render its figures",
                       description="Expand a studies/*.yaml grid, execute its notebook once per point into "
                                   "<results>/<study>/<run_id>/, skip finished points, write summary.csv and figures.")
    p.add_argument("yaml", help="the study file, e.g. studies/toy_fig2.yaml")
    p.add_argument("--workers", type=int, default=None, help="runs at once (default: the YAML's workers)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (YAML value); on a grid key it replaces the list, e.g. seed=[0,1,2]")
    p.add_argument("--results-dir", default="results", help="where <study>/ is written")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--figures-only", action="store_true",
                   help="run nothing: redraw the figures from the existing summary.csv")
    p.set_defaults(func=_main)


def _main(args) -> int:
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
    report = run_study(spec, args.results_dir, workers=args.workers, progress=not args.no_progress)
    print(f"study {spec.study}: ran {len(report['ran'])}, skipped {len(report['skipped'])} finished, "
          f"failed {len(report['failed'])} in {report['wall_s']:.0f} s -> {report['study_dir']}")
    return 1 if report["failed"] else 0
