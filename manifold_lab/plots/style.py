"""The one plot style: colours per prediction target and a theme applied inside a context.

Figure functions never change the caller's matplotlib state: no backend switch (the study runner sets
``MPLBACKEND=Agg`` in a kernel's environment; ``python -m manifold_lab`` does the same for itself), and
styling through :func:`theme`, which restores every rcParam on exit. ``theme`` works as a ``with`` block
or as a decorator on a figure function::

    @theme("whitegrid")
    def fig_something(summary, study_dir): ...

seaborn is imported by the figure functions that draw with it, not at module level: a run's own figure (one
per point, drawn in the point's kernel: ``plot_toy_samples``, ``save_image_grid``) needs matplotlib alone,
and seaborn's import (with scipy.stats) cost every point about 1.3 s.
"""
from __future__ import annotations

import contextlib

import matplotlib.pyplot as plt
from cycler import cycler

PRED_ORDER = ["x", "eps", "v"]
PRED_COLORS = {"x": "#1b7837", "eps": "#c51b7d", "v": "#2166ac"}


def theme_rc(style: str = "whitegrid", font_scale: float = 0.9) -> dict:
    """The rcParams ``sns.set_theme(style=style, font_scale=font_scale)`` would set, as a dict."""
    import seaborn as sns

    return {**sns.plotting_context("notebook", font_scale=font_scale), **sns.axes_style(style),
            "axes.prop_cycle": cycler(color=sns.color_palette("deep")), "font.family": ["sans-serif"]}


@contextlib.contextmanager
def theme(style: str = "whitegrid", font_scale: float = 0.9):
    """Seaborn's theme (``style``: whitegrid, white, ticks, ...) for the figures made inside; the caller's
    rcParams come back on exit, also after an error."""
    with plt.rc_context(theme_rc(style, font_scale)):
        yield
