"""N*(k), the memorisation -> generalisation transition (manifold_lab.sample_complexity): the rule on a
synthetic summary with a known answer, censoring, the floored null, the fits, and the study's figure drawn
shrunken through the runner and papermill."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from manifold_lab import sample_complexity as sc

ROOT = Path(__file__).resolve().parents[1]
NS = [16, 64, 256, 1024, 4096]


def _summary(n_star_of_k: dict[int, float], null: float = 0.01) -> pd.DataFrame:
    """A long summary where each model copies 50 % of its samples below N*(k) and 0.5 x null from N* on."""
    rows = []
    for k, n_star in n_star_of_k.items():
        for n in NS:
            run = {"study": "t", "run_id": f"k{k}-N{n}", "dist": "sphere", "d": k + 1, "k": k, "D": 512,
                   "pred": "x", "seed": 0, "n_train": n}
            share = 0.5 if n < n_star else 0.5 * null
            for m in "ab":
                rows += [{**run, "metric": f"copy_share_proj_{m}", "value": share},
                         {**run, "metric": f"copy_share_null_{m}", "value": null}]
    return pd.DataFrame(rows)


def test_n_star_is_the_first_n_from_which_every_larger_n_generalises():
    truth = {1: 16, 2: 64, 4: 1024}
    s = _summary(truth)
    # one relapse: model a copies again at N = 4096 for k = 1, so its N* is the end of the grid... censored
    s.loc[(s["k"] == 1) & (s["n_train"] == 4096) & (s["metric"] == "copy_share_proj_a"), "value"] = 0.3
    t = sc.n_star_table(s).set_index(["k", "model"])["n_star"]
    assert t[(2, "a")] == t[(2, "b")] == 64 and t[(4, "a")] == 1024 and t[(1, "b")] == 16
    assert np.isinf(t[(1, "a")])
    assert sc.n_star_table(s).set_index(["k", "model"]).loc[(1, "a"), "censored"]


def test_a_zero_null_is_floored_at_one_sample():
    s = _summary({8: 256}, null=0.0)
    s.loc[s["metric"].str.startswith("copy_share_proj") & (s["n_train"] >= 256), "value"] = 1 / 2000
    assert sc.n_star_table(s, n_samples=2000)["n_star"].tolist() == [256, 256]
    s.loc[s["metric"].str.startswith("copy_share_proj") & (s["n_train"] >= 256), "value"] = 3 / 2000
    assert sc.n_star_table(s, n_samples=2000)["censored"].all()       # 3 copies > 2 x one sample


def test_fits_recover_an_exponential_and_a_power_law():
    exp = sc.fit_n_star(sc.n_star_table(_summary({1: 16, 2: 64, 3: 256})))
    r = exp[(exp["model"] == "both") & (exp["form"] == "exponential")].iloc[0]
    assert r["c"] == pytest.approx(4.0) and r["a"] == pytest.approx(4.0) and r["rms_log2"] < 1e-9
    pw = sc.fit_n_star(sc.n_star_table(_summary({1: 16, 2: 64, 4: 256})))
    r = pw[(pw["model"] == "a") & (pw["form"] == "power")].iloc[0]
    assert r["b"] == pytest.approx(2.0) and r["a"] == pytest.approx(16.0)
    one = sc.fit_n_star(sc.n_star_table(_summary({2: 64})))
    assert (one["form"] == "none").all()


def test_sample_complexity_study_runs_shrunken(tmp_path, monkeypatch):
    """Two spheres, two N, a few steps, through the runner and papermill: the figure and both tables."""
    from manifold_lab.cli import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path / "cache"))
    argv = ["study", "studies/toy_sample_complexity.yaml", "--results-dir", str(tmp_path), "--workers", "2",
            "--no-progress"]
    for s in ["manifold=[{dist: sphere, d: 2}, {dist: sphere, d: 3}]", "n_train=[8, 32]", "steps=10",
              "batch_size=16", "hidden_size=16", "n_samples=64", "sample_steps=3", "n_manifold=1000", "D=16"]:
        argv += ["--set", s]
    assert main(argv) == 0
    out = tmp_path / "toy_sample_complexity"
    assert (out / "fig_n_star_vs_k.png").stat().st_size > 5_000
    table = pd.read_csv(out / "n_star.csv")
    assert sorted(table["k"].unique()) == [1, 2] and set(table["model"]) == {"a", "b"}
    assert set(pd.read_csv(out / "n_star_fit.csv")["model"]) == {"a", "b", "both"}
