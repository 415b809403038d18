"""The command of every run kind, made from the registry (:data:`manifold_lab.runs.registry.RUNS`): a flag per
config field, ``--out``, ``--threads``, ``--no-progress`` (:func:`manifold_lab.config.add_run_command`). A kind
with ``custom_command`` (intrinsic: ``id``) registers its own command in its module."""
from __future__ import annotations

from manifold_lab.config import add_run_command
from manifold_lab.runs.registry import RUNS, RunKind

MODULE = __name__


def command_table() -> dict[str, tuple[str, str]]:
    """command -> (module whose register(sub) adds it, one-line help), for every run kind."""
    table: dict[str, tuple[str, str]] = {}
    for k in RUNS.values():   # two kinds may share a command (id: toy clouds and images); the first one owns it
        table.setdefault(k.command, (k.module if k.custom_command else MODULE, k.help))
    return table


def description(kind: RunKind) -> str:
    """The first paragraph of the kind's module docstring, then the files the run writes."""
    import importlib

    doc = (importlib.import_module(kind.module).__doc__ or kind.help).strip().split("\n\n")[0]
    files = ", ".join(f"OUT/{name}" for name in kind.declared())
    return f"{' '.join(doc.split())} Writes {files} (metrics.json last)."


def register(sub) -> None:
    """Add the command of every run kind that has no command of its own."""
    for kind in RUNS.values():
        if not kind.custom_command:
            add_run_command(sub, kind.command, kind.config, kind.run, help=kind.help, description=description(kind))
