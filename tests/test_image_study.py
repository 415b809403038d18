"""The real-image study: the metric, the run function, and each study YAML run shrunken through the runner."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from manifold_lab import io
from manifold_lab.checks import ConfigError
from manifold_lab.data.real_images import make_image_set
from manifold_lab.image_study import ImageConfig, make_net, run_image_point
from manifold_lab.metrics.features import FEATURE_DIM, load_feature_net, rotate_batch
from manifold_lab.metrics.images import ImageMetric, PixelPCA, frechet_distance, pixel_pca

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["image_pred_loss", "image_width", "image_patch", "image_bottleneck", "image_noise_shift"]
# every run of the shrunken studies: a few steps on a few images
TINY = dict(steps=3, batch_size=8, n_train=64, n_samples=16, sample_steps=2, feat_steps=11, warmup_steps=0)


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path / "cache"))   # papermill kernels inherit it
    return tmp_path / "cache"


def test_frechet_distance_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 3))
    b = a * np.array([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, -2.0])
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sd_a - sd_b)^2 = 5 + (0 + 1 + 0.25)
    assert frechet_distance(a, b) == pytest.approx(6.25, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_pixel_pca_keeps_at_most_64_components():
    ref = torch.randn(100, 3, 8, 8)
    assert PixelPCA.fit(ref)(torch.randn(5, 3, 8, 8)).shape == (5, 64)
    assert PixelPCA.fit(torch.randn(100, 3, 2, 2))(torch.randn(5, 3, 2, 2)).shape == (5, 12)


def test_pixel_pca_is_fitted_once_per_reference_set(tmp_cache):
    ref, other = torch.randn(100, 3, 8, 8), torch.randn(100, 3, 8, 8)
    first = pixel_pca(ref)
    assert len(list((tmp_cache / "pixel_pca").glob("*.npz"))) == 1
    again, fit = pixel_pca(ref.clone()), PixelPCA.fit(ref)
    x = torch.randn(5, 3, 8, 8)
    assert np.array_equal(first(x), again(x)) and np.array_equal(again(x), fit(x))   # read back to the bit
    assert torch.equal(again.components, fit.components) and again.components.shape == (192, 64)
    pixel_pca(other)
    pixel_pca(ref, k=8)
    assert len(list((tmp_cache / "pixel_pca").glob("*.npz"))) == 3     # another set, another k: other files


def test_rotate_batch_turns_each_image_by_its_own_count():
    x = torch.arange(2 * 1 * 2 * 2.0).reshape(2, 1, 2, 2)
    out = rotate_batch(x, torch.tensor([0, 1]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], torch.rot90(x[1], 1, dims=(1, 2)))


def test_feature_net_is_cached_and_metric_has_floors(tmp_cache):
    images = make_image_set("skimage", 8, n_train=64, n_ref=32)
    net, info = load_feature_net(images, steps=3)
    assert len(list((tmp_cache / "features").glob("*.pt"))) == 1 and 0 <= info["feat_net_acc"] <= 1
    again, info2 = load_feature_net(images, steps=3)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    assert torch.equal(net(x), again(x)) and net(x).shape == (4, FEATURE_DIM) and info == info2
    metric = ImageMetric(images, net, n_floor=32)
    m = metric(torch.randn(32, 3, 8, 8) * 3)   # pure noise is far from the photos
    assert m["fd_pix"] > m["fd_pix_floor"] and m["fd_feat"] > m["fd_feat_floor"]
    bad = metric(torch.full((32, 3, 8, 8), float("nan")))
    assert math.isinf(bad["fd_feat"]) and math.isinf(bad["fd_pix"]) and bad["fd_pix_floor"] == m["fd_pix_floor"]


def test_config_checks_and_token_geometry():
    cfg = ImageConfig(patch_size=2, grid_side=4)
    assert (cfg.img_size, cfg.token_dim) == (8, 12)
    assert ImageConfig(patch_size=8).token_dim == 192
    with pytest.raises(ConfigError, match="prediction target"):
        ImageConfig(pred="y")
    with pytest.raises(ConfigError, match="bottleneck"):
        ImageConfig(bottleneck_dim=-1)
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        ImageConfig(device="tpu")
    net = make_net(ImageConfig(patch_size=2, hidden_size=32, depth=1, bottleneck_dim=4))
    assert net(torch.randn(2, 3, 8, 8), torch.rand(2)).shape == (2, 3, 8, 8)


def test_run_image_point_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    metrics = run_image_point(ImageConfig(patch_size=2, hidden_size=16, depth=1, pred="eps", **TINY), out)
    for name in ("metrics.json", "config.json", "curve.csv", "samples.png", "samples.npz"):
        assert (out / name).is_file(), name
    assert io.read_json(out / "metrics.json") == pytest.approx(metrics)
    assert {"fd_feat", "fd_pix", "fd_feat_floor", "fd_pix_floor", "final_loss"} <= set(metrics)
    assert not {"token_dim", "img_size", "params"} & set(metrics)       # settings, not measurements
    config = io.read_json(out / "config.json")
    assert config["run"] == "image" and config["patch_size"] == 2
    assert config["derived"]["token_dim"] == 12 and config["derived"]["img_size"] == 8
    assert config["derived"]["params"] > 0
    assert len(pd.read_csv(out / "curve.csv")) == TINY["steps"]
    with np.load(out / "samples.npz") as f:
        assert f["samples"].shape == (16, 3, 8, 8) and f["samples"].dtype == np.uint8


def _shrink(spec, points: int) -> list[str]:
    """--set overrides: every grid key to its first value (the first key to its first ``points``); tiny runs."""
    sets = [f"{k}=[{v[0]}]" for k, v in spec.grid.items()]
    first = next(iter(spec.grid))
    sets[0] = f"{first}=[{', '.join(map(str, spec.grid[first][:points]))}]"
    return sets + [f"{k}={v}" for k, v in TINY.items()] + ["hidden_size=16", "depth=1"]


@pytest.mark.parametrize("study", STUDIES)
def test_study_runs_shrunken_through_the_runner(study, tmp_path, monkeypatch):
    """One tiny grid point per study (two, on two workers, for the Table 2 analogue): about 10 s each."""
    from manifold_lab.cli import main
    from manifold_lab.studies.spec import load_study

    monkeypatch.chdir(ROOT)
    spec = load_study(ROOT / "studies" / f"{study}.yaml")
    assert spec.study == study
    args = ["study", f"studies/{study}.yaml", "--results-dir", str(tmp_path / "results"), "--workers", "2",
            "--no-progress"]
    points = 2 if study == "image_pred_loss" else 1
    for s in _shrink(spec, points):
        args += ["--set", s]
    assert main(args) == 0
    study_dir = tmp_path / "results" / study
    summary = pd.read_csv(study_dir / "summary.csv")
    assert summary["run_id"].nunique() == points
    assert {"fd_feat", "fd_pix", "fd_feat_floor"} <= set(summary["metric"])
    for name in spec.figures:
        assert (study_dir / f"fig_{name}.png").is_file(), name
