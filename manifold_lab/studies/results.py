"""Run folders and study tables.

A finished run is ``<results>/<study>/<run_id>/`` holding what its kind declares (:mod:`manifold_lab.runs`):
``config.json`` (resolved config, ``run``: the kind, ``derived``: settings computed from it), the kind's files,
and ``metrics.json`` (a flat name -> number dict, written last). The runner executes into
``.<run_id>.partial/`` and renames it only after the notebook succeeded, so a killed batch never leaves a
half-written run that looks finished.

**Done** (:func:`done_reason`): metrics.json and config.json parse (metrics.json a mapping of numbers), every
file the kind declares is present and not empty (an ``.npz`` must also open as a zip archive, a ``.json``
parse), and run.json, where present, records these parameters. Anything else is a reason to redo the point;
a damaged run.json or metrics.json is named in one warning line on stderr (once per file and process).

**Summary** (:func:`summarise`, :func:`merge_summary`): one tidy row per run and metric; the study's
parameters and the run's derived settings (config.json ``derived``) are columns. A new summary replaces the
rows of the run ids it holds, in place, and keeps every other row of the existing one, so a narrowing
``--set`` or a fresh clone (where only the committed summary holds the other points) loses nothing.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from manifold_lab import io
from manifold_lab.run_files import CONFIG, FILES, METRICS

_WARNED: set[str] = set()   # files already named in a warning line by this process


def run_dir(study_dir: Path, run_id: str) -> Path:
    return Path(study_dir) / run_id


def is_complete(path: Path) -> bool:
    return (Path(path) / METRICS).is_file()


def _warn(path: Path, why: str, then: str = "its point counts as not done and is redone") -> None:
    key = f"{path}: {why}"
    if key not in _WARNED:
        _WARNED.add(key)
        print(f"warning: {path} is damaged ({why}); {then}", file=sys.stderr)


def read_record(path: Path, *, warn: bool = True) -> tuple[dict | None, str | None]:
    """A JSON mapping file -> (its content, None), or (None, why it cannot be used). Never raises."""
    path = Path(path)
    if not path.is_file():
        return None, f"no {path.name}"
    try:
        data = io.read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'}"
    else:
        if isinstance(data, dict):
            return data, None
        why = f"holds {type(data).__name__}, not a mapping"
    if warn and path.name in ("run.json", METRICS):
        _warn(path, why)
    return None, f"{path.name} damaged ({why})"


def read_metrics(path: Path) -> tuple[dict | None, str | None]:
    """A run's metrics.json as a mapping of numbers -> (metrics, None), or (None, the reason)."""
    metrics, why = read_record(Path(path) / METRICS)
    if metrics is None:
        return None, why
    bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        why = f"not numbers: {', '.join(bad[:3])}"
        _warn(Path(path) / METRICS, why)
        return None, f"metrics.json damaged ({why})"
    return metrics, None


def kind_of_run(path: Path) -> str | None:
    """The kind a run folder declares in config.json (``run``), None if it declares none."""
    record, _ = read_record(Path(path) / CONFIG, warn=False)
    kind = (record or {}).get("run")
    return kind if kind in FILES else None


def _file_reason(path: Path) -> str | None:
    """None if a declared file is present and readable (not empty; an npz opens, a json parses)."""
    if not path.is_file():
        return f"no {path.name}"
    try:
        if path.stat().st_size == 0:
            return f"{path.name} is empty"
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                z.namelist()
        elif path.suffix == ".json":
            io.read_json(path)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        return f"{path.name} damaged ({type(e).__name__})"
    return None


def done_reason(path: Path, kind: str | None = None, params: dict[str, Any] | None = None) -> str | None:
    """None if the run folder ``path`` is done for ``kind`` (None: the kind its config.json declares) and
    ``params`` (None: not compared); else why not, in a few words (``--status`` shows it). Never raises."""
    path = Path(path)
    if not path.is_dir():
        return "not run"
    metrics, why = read_metrics(path)
    if metrics is None:
        return why
    kind = kind or kind_of_run(path)
    if kind is not None:
        for name in (CONFIG, *FILES[kind].values()):
            why = _file_reason(path / name)
            if why is not None:
                return why
    if params is not None and (path / "run.json").exists():
        record, why = read_record(path / "run.json")
        if record is None:
            return why
        stored = record.get("params")
        if stored is not None and stored != json.loads(json.dumps(params)):
            return "parameters changed since it ran"
    return None


