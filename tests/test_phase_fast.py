"""toy_phase_fast against toy_phase: the cell-by-cell and boundary comparison of the fast CPU mode (issue 20)."""
from __future__ import annotations

import pandas as pd
import pytest

from manifold_lab.plots import figure_registry


def _summary(study: str, v_at_8: float) -> pd.DataFrame:
    """Two widths x D in {2, 8, 32} x targets; x 0.01 everywhere, eps 100x (fails), v 1x, v_at_8 x, 10x."""
    rows = []
    for w in (64, 128):
        for D, v in ((2, 1.0), (8, v_at_8), (32, 10.0)):
            for pred, value in (("x", 0.01), ("eps", 1.0), ("v", 0.01 * v)):
                rows.append({"study": study, "run_id": f"w{w}-D{D}-{pred}", "hidden_size": w, "D": D, "pred": pred,
                             "seed": 0, "metric": "nn_dist", "value": value})
    return pd.DataFrame(rows)


def test_fast_vs_fp32_compares_each_cell_and_the_boundary(tmp_path):
    (tmp_path / "toy_phase").mkdir()
    fp32 = _summary("toy_phase", 2.0)
    fp32 = fp32[~((fp32["hidden_size"] == 128) & (fp32["D"] == 32) & (fp32["pred"] == "v"))]   # a cell not run
    fp32.to_csv(tmp_path / "toy_phase" / "summary.csv", index=False)
    fast_dir = tmp_path / "toy_phase_fast"
    fast_dir.mkdir()
    fig = figure_registry()["fast_vs_fp32"](_summary("toy_phase_fast", 5.0), fast_dir)
    assert len(fig.axes) == 2
    cells = pd.read_csv(fast_dir / "fast_vs_fp32.csv")
    assert len(cells) == 2 * 3 * 3 - 1 and cells[["fp32", "fast"]].notna().all().all()   # both run: compared
    flips = cells[cells["passes_fp32"] != cells["passes_fast"]]
    assert flips[["hidden_size", "D", "pred"]].values.tolist() == [[64, 8, "v"], [128, 8, "v"]]
    assert flips["fast_over_fp32"].tolist() == pytest.approx([2.5, 2.5])
    bound = pd.read_csv(fast_dir / "boundary_vs_fp32.csv").set_index(["target", "hidden_size"])
    v = bound.loc[("v", 64)]
    assert v["D_pass_fp32"] == 8 and v["D_fail_fp32"] == 32 and v["D_pass_fast"] == 2 and v["D_fail_fast"] == 8
    assert 8 < v["D_star_fp32"] < 32 and 2 < v["D_star_fast"] < 8
    assert bound.loc[("eps", 64), "status_fp32"] == bound.loc[("eps", 64), "status_fast"] == "fails_everywhere"


def test_fast_vs_fp32_names_the_missing_reference(tmp_path):
    with pytest.raises(FileNotFoundError, match="toy_phase/summary.csv is missing"):
        figure_registry()["fast_vs_fp32"](_summary("toy_phase_fast", 5.0), tmp_path / "toy_phase_fast")
