"""The bridge rule (toy phase diagram -> image studies) on hand-made tables, and the command on the committed ones."""
import math
from pathlib import Path

import pandas as pd
import pytest

from manifold_lab.bridge import observed_cells, predict, toy_boundary
from manifold_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = pd.DataFrame([
    {"target": "eps", "hidden_size": 64, "D_pass": math.nan, "D_fail": 2, "D_star": math.nan, "status": "fails_everywhere"},
    {"target": "eps", "hidden_size": 256, "D_pass": 2, "D_fail": 4, "D_star": 3.0, "status": "crossing"},
    {"target": "eps", "hidden_size": 512, "D_pass": 2, "D_fail": 8, "D_star": math.nan, "status": "bracketed"},
    {"target": "v", "hidden_size": 64, "D_pass": 8, "D_fail": 32, "D_star": 10.0, "status": "crossing"}])
FIT = pd.DataFrame([{"target": "eps", "a": math.nan, "b": math.nan, "formula": "no fit"},
                    {"target": "v", "a": 2.0, "b": 0.5, "formula": "D* = 2 w^0.50"}])


def test_toy_boundary_reads_the_fit_or_the_nearest_width():
    assert toy_boundary("v", 16, BOUNDARY, FIT)[0] == pytest.approx(8.0)         # 2 * 16^0.5
    assert toy_boundary("eps", 32, BOUNDARY, FIT)[0] == 1.0                      # nearest 64: fails everywhere
    assert toy_boundary("eps", 200, BOUNDARY, FIT)[0] == 3.0                     # nearest 256: crossing
    assert toy_boundary("eps", 600, BOUNDARY, FIT)[0] == pytest.approx(4.0)      # bracketed: sqrt(2 * 8)


def _summary(rows):
    return pd.DataFrame([{"patch_size": p, "hidden_size": 16, "loss": "v", "steps": 10, "pred": pred, "seed": s,
                          "metric": "fd_feat", "value": v} for p, pred, s, v in rows])


def test_rule_predicts_and_observes_per_cell():
    s = _summary([(2, "x", 0, 1.0), (2, "x", 1, 2.0), (2, "v", 0, 2.0), (2, "v", 1, 8.0),
                  (8, "x", 0, 1.0), (8, "v", 0, 2.0), (8, "eps", 0, 1.0)])
    cells = observed_cells({"image_patch": s})
    v2 = cells[(cells.patch_size == 2) & (cells.pred == "v")].iloc[0]
    assert v2["ratio"] == pytest.approx(5 / 1.5) and (v2["ratio_min"], v2["ratio_max"]) == (2.0, 4.0)
    dims = pd.DataFrame({"patch_size": [2, 8], "d_twonn": [6.0, 12.0], "d_mle": [6.0, 12.0]})
    t = predict(cells, dims, BOUNDARY, FIT).set_index(["patch_size", "pred"])
    assert t.loc[(2, "v"), "D_eq"] == pytest.approx(2 * 12 / 6) and t.loc[(2, "v"), "D_star"] == pytest.approx(8)
    assert t.loc[(2, "v"), "predicted"] == "pass" and t.loc[(2, "v"), "observed"] == "fail"
    assert not t.loc[(2, "v"), "agree"]
    assert t.loc[(8, "v"), "D_eq"] == pytest.approx(32) and t.loc[(8, "v"), "predicted"] == "fail"
    assert t.loc[(8, "v"), "observed"] == "pass" and t.loc[(8, "eps"), "predicted"] == "fail"


def test_bridge_command_on_the_committed_tables(tmp_path, capsys):
    assert main(["bridge", "--results-dir", str(ROOT / "results"), "--out", str(tmp_path)]) == 0
    assert "cells agree" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert len(table) == 26 and set(table["predicted"]) <= {"pass", "fail"}
    committed = pd.read_csv(ROOT / "results" / "bridge" / "predictions.csv")
    pd.testing.assert_frame_equal(table, committed)
    assert (tmp_path / "fig_bridge.png").stat().st_size > 5_000
    assert main(["bridge", "--results-dir", str(tmp_path)]) == 2
