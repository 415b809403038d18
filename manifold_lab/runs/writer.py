"""The one run-folder writer every kind finishes through (:func:`finish_run`).

Order: ``config.json`` (the resolved config, ``run``: the kind, ``derived``: settings computed from the config
such as ``token_dim`` or ``k``), then the tables, arrays and figures, then ``metrics.json`` last, holding
measured numbers only. Every file is written atomically; metrics.json is written only when every file the
kind declares (:mod:`manifold_lab.run_files`) is present, so its presence marks a finished run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from manifold_lab import io
from manifold_lab.run_files import CONFIG, FILES, METRICS


def config_record(cfg, kind: str, derived: dict[str, Any] | None = None) -> dict[str, Any]:
    """What config.json holds: the config's fields, ``run`` (the kind) and ``derived`` (a mapping)."""
    return {**dataclasses.asdict(cfg), "run": kind, "derived": dict(derived or {})}


def _check_numbers(metrics: dict[str, Any]) -> dict[str, float | int]:
    bad = {k: v for k, v in metrics.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "item")}
    if bad:
        raise TypeError(f"metrics.json holds measured numbers only; not numbers: {bad} (a setting belongs in "
                        "derived=)")
    return {k: v.item() if hasattr(v, "item") else v for k, v in metrics.items()}


def finish_run(out_dir: str | Path, cfg, metrics: dict[str, Any], *, kind: str,
               derived: dict[str, Any] | None = None, tables: dict[str, Any] | None = None,
               arrays: dict[str, dict] | None = None, figures: dict[str, Any] | None = None) -> dict:
    """Write a run folder: config.json, ``tables`` (name -> DataFrame, .csv/.parquet), ``arrays`` (name ->
    {array name: array}, .npz), ``figures`` (name -> matplotlib Figure, or a callable path -> None for a
    picture written otherwise), then metrics.json. Returns the metrics as written."""
    out = Path(out_dir)
    metrics = _check_numbers(metrics)
    io.write_json(out / CONFIG, config_record(cfg, kind, derived))
    for name, df in (tables or {}).items():
        io.save_table(out / name, df)
    for name, arrs in (arrays or {}).items():
        io.save_npz(out / name, **arrs)
    for name, fig in (figures or {}).items():
        fig(out / name) if callable(fig) and not hasattr(fig, "savefig") else io.save_figure(out / name, fig)
    missing = [name for name in FILES[kind].values() if not (out / name).is_file()]
    if missing:
        raise RuntimeError(f"{out}: a {kind} run must hold {', '.join(missing)} before metrics.json")
    io.write_json(out / METRICS, metrics)   # last: its presence marks a finished run
    return metrics

