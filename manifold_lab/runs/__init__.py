"""Run kinds: the registry (:mod:`.registry`), the files each kind's run folder holds and their accessor
(:mod:`.files`), and the one writer every kind finishes through (:mod:`.writer`).

This package imports no run module; :class:`RunKind` imports its module on first use.
"""
from manifold_lab.run_files import FILES, MissingRunFile, file_name, run_file
from manifold_lab.runs.registry import RUNS, RunKind, get, kind_of_notebook

__all__ = ["FILES", "RUNS", "MissingRunFile", "RunKind", "file_name", "get", "kind_of_notebook", "run_file"]
