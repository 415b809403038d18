"""The files a finished run folder holds, listed once: what every kind declares, and the one accessor that
figures use to reach a run's files (:func:`run_file`), instead of spelling file names themselves.

Every finished run holds ``config.json`` (the resolved config, plus ``run`` (the kind) and ``derived``
settings) and ``metrics.json`` (measured numbers only, written last), and the files of its kind below, by
key. A key names one file across all kinds, so the accessor needs no kind.
"""
from __future__ import annotations

from pathlib import Path

from manifold_lab.checks import ConfigError

CONFIG, METRICS = "config.json", "metrics.json"

# kind -> {key: path inside the run folder}
FILES: dict[str, dict[str, str]] = {
    "toy": {"samples": "samples.npz", "curve": "curve.csv", "samples_figure": "fig_samples.png"},
    "image": {"samples": "samples.npz", "samples_grid": "samples.png", "curve": "curve.csv"},
    "intrinsic": {"dims": "dims.csv", "jacobian": "jacobian.csv", "jac_counts": "jac_counts.csv"},
    "image_id": {},
    "memorisation": {"per_sample": "memorisation.npz", "point_figure": "fig_memorisation.png",
                     "samples_a": "model_a/samples.npz", "samples_b": "model_b/samples.npz"},
    "imagenet": {"train_config": "train_config.yaml", "best": "sweep/best.json", "sweep": "sweep/sweep.csv",
                 "train_log": "run/log.csv"},
}


def file_name(key: str) -> str:
    """The path (inside a run folder) of the file ``key``; one key names one file in every kind."""
    names = {kind_files[key] for kind_files in FILES.values() if key in kind_files}
    if len(names) != 1:
        known = sorted({k for kind_files in FILES.values() for k in kind_files})
        raise ConfigError(f"unknown run file {key!r}; allowed: {', '.join(known)}")
    return names.pop()


class MissingRunFile(FileNotFoundError):
    """A figure needs a run's file that is not on disk (a summary row kept from another machine or a fresh
    clone, whose run folder is not here). The study runner then keeps the figure as it was."""


def run_file(study_dir: str | Path, run_id: str, key: str, *, must_exist: bool = True) -> Path:
    """The path of file ``key`` (e.g. ``samples``, ``curve``, ``dims``) of run ``run_id`` of a study folder.
    Raises :class:`MissingRunFile` if it is not there (unless ``must_exist=False``)."""
    path = Path(study_dir) / str(run_id) / file_name(key)
    if must_exist and not path.is_file():
        raise MissingRunFile(f"{path} is not on disk (run {run_id} of the summary has no run folder here)")
    return path


def declared(kind: str) -> tuple[str, ...]:
    """Every file a finished run of ``kind`` holds, metrics.json last."""
    return (CONFIG, *FILES[kind].values(), METRICS)
