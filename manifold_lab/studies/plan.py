"""``study --plan``: what a study would run and how long it would take, without running anything.

Per point the estimate comes from recorded times, nearest first:

1. the point's own run folder (``run.json`` ``wall_s``, with the ``sgemm_gflops`` measured when it ran);
2. the committed ``summary.csv`` of the study, or of another study with the same notebook: the ``wall_s``
   metric (the notebook's, else the runner's run.json wall time), else ``train_s + sample_s`` plus
   :data:`OVERHEAD_S` for the kernel start and the metrics; the same parameters (any seed; only the records
   with a matmul rate where some have one) if recorded, else the nearest recorded point (the fewest and
   smallest parameter differences, numbers compared on a log scale), scaled by the ratio of ``steps``
   (``epochs``) when that differs;
3. for a notebook nothing was recorded for, a stated assumption (:data:`ASSUMED`).

Recorded times are scaled by this machine's one-thread fp32 matmul rate (:func:`sgemm_gflops`, a 0.3 s
measurement) against the one recorded beside them: a run's run.json holds it, and the summary carries it as
the ``sgemm_gflops`` metric (runs since 2026-12-06); a record without it (older summaries) is taken as
this machine's speed. Recorded times were taken with the study's workers running at once, so the wall time
is the summed time divided by the workers.
"""
from __future__ import annotations

import functools
import json
import math
import os
import threading
import time
from pathlib import Path

import yaml

from manifold_lab import io, paths
from manifold_lab.checks import ConfigError
from manifold_lab.studies import results
from manifold_lab.studies.spec import StudySpec, load_study

OVERHEAD_S = 5.0        # kernel start, parameters and metrics around train_s + sample_s (toy runs)
SCALE_KEYS = ("steps", "epochs")     # time is taken as proportional to these
# notebook -> (seconds per unit of its SCALE_KEY, key, reference units, what the assumption is)
ASSUMED = {"imagenet_run.ipynb": (5.5 * 3600 / 200, "epochs", 200,
                                  "assumed: 5.5 h per 200 epochs on 8 H100s (the README's JiT-B figure)"),
           "toy_intrinsic_dim.ipynb": (3 * 60.0 / 2000, "steps", 2000,
                                       ("assumed: three toy trainings of about 60 s per 2000 steps each "
                                        "(toy_fig2's recorded times; this notebook records none)")),
           "image_intrinsic_dim.ipynb": (15.0 / 5000, "n", 5000,
                                         ("assumed: about 15 s per 5000 points (measured 5-18 s per point with "
                                          "the id command, one thread, 2026-12-06; this notebook records none)"))}


_RATE_LOCK = threading.Lock()


def sgemm_gflops() -> float:
    """This machine's one-thread fp32 matmul rate in GFLOP/s, measured once per process (0.3 s); the local
    runner measures it before its first kernel starts and records it in each point's run.json
    (``sgemm_gflops``) beside its ``wall_s``."""
    with _RATE_LOCK:
        return _measure()


@functools.lru_cache(maxsize=1)
def _measure(n: int = 512, seconds: float = 0.3) -> float:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        return 2.0 * n ** 3 * count / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(threads)


def notebook_defaults(notebook: Path) -> dict:
    """The notebook's parameter defaults that are literals (papermill's parameters cell), e.g. steps=2000."""
    import ast

    import papermill

    out = {}
    for name, info in papermill.inspect_notebook(str(notebook)).items():
        try:
            out[name] = ast.literal_eval(str(info.get("default")))
        except (ValueError, SyntaxError):
            continue
    return {k: v for k, v in out.items() if k not in ("out_dir", "threads")}


def _comparable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


IGNORED = {"seed", "precision", "compile"}


def _distance(point: dict, record: dict) -> float:
    """0 for the same parameters (seed and the fast-mode knobs aside: ``_fast_gain`` accounts for those); each
    differing parameter adds |log ratio| (numbers) or 1."""
    d = 0.5 * len(set(record) - set(point) - IGNORED)     # set there, the notebook's default here
    for key, value in point.items():
        if key in IGNORED:
            continue
        if key not in record:
            d += 0.5
            continue
        a, b = _comparable(value), record[key]
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            d += abs(math.log(a / b)) if a > 0 and b > 0 else float(a != b)
        elif str(a) != str(b):
            d += 1.0
    return d


