"""The studies of the paper's remaining tables at CPU scale (Table 10: pre-conditioners), each run shrunken
through the runner and papermill: a few steps, tiny networks, every registered figure drawn."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from manifold_lab.cli import main
from manifold_lab.studies.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
SHRINK = {   # study -> (--set overrides, metrics every point reports, points)
    "toy_preconditioner": (["D=[8]", "pred=[edm, linear]", "loss=[v]", "seed=[0]", "steps=20", "batch_size=32",
                            "n_samples=100", "sample_steps=3", "hidden_size=16"], {"nn_dist", "off_manifold"}, 2),
    "image_preconditioner": (["row=[{loss: v, seed: 0}]", "pred=[edm, linear]", "steps=3", "batch_size=8",
                              "n_train=64", "n_samples=16", "sample_steps=2", "feat_steps=11", "warmup_steps=0",
                              "hidden_size=16", "depth=1"], {"fd_feat", "fd_pix"}, 2),
}


@pytest.mark.parametrize("study", list(SHRINK))
def test_paper_study_runs_shrunken(study, tmp_path, monkeypatch):
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path / "cache"))   # papermill kernels inherit it
    monkeypatch.chdir(ROOT)
    spec = load_study(ROOT / "studies" / f"{study}.yaml")
    sets, metrics, points = SHRINK[study]
    args = ["study", f"studies/{study}.yaml", "--results-dir", str(tmp_path / "results"), "--workers", "2",
            "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    summary = pd.read_csv(tmp_path / "results" / study / "summary.csv")
    assert summary["run_id"].nunique() == points and metrics <= set(summary["metric"])
    assert set(summary["pred"]) >= {"edm", "linear"}
    assert summary[summary["metric"].isin(metrics)]["value"].notna().all()
    for name in spec.figures:
        assert (tmp_path / "results" / study / f"fig_{name}.png").stat().st_size > 5_000, name
