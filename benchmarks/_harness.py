"""The one harness of the benchmark suite: timing, the matmul rate, the environment stamp, the result file.

Timing (:func:`timeit`) goes through ``torch.utils.benchmark.Timer(...).blocked_autorange()`` after
explicit warm-up calls (the Timer synchronises CUDA around each block and runs with the process's torch
thread count). Where two or more variants are compared on a shared machine, :func:`interleaved` times them
in turns (A, B, A, B, ...) in one process and reports each one's median, so a burst of load from other jobs
hits every variant alike; the ratios of the medians are the figures to trust there.

Every result is one JSON file (:func:`write_result`)::

    {"schema": "manifold_lab.bench/1", "subject": "step", "config": {the subject's options},
     "env": {device, cpu, cpu_flags, native_bf16, torch, python, git commit, load average, threads, ...},
     "figures": {name: number or nested dict of numbers}}
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from manifold_lab import io
from manifold_lab.device import cpu_flags, native_bf16

SCHEMA = "manifold_lab.bench/1"
ROOT = Path(__file__).resolve().parents[1]
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")


def sync(device: torch.device) -> None:
    """Wait for the device (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], *, warmup: int = 1, min_run_time: float = 1.0) -> dict:
    """Seconds per call of ``fn()``: ``warmup`` untimed calls, then Timer.blocked_autorange. Returns
    {"median_s", "mean_s", "iqr_s", "runs" (blocks), "calls" (per block)}."""
    from torch.utils.benchmark import Timer  # imported here: it loads cpp_extension, which warns without CUDA

    for _ in range(warmup):
        fn()
    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_run_time)
    return {"median_s": m.median, "mean_s": m.mean, "iqr_s": m.iqr, "runs": len(m.times),
            "calls": m.number_per_run}


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, *, repeats: int, calls: int,
                warmup: int = 1) -> dict:
    """Seconds per call of each ``fns[name]()``, timed in turns: ``warmup`` untimed calls of each, then
    ``repeats`` rounds in which every variant runs ``calls`` calls back to back (synchronised before and
    after). Returns {name: {"median_s", "min_s", "max_s", "repeats"}}; the medians are comparable."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - t) / calls)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "repeats": len(v)}
            for k, v in times.items()}


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                min_run_time: float = 0.5) -> float:
    """FLOP/s of an (n x n) @ (n x n) matmul in ``dtype`` on ``device`` (n: 8192 on CUDA, 1024 on the CPU);
    the bar a step's useful FLOP/s is compared with."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n ** 3 / timeit(lambda: a @ b, warmup=2, min_run_time=min_run_time)["median_s"]


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo; platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def git_commit() -> str:
    """HEAD of the checkout the suite runs from, with "+dirty" when the tree has changes; "" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return sha + ("+dirty" if sha and dirty else "")


def env(device: torch.device) -> dict:
    """The environment stamp of a result: device, CPU and its bf16/AMX flags, torch, commit, load, threads."""
    flags = cpu_flags()
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "cpu_flags": [f for f in CPU_FLAGS if f in flags], "native_bf16": native_bf16(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "python": sys.version.split()[0], "commit": git_commit(),
            "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else [],
            "threads": torch.get_num_threads(),
            "time_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_result(out_dir, subject: str, config: dict, figures: dict, device: torch.device,
                 name: str | None = None) -> Path:
    """Write ``out_dir/<name or subject>.json`` in the suite's schema (atomically); returns its path."""
    path = Path(out_dir) / f"{name or subject}.json"
    io.write_json(path, {"schema": SCHEMA, "subject": subject, "config": config, "env": env(device),
                         "figures": figures})
    return path


def read_result(path) -> dict:
    """A result file; a file of another schema is a one-line error."""
    res = io.read_json(path)
    if not isinstance(res, dict) or res.get("schema") != SCHEMA:
        from manifold_lab.checks import ConfigError
        raise ConfigError(f"{path} is not a benchmark result (schema {SCHEMA!r}); write one with "
                          "python -m benchmarks <subject> --out DIR")
    return res
