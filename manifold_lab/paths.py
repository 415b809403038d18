"""Where the project's folders are: one explicit root, so ``configs/``, ``notebooks/`` and ``studies/`` are found
from a source checkout and from an installed package alike.

The root is, in this order: ``$MANIFOLD_LAB_ROOT``; the checkout that holds this package (a folder with
``pyproject.toml`` and ``notebooks/`` above ``manifold_lab/``); the current working directory when it holds
``notebooks/`` (an installed package run from a clone). Otherwise a one-line error says to set the variable.

A relative ``out_dir`` is resolved against that root, never against the notebook's folder: ``results/scratch/toy``
from a JupyterLab kernel started in ``notebooks/`` is ``<root>/results/scratch/toy``, as it is for papermill.
"""
from __future__ import annotations

import os
from pathlib import Path

from manifold_lab.checks import ConfigError

ROOT_ENV = "MANIFOLD_LAB_ROOT"


def _is_root(path: Path) -> bool:
    return (path / "notebooks").is_dir() and ((path / "studies").is_dir() or (path / "configs").is_dir())


def project_root() -> Path:
    """The project folder holding configs/, notebooks/ and studies/ (see the module docstring)."""
    env = os.environ.get(ROOT_ENV)
    if env:
        env = Path(env).expanduser().resolve()
        if not _is_root(env):
            raise ConfigError(f"${ROOT_ENV}={str(env)!r} holds no notebooks/ with studies/ or configs/")
        return env
    for candidate in (Path(__file__).resolve().parents[1], Path.cwd()):
        if _is_root(candidate):
            return candidate
    raise ConfigError(f"cannot find the project folder (notebooks/, configs/, studies/): set ${ROOT_ENV} to the "
                      "clone of manifold_lab, or run from it")


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def configs_dir() -> Path:
    return project_root() / "configs"


def studies_dir() -> Path:
    return project_root() / "studies"


def results_dir() -> Path:
    return project_root() / "results"


def resolve_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as an absolute path: kept when absolute (``~`` expanded), else under the project root, so a
    notebook run from ``notebooks/`` in JupyterLab writes where a study run does."""
    path = Path(out_dir).expanduser()
    return path if path.is_absolute() else project_root() / path
