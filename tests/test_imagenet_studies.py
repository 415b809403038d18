"""The paper's ImageNet experiments as papermill studies, each run shrunken through the runner: a generated
ImageFolder, the tiny CPU JiT for 2 epochs, the tiny stand-in feature extractor for FID (its numbers are no
FIDs), a CFG x EMA search and a final evaluation. One point goes through torchrun with 2 processes."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from imagenet_helpers import make_image_folder

from manifold_lab.cli import main
from manifold_lab.studies.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
TINY_RUNG = "{config: jit_tiny_cpu, model_args: {bottleneck_dim: 8, rope: true, qk_norm: true, in_context_len: 4}}"
SHRINK = {   # study -> --set arguments that leave one tiny point
    "imagenet_pred_loss": ["config=[jit_tiny_cpu]", "loss=[v]", "pred=[x]"],
    "imagenet_noise_shift": ["config=jit_tiny_cpu", "p_mean=[-0.4]", "pred=[x]"],
    "imagenet_bottleneck": ["config=jit_tiny_cpu",
                            "embedding=[{model_args: {bottleneck_dim: 4, rope: false, qk_norm: false, "
                            "in_context_len: 0}}]"],
    "imagenet_ablation": [f"rung=[{TINY_RUNG}]", "nproc=2"],                  # torchrun: 2 gloo processes
    "imagenet_preconditioner": ["config=jit_tiny_cpu", "loss=[v]", "pred=[edm]"],
    "imagenet_resolution": ["config=[jit_tiny_cpu]"],
    "imagenet_cls_loss": ["arm=[{config: jit_tiny_cpu, model_args: {cls_head_after: 1, cls_weight: 100.0}}]"],
}
FROM_RUN = {   # studies that evaluate a finished point of imagenet_scale again: --set overrides, given its folder
    "imagenet_cross_res": lambda run: [f"point=[{{config: jit_tiny_cpu, from_run: {run}, eval_size: 8}}]"],
    "imagenet_cfg_curve": lambda run: ["config=jit_tiny_cpu", f"from_run={run}", "window=[{interval: [0.1, 1.0]}]"],
}
COMMON = ["nproc=1", "epochs=2", "overrides={num_workers: 0}", "search_samples=6", "n_samples=9", "sample_steps=2",
          "cfg_scales=[1.0, 2.0]", "emas=[ema1, ema2]", "feature_extractor=tiny", "sample_batch_size=4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagenet") / "train", classes=3, per_class=4)


@pytest.mark.parametrize("name", list(SHRINK))
def test_imagenet_study_runs_shrunken(name, data, tmp_path, monkeypatch):
    run_shrunken(name, SHRINK[name], data, tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def scale_point(data, tmp_path_factory):
    """imagenet_scale shrunken to one tiny point (checked like the others): the finished point's folder."""
    tmp = tmp_path_factory.mktemp("scale")
    with pytest.MonkeyPatch.context() as mp:
        study_dir = run_shrunken("imagenet_scale", ["point=[{config: jit_tiny_cpu, epochs: 2}]"], data, tmp, mp)
    return study_dir / "jit_tiny_cpu-e2"


@pytest.mark.parametrize("name", list(FROM_RUN))
def test_finished_point_evaluated_again_shrunken(name, scale_point, data, tmp_path, monkeypatch):
    study_dir = run_shrunken(name, FROM_RUN[name](scale_point), data, tmp_path, monkeypatch)
    run = next(p for p in study_dir.iterdir() if (p / "metrics.json").is_file())
    assert not list((run / "run").glob("*.pth"))                              # evaluated, not trained:
    assert (run / "run" / "log.csv").read_bytes() == (scale_point / "run" / "log.csv").read_bytes()  # its log
    if name == "imagenet_cross_res":
        assert json.loads((run / "config.json").read_text())["eval_size"] == 8
        assert list((tmp_path / "cache").glob("fid_refs/*-px8-tiny.npz"))     # measured against an 8 px reference


def run_shrunken(name, sets, data, tmp_path, monkeypatch) -> Path:
    """Run study ``name`` through the runner with COMMON + ``sets``; check its one point and figures."""
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path / "cache"))        # the kernels inherit it
    monkeypatch.chdir(ROOT)
    spec = load_study(ROOT / "studies" / f"{name}.yaml")
    assert spec.study == name and spec.resources["gpus_per_node"] == 8         # a real point: 8 GPUs
    args = ["study", f"studies/{name}.yaml", "--results-dir", str(tmp_path / "results"), "--no-progress",
            "--set", f"data_path={data}"]
    for s in COMMON + sets:
        args += ["--set", s]
    assert main(args) == 0
    study_dir = tmp_path / "results" / name
    summary = pd.read_csv(study_dir / "summary.csv")
    assert summary.run_id.nunique() == 1
    m = summary.set_index("metric").value
    nproc = 2 if "nproc=2" in sets else 1
    steps = 2 * (12 // nproc // 4)                                           # 2 epochs of 12 images, batch 4
    row = summary.iloc[0]                      # derived settings are columns (config.json), not metrics
    assert m["fid"] >= 0 and m["is_mean"] > 0 and row["n_samples"] == 9 and row["steps"] == steps
    assert not {"cfg", "cfg_scale", "ema", "steps"} & set(summary["metric"]) and row["ema"] in ("ema1", "ema2")
    run = study_dir / summary.run_id.iloc[0]
    sweep = pd.read_csv(run / "sweep" / "sweep.csv")
    assert len(sweep[sweep.stage == "search"]) == 4 and len(sweep[sweep.stage == "final"]) == 1
    best = json.loads((run / "sweep" / "best.json").read_text())
    assert row["cfg_scale"] == best["final"]["cfg_scale"] and m["fid"] == pytest.approx(best["final"]["fid"])
    for fig in spec.figures:
        assert (study_dir / f"fig_{fig}.png").stat().st_size > 10_000
    if name == "imagenet_ablation":
        assert "2 process(es) on cpu" in (run / "train.log").read_text()
    return study_dir
