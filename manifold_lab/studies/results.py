"""Run folders and study tables.

A finished run is ``<results>/<study>/<run_id>/`` holding ``metrics.json`` (a flat name -> number dict,
written last by the notebook). The runner executes into ``.<run_id>.partial/`` and renames it only
after the notebook succeeded, so a killed batch never leaves a half-written run that looks finished.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from manifold_lab import io


def run_dir(study_dir: Path, run_id: str) -> Path:
    return Path(study_dir) / run_id


def is_complete(path: Path) -> bool:
    return (Path(path) / "metrics.json").is_file()


def is_current(path: Path, params: dict[str, Any]) -> bool:
    """True if the run folder is complete and was made with exactly these parameters.

    The parameters are recorded in ``run.json`` by the runner; a run folder without that record (made
    before it existed) counts as current. A run whose record differs is stale and is run again.
    """
    if not is_complete(path):
        return False
    record = Path(path) / "run.json"
    if not record.is_file():
        return True
    stored = io.read_json(record).get("params")
    return stored is None or stored == json.loads(json.dumps(params))


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


def summarise(study: str, study_dir: Path, points: list[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """Tidy table of finished runs: study, run_id, one column per parameter, metric, value (one row per metric).
    A list or mapping parameter (``model_args``) is written as its JSON text, so the columns stay flat."""
    rows = []
    for run_id, params in points:
        path = run_dir(study_dir, run_id)
        if not is_current(path, params):
            continue
        flat = {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in params.items()}
        for metric, value in io.read_json(path / "metrics.json").items():
            rows.append({"study": study, "run_id": run_id, **flat, "metric": metric, "value": float(value)})
    return pd.DataFrame(rows)


def write_summary(df: pd.DataFrame, study_dir: Path) -> None:
    """summary.csv and summary.parquet, atomically."""
    io.save_table(Path(study_dir) / "summary.csv", df)
    io.save_table(Path(study_dir) / "summary.parquet", df)