def _scale_units(point: dict, record: dict) -> float:
    """The ratio of steps (or epochs) between the point and a record (1 when neither has them)."""
    for key in SCALE_KEYS:
        a, b = point.get(key), record.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b > 0:
            return a / b
    return 1.0


def _summary_records(path: Path, source: str) -> list[dict]:
    """Per run of a committed summary: its parameters and recorded seconds (``_s``), or nothing."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError):
        io.warn_once(f"{path} cannot be read; its times are not used by --plan")
        return []
    out = []
    params = [c for c in df.columns if c not in ("study", "run_id", "metric", "value")]
    for rid, rows in df.groupby("run_id"):
        m = dict(zip(rows["metric"], rows["value"]))
        secs, wall = results.run_seconds(m)
        if secs is not None:
            secs += 0.0 if wall else OVERHEAD_S
            first = rows.iloc[0]
            out.append({"params": {k: first[k].item() if hasattr(first[k], "item") else first[k] for k in params},
                        "_s": float(secs), "gflops": results.recorded_number(m.get("sgemm_gflops")), "source": f"{source} {rid}"})
    return out


def _records(spec: StudySpec, results_dir: Path, studies_dir: Path) -> list[dict]:
    """Recorded times of the study's own summary first, then those of every study with the same notebook;
    from ``results_dir`` and, when that is another folder (a scratch ``--results-dir``), the project's
    committed ``results/`` too."""
    names = [spec.study]
    for y in sorted(studies_dir.glob("*.yaml")) if studies_dir.is_dir() else []:
        try:
            other = load_study(y)
        except (OSError, ValueError, TypeError, yaml.YAMLError) as e:   # a broken YAML elsewhere: say, go on
            io.warn_once(f"{y} not read for --plan ({type(e).__name__})")
            continue
        if other.study != spec.study and Path(other.notebook).name == Path(spec.notebook).name:
            names.append(other.study)
    roots = [Path(results_dir)]
    try:
        committed = paths.results_dir()
        if committed.resolve() != roots[0].resolve():
            roots.append(committed)
    except ConfigError:              # no project folder found: the given results folder only
        pass
    out = []
    for root in roots:
        for name in names:
            path = root / name / "summary.csv"
            if path.is_file():
                out += _summary_records(path, name)
    return out


def _own_run(study_dir: Path, run_id: str) -> dict | None:
    record = io.read_json_or_warn(results.run_dir(study_dir, run_id) / "run.json", consequence="not used by --plan")
    secs = results.recorded_number(record.get("wall_s")) if record else None
    if secs is not None:
        return {"_s": secs, "gflops": results.recorded_number(record.get("sgemm_gflops")),
                "source": f"run.json {run_id}", "params": record.get("params") or {}}
    return None


# the fast CPU mode's measured gain over fp32 per point, kernel included (2026-12-06, Intel Xeon with AMX, 2
# workers of one thread): toy_fig2's 12 points took 398 s summed in fp32 and 271 s with bf16 + the compiled
# loss + the fused AdamW (warm cache), 1.47x; image_pred_loss's 9 points at patch 8 (seed 0) 1217 s and 594 s,
# 2.05x. Applied to a bf16 point estimated from an fp32 record (inverted the other way).
FAST_GAIN = {"toy": 1.5, "image": 2.0}
# compile alone (fp32: a CPU without native bf16), measured the same way on an AMD EPYC with AVX2 (2026-12-07):
# toy_fig2's 12 points 460 s summed in fp32 (the mean of two runs) and 429 s compiled (warm cache), 1.07x, the
# study's wall 245 -> 227 s, 1.08x; image_pred_loss's 6 points at patch 8 with the v- and x-loss (seed 0), the
# JiT in its compiled CPU layout (image_study.compiled_cpu_layout), 1075 s -> 726 s, 1.48x, the study's wall
# 542 -> 366 s (both with the fd_feat net already cached; before that layout 843 s, 1.28x)
COMPILE_GAIN = {"toy": 1.08, "image": 1.48}


def _cpu_mode(params: dict) -> str:
    """The point's CPU mode for the plan: ``bf16`` (the fast mode, compiled or not), ``compile`` (fp32 compiled) or
    ``fp32``; a CUDA point is ``fp32`` here (no CPU gain applies)."""
    if str(params.get("device", "cpu")).startswith("cuda"):
        return "fp32"
    if str(params.get("precision")) == "bf16":
        return "bf16"
    return "compile" if str(params.get("compile")).lower() in ("true", "1") else "fp32"


def _mode_gain(params: dict, notebook: str) -> float:
    """The measured gain over fp32 eager of the parameters' CPU mode for a toy or image notebook; 1 elsewhere."""
    kind = next((k for k in FAST_GAIN if k in notebook and "imagenet" not in notebook), None)
    mode = _cpu_mode(params)
    if kind is None or mode == "fp32":
        return 1.0
    return (FAST_GAIN if mode == "bf16" else COMPILE_GAIN)[kind]