def is_current(path: Path, params: dict[str, Any], kind: str | None = None) -> bool:
    """True if the run folder is done (:func:`done_reason`) and was made with exactly these parameters.

    The parameters are recorded in ``run.json`` by the runner; a run folder without that record (made
    before it existed) counts as current. A run whose record differs is stale and is run again.
    """
    return done_reason(path, kind, params) is None


def partial_dir(study_dir: Path, run_id: str) -> Path:
    return Path(study_dir) / f".{run_id}.partial"


def finalize(partial: Path, final: Path) -> Path | None:
    """Move a finished partial run folder to its final name. A finished run already there (it holds
    metrics.json: made with other parameters, or no longer done) is never deleted: it is kept aside as
    ``<run_id>.stale-<UTC time>/`` (:func:`kept_aside` lists them, ``--status`` shows them); an unfinished
    leftover (no metrics.json, no result) is replaced. Returns the folder kept aside, or None."""
    import time

    if not is_complete(partial):
        raise RuntimeError(f"{partial} has no metrics.json: the notebook did not finish the run")
    aside = None
    if final.exists() and not is_complete(final):
        shutil.rmtree(final)
    if final.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        aside = final.with_name(f"{final.name}{STALE_MARK}{stamp}")
        n = 1
        while aside.exists():
            aside, n = final.with_name(f"{final.name}{STALE_MARK}{stamp}-{n}"), n + 1
        shutil.move(final, aside)              # a rename: the same folder
    partial.rename(final)
    return aside


STALE_MARK = ".stale-"      # <run_id>.stale-YYYYmmdd-HHMMSS: a replaced run folder, kept


def kept_aside(study_dir: Path) -> list[Path]:
    """The run folders finalize kept aside (``<run_id>.stale-<time>``), sorted by name."""
    study_dir = Path(study_dir)
    return sorted(p for p in study_dir.glob(f"*{STALE_MARK}*") if p.is_dir()) if study_dir.is_dir() else []


def _flat(values: dict[str, Any]) -> dict[str, Any]:
    """A list or mapping value is written as its JSON text, so the columns stay flat."""
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in values.items()}


