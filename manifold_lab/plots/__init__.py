"""Pure plotting: summary DataFrame -> matplotlib Figure. Study figures are looked up by name.

A study YAML lists figure names under ``figures:``; each name maps to a function
``fn(summary: pd.DataFrame, study_dir: Path) -> Figure`` registered with :func:`register`. ``summary`` is
the study's tidy table: columns study, run_id, one column per notebook parameter, metric, value.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

FIGURES: dict[str, Callable] = {}
_MODULES = ("manifold_lab.plots.toy", "manifold_lab.plots.images", "manifold_lab.plots.imagenet",
            "manifold_lab.plots.phase", "manifold_lab.plots.intrinsic", "manifold_lab.plots.memorisation",
            "manifold_lab.plots.precond", "manifold_lab.plots.phase_fast")


def register(name: str):
    """Decorator: make ``fn(summary, study_dir) -> Figure`` available to study YAMLs as ``name``."""
    def deco(fn):
        FIGURES[name] = fn
        return fn
    return deco


def figure_registry() -> dict[str, Callable]:
    """All registered study figures (imports the modules that define them)."""
    for m in _MODULES:
        importlib.import_module(m)
    return FIGURES


def finish_grid(fig, axes, used: int):
    """Hide the panels of the axes grid past the first ``used`` and tighten the layout; returns fig."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
