"""Interactive controls over :mod:`manifold_lab.explore` for JupyterLab (ipywidgets): choose a study, a
metric, the table's rows and columns and a value of any other parameter (D, pred, ...); the status line,
the pivoted table (mean over the seeds left), the paper's numbers where it has them and the study's saved
figures follow the choice. Nothing is trained."""
from __future__ import annotations

import pandas as pd

from manifold_lab import explore

ALL = "(all)"


def _filter_widgets(df: pd.DataFrame, rows: str, cols: str) -> dict:
    import ipywidgets as w

    out = {}
    for c in explore.parameters(df):
        values = sorted(df[c].dropna().unique().tolist(), key=str)
        if c not in (rows, cols) and 1 < len(values) <= 16:
            out[c] = w.Dropdown(options=[ALL, *values], value=ALL, description=c)
    return out


def _show(state: dict) -> None:
    from IPython.display import Image, display

    df, study = state["df"], state["study"].value
    sel = df
    for col, box in state["filters"].items():
        if box.value != ALL:
            sel = sel[sel[col] == box.value]
    print(explore.status_line(explore.status(study, state["results_dir"])))
    rows, cols, metric = state["rows"].value, state["cols"].value, state["metric"].value
    if rows == cols:
        print("rows and columns must differ")
    elif not sel[sel["metric"] == metric].empty:
        display(explore.table(sel, metric, rows=rows, cols=cols))
    if not explore.paper_numbers(study).empty:
        print(explore.paper_numbers(study).attrs["source"])
        display(explore.beside_paper(study, metric, state["results_dir"]))
    for png in explore.figures(study, state["results_dir"]):
        display(Image(filename=str(png)))


def _load(state: dict) -> None:
    """A new study: its table, a default view and its filter boxes."""
    df = explore.load_summary(state["study"].value, state["results_dir"])
    metric, rows, cols = explore.default_view(df)
    rows = rows[0] if isinstance(rows, list) else rows   # one dropdown per axis
    names = explore.parameters(df) + ["run_id"]
    state.update(df=df, filters={})
    state["metric"].options, state["metric"].value = sorted(df["metric"].unique()), metric
    for box, value in ((state["rows"], rows), (state["cols"], cols)):
        box.options, box.value = names, value
    state["filters"] = _filter_widgets(df, rows, cols)


def explorer(study: str | None = None, results_dir=None):
    """The explorer as one widget: study / metric / rows / columns dropdowns, a filter per other parameter."""
    import ipywidgets as w

    studies = explore.list_studies(results_dir)
    state = {"results_dir": results_dir, "study": w.Dropdown(options=studies, value=study or studies[0],
                                                             description="study"),
             "metric": w.Dropdown(description="metric"), "rows": w.Dropdown(description="rows"),
             "cols": w.Dropdown(description="columns"), "busy": False}
    out, box = w.Output(), w.VBox()

    def refresh(change=None, reload=False):
        if state["busy"]:
            return
        state["busy"] = True
        try:
            if reload:
                _load(state)
                for f in state["filters"].values():
                    f.observe(refresh, names="value")
            box.children = [w.HBox([state["study"], state["metric"]]), w.HBox([state["rows"], state["cols"]]),
                            w.HBox(list(state["filters"].values())), out]
            out.clear_output()
            with out:
                _show(state)
        finally:
            state["busy"] = False

    state["study"].observe(lambda c: refresh(c, reload=True), names="value")
    for key in ("metric", "rows", "cols"):
        state[key].observe(refresh, names="value")
    refresh(reload=True)
    return box