def _fast_gain(point: dict, record: dict, notebook: str) -> float:
    """How much faster the point runs than the record it is estimated from: the measured gain of the point's CPU
    mode (FAST_GAIN for bf16, COMPILE_GAIN for fp32 compiled) over the record's, 1 for the same mode."""
    return _mode_gain(point, notebook) / _mode_gain(record, notebook)


def _preference(point: dict, record: dict) -> tuple[bool, bool]:
    """Among equally near records: the point's CPU mode first (no mode gain guessed), then one with
    a recorded matmul rate; ``min`` keeps the first of equals, so the records' order (the study's own first)."""
    return _cpu_mode(point) != _cpu_mode(record["params"]), not record.get("gflops")


def estimate(point: dict, run_id: str, study_dir: Path, records: list[dict], notebook: str,
             here: float) -> tuple[float | None, str]:
    """(seconds, where the figure comes from) for one point; (None, why) when nothing applies."""
    own = _own_run(study_dir, run_id)
    if own is not None:
        record, secs, source = own, _at_this_rate(own, here), own["source"]
    elif records:
        same = [r for r in records if _distance(point, r["params"]) == 0]
        if same:        # one study's records of the point's mode, with a recorded rate where some have one
            best = min(same, key=lambda r: _preference(point, r))
            same = [r for r in same if r["source"].split()[0] == best["source"].split()[0]
                    and _cpu_mode(r["params"]) == _cpu_mode(best["params"])]
            same = [r for r in same if r.get("gflops")] or same
            record, secs = same[0], sum(_at_this_rate(r, here) for r in same) / len(same)
            source = f"same point, {len(same)} recorded run(s) ({same[0]['source'].split()[0]})"
        else:
            record = min(records, key=lambda r: (_distance(point, r["params"]), *_preference(point, r)))
            secs = _at_this_rate(record, here) * _scale_units(point, record["params"])
            source = f"nearest recorded: {record['source']}"
    else:
        record = None
    if record is not None:
        gain = _fast_gain(point, record.get("params", {}), notebook)
        if gain != 1.0:
            point_mode, record_mode = _cpu_mode(point), _cpu_mode(record.get("params", {}))
            source += (f", /{gain:.3g} for {point_mode} against {record_mode} (measured CPU-mode gain)" if gain > 1
                       else f", x{1 / gain:.3g}: recorded in {record_mode} (measured CPU-mode gain)")
        return secs / gain, source
    if notebook in ASSUMED:
        per, key, ref, text = ASSUMED[notebook]
        return per * float(point.get(key, ref)), text
    return None, "nothing recorded for this notebook"


def _at_this_rate(record: dict, here: float) -> float:
    """A record's seconds scaled to this machine: x (its matmul rate / this one's), x1 where none was recorded."""
    return record["_s"] * (record["gflops"] / here if record.get("gflops") else 1.0)


# rates this far apart come from different processor kinds, where the matmul ratio overstates the difference in
# time (2026-12-07: toy_fig2 recorded on an Intel Xeon with AMX at 197 GFLOP/s ran on an AMD EPYC with AVX2 only,
# 92 GFLOP/s, in 1.51x the recorded time where the rate fell 2.14x; image_pred_loss's training, bound by
# element-wise work, took 0.93x its AMX time there)
OTHER_KIND_RATIO = 1.5


