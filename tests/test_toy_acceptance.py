"""Acceptance of the toy study at its default budget (slow: 413 s on 2 cores; `pytest -m slow`).

At D=512 x-prediction's samples lie on the data while eps- and v-prediction are at least 10 times worse
on nearest-neighbour distance and on the off-manifold residual; at D=2 all three targets work; 3 seeds.
"""
from pathlib import Path

import pandas as pd
import pytest

from manifold_lab.studies.runner import run_study
from manifold_lab.studies.spec import load_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_toy_fig2_acceptance_three_seeds(tmp_path):
    spec = load_study(ROOT / "studies/toy_fig2.yaml")
    spec.override(["D=[2,512]", "seed=[0,1,2]"])
    rep = run_study(spec, tmp_path, workers=2, progress=False, figures=False)
    assert rep["failed"] == []
    df = pd.read_csv(tmp_path / "toy_fig2" / "summary.csv")
    tab = df.pivot_table(index=["D", "seed", "pred"], columns="metric", values="value")
    for seed in (0, 1, 2):
        x = tab.loc[(512, seed, "x")]
        assert x["nn_dist"] < 0.1
        for bad in ("eps", "v"):
            assert tab.loc[(512, seed, bad), "nn_dist"] >= 10 * x["nn_dist"]
            assert tab.loc[(512, seed, bad), "off_manifold"] >= 10 * x["off_manifold"]
        for pred in ("x", "eps", "v"):
            assert tab.loc[(2, seed, pred), "nn_dist"] < 0.1
