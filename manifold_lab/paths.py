"""Where the project's folders are, so a notebook run from ``notebooks/`` writes where a study run does.

The project root is ``$MANIFOLD_LAB_ROOT`` when set; else the folder above this package when it holds
``studies/`` (a source checkout, ``pip install -e .``); else the current directory. A relative ``out_dir``
is resolved against that root, never against the notebook's folder: ``results/scratch/toy`` from a
JupyterLab kernel started in ``notebooks/`` is ``<root>/results/scratch/toy``, as it is for papermill.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "MANIFOLD_LAB_ROOT"


def project_root() -> Path:
    """The project root: $MANIFOLD_LAB_ROOT, else the source tree's parent if it holds studies/, else cwd."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    source_parent = Path(__file__).resolve().parents[1]
    if (source_parent / "studies").is_dir():
        return source_parent
    return Path.cwd().resolve()


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def configs_dir() -> Path:
    return project_root() / "configs"


def studies_dir() -> Path:
    return project_root() / "studies"


def results_dir() -> Path:
    return project_root() / "results"


def resolve_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as an absolute path: kept when absolute (``~`` expanded), else under the project root."""
    path = Path(out_dir).expanduser()
    return path if path.is_absolute() else project_root() / path