def _other_kind_note(rates: list[float], here: float) -> str:
    """A line for the plan when the recorded matmul rates (their median) lie more than OTHER_KIND_RATIO from this
    machine's; '' otherwise."""
    if not rates:
        return ""
    rates = sorted(rates)
    ratio = rates[len(rates) // 2] / here
    if 1 / OTHER_KIND_RATIO <= ratio <= OTHER_KIND_RATIO:
        return ""
    slower = ratio > 1
    return (f"note: the recorded runs' matmul rate is {max(ratio, 1 / ratio):.2f}x {'above' if slower else 'below'} "
            "this machine's, as between processor kinds, where the rate's ratio overstates the difference in time "
            "(measured: the rate 2.14x, a toy study's time 1.51x), so the total is likely too "
            f"{'high' if slower else 'low'}")


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def _device(spec: StudySpec, backend: str) -> str:
    """The device the points ask for and what this machine has (or the SLURM resources)."""
    devices = sorted({str(p.get("device", "cpu")) for p in spec.points()})
    if backend == "slurm":
        r = spec.resources
        return (f"device {', '.join(devices)} on SLURM ({r.get('gpus_per_node', 0)} GPU(s), "
                f"{r.get('cpus_per_task', 1)} CPU(s) per point)")
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return (f"device {', '.join(devices)} (this machine: {cpu}, {os.cpu_count()} cores"
            + (f", GPU: {', '.join(gpus)}" if gpus else ", no GPU") + ")")


def plan(spec: StudySpec, results_dir: str | Path = "results", *, workers: int | None = None,
         backend: str = "local", studies_dir: str | Path | None = None) -> tuple[str, float]:
    """The plan's text (one line per point, a total, the scale) and the estimated wall seconds. Runs nothing
    and writes nothing."""
    results_dir = Path(results_dir)
    study_dir = results_dir / spec.study
    studies_dir = Path(studies_dir) if studies_dir else (Path(spec.source).parent if spec.source else Path("studies"))
    points = [(spec.format_id(p), p) for p in spec.points()]
    defaults, here = notebook_defaults(spec.notebook), sgemm_gflops()
    records = [{**r, "params": {**defaults, **r["params"]}} for r in _records(spec, results_dir, studies_dir)]
    lines, total, unknown, todo = [], 0.0, 0, 0
    width = max(len(r) for r, _ in points)
    for rid, p in points:
        if results.is_current(results.run_dir(study_dir, rid), p):
            lines.append(f"  {rid:<{width}}  done here")
            continue
        todo += 1
        secs, source = estimate({**defaults, **p}, rid, study_dir, records, Path(spec.notebook).name, here)
        if secs is None:
            unknown += 1
        total += secs or 0.0
        lines.append(f"  {rid:<{width}}  {'?' if secs is None else '~' + _fmt(secs):>9}  {source}")
    n = max(1, min(workers or spec.workers, todo or 1))
    head = (f"plan for study {spec.study}: {len(points)} points, {todo} to run ({len(points) - todo} done here); "
            f"{_device(spec, backend)}; {n} worker(s)")
    tail = [f"total: ~{_fmt(total)} of run time for the {todo - unknown} point(s) with an estimate"
            + (f" ({unknown} without one)" if unknown else "")
            + f"; ~{_fmt(total / n)} of wall time with {n} at once",
            (f"scale: this machine's one-thread fp32 sgemm {here:.0f} GFLOP/s; a time recorded with a rate is scaled "
             "by (its rate / this one); a record without one (summaries older than the sgemm_gflops metric) is taken as "
             "this machine's speed (x1.00)"),
            "nothing was run or written (--plan)"]
    rated = [r for r in records if r.get("gflops")]
    own = [r for r in rated if r["source"].split()[0] == spec.study]      # the study's own records where it has some
    kinds = _other_kind_note([r["gflops"] for r in own or rated], here)
    if kinds:
        tail.insert(-1, kinds)
    if any(str(p.get("device", "cpu")).startswith("cuda") for _, p in points):
        tail.insert(-1, "device cuda: the committed times were recorded on CPUs, so for a GPU they are no estimate "
                        "(a GPU runs these small nets far faster); `bash benchmarks/gpu_suite.sh 6` measures studies "
                        "on one GPU")
    return "\n".join([head, *lines, *tail]), total / n