def derived_settings(path: Path, metrics: dict, derived_names: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(derived settings, measured metrics) of a done run: the settings from config.json ``derived``; a run
    written before that existed kept them in metrics.json, and ``derived_names`` moves them out of it."""
    record, _ = read_record(Path(path) / CONFIG, warn=False)
    derived = dict((record or {}).get("derived") or {})
    derived |= {k: metrics[k] for k in derived_names if k in metrics and k not in derived}
    return derived, {k: v for k, v in metrics.items() if k not in derived}


RUN_TIMING = ("wall_s", "sgemm_gflops")   # from the runner's run.json into the summary, for study --plan


def run_timing(path: Path, measured: dict) -> dict:
    """What the runner's run.json says of a run's cost, as metrics the notebook did not record itself: the
    kernel's wall time ``wall_s`` and the machine's one-thread fp32 matmul rate ``sgemm_gflops`` measured
    beside it, so a committed summary carries the rate its times were taken at (``study --plan`` scales by
    it on another machine). Nothing when run.json is absent or holds no number."""
    record, _ = read_record(Path(path) / "run.json", warn=False)
    record = record if isinstance(record, dict) else {}
    return {k: v for k in RUN_TIMING if k not in measured and (v := recorded_number(record.get(k))) is not None}


def recorded_number(value) -> float | None:
    """A recorded cost or rate (``wall_s``, ``sgemm_gflops``) as a float, or None where there is none: absent,
    not a number (a bool included), NaN or infinite (a summary's empty cell), zero or less."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def run_seconds(metrics: dict) -> tuple[float | None, bool]:
    """One run's cost from its summary metrics: (``wall_s``, True) where the runner recorded it, else
    (``train_s`` + ``sample_s``, False) from the parts the notebook timed (either alone counts), else
    (None, False). Each value is taken through :func:`recorded_number` (absent, NaN or <= 0: none)."""
    wall = recorded_number(metrics.get("wall_s"))
    if wall is not None:
        return wall, True
    parts = [v for k in ("train_s", "sample_s") if (v := recorded_number(metrics.get(k))) is not None]
    return (sum(parts), False) if parts else (None, False)


def summarise(study: str, study_dir: Path, points: list[tuple[str, dict[str, Any]]], kind: str | None = None,
              derived_names: tuple[str, ...] = ()) -> pd.DataFrame:
    """Tidy table of the done runs among ``points``: study, run_id, one column per parameter, one per derived
    setting, metric, value (one row per metric, with :func:`run_timing`'s). A list or mapping is written as
    its JSON text."""
    rows = []
    for run_id, params in points:
        path = run_dir(study_dir, run_id)
        if done_reason(path, kind, params) is not None:
            continue
        metrics, _ = read_metrics(path)
        derived, measured = derived_settings(path, metrics, derived_names)
        measured |= run_timing(path, measured)
        fixed = {"study": study, "run_id": run_id, **_flat(params), **_flat(derived)}
        rows += [{**fixed, "metric": metric, "value": float(value)} for metric, value in measured.items()]
    return pd.DataFrame(rows)


def read_summary(study_dir: Path) -> pd.DataFrame:
    """The study's existing summary (summary.parquet, else summary.csv; empty if none or unreadable)."""
    for name, read in (("summary.parquet", pd.read_parquet), ("summary.csv", pd.read_csv)):
        path = Path(study_dir) / name
        if path.is_file():
            try:
                return read(path)
            except (OSError, ValueError) as e:  # a damaged table is rebuilt from the run folders, never fatal
                _warn(path, f"{type(e).__name__}", "the summary is read from summary.csv or rebuilt from the run folders")
    return pd.DataFrame()


def merge_summary(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``old`` with the rows of each run id in ``new`` replaced in place (at the run id's first row), the
    run ids that ``old`` lacks appended; every other row of ``old`` kept unchanged."""
    if old.empty or "run_id" not in old:
        return new.reset_index(drop=True)
    if new.empty:
        return old.reset_index(drop=True)
    fresh = dict(tuple(new.groupby("run_id", sort=False)))
    parts, placed = [], set()
    for run_id, rows in old.groupby("run_id", sort=False):
        parts.append(fresh.get(run_id, rows))
        placed.add(run_id)
    parts += [rows for run_id, rows in fresh.items() if run_id not in placed]
    order = list(old.columns) + [c for c in new.columns if c not in old.columns]
    front = [c for c in order if c not in ("metric", "value")] + ["metric", "value"]
    return pd.concat(parts, ignore_index=True)[front]


def write_summary(df: pd.DataFrame, study_dir: Path) -> None:
    """summary.csv and summary.parquet, atomically."""
    io.save_table(Path(study_dir) / "summary.csv", df)
    io.save_table(Path(study_dir) / "summary.parquet", df)


def migrate_summary(df: pd.DataFrame, derived_names: tuple[str, ...]) -> pd.DataFrame:
    """A summary written when derived settings posed as metrics -> the same table with each of
    ``derived_names`` (e.g. token_dim, k) a column before ``metric`` and its metric rows gone; values unchanged
    (an integral setting is written as an integer)."""
    names = [n for n in derived_names if n in set(df["metric"])]
    out = df[~df["metric"].isin(names)].copy()
    for name in names:
        col = df[df["metric"] == name].set_index("run_id")["value"]
        if (col.dropna() % 1 == 0).all():
            col = col.astype("int64")
        out.insert(list(out.columns).index("metric"), name, out["run_id"].map(col))
    return out.reset_index(drop=True)
