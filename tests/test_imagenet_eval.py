"""Sampling, FID/IS and the CFG x EMA sweep end to end, with a seeded stand-in for Inception."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from imagenet_helpers import make_image_folder, tiny_overrides
from PIL import Image

from manifold_lab.data.imagefolder import load_image
from manifold_lab.evaluate import features, ref_stats
from manifold_lab.evaluate import fid as fid_mod
from manifold_lab.evaluate.generate import class_balanced_labels, generate_samples, load_for_sampling, rank_range
from manifold_lab.sample import SamplingConfig
from manifold_lab.train.config import load_config
from manifold_lab.train.imagenet import train

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = make_image_folder(root / "train", classes=3, per_class=8)
    torch.set_num_threads(1)
    train(load_config(None, tiny_overrides(data, root / "run", epochs=2)))
    return root


def test_class_balanced_labels_and_rank_chunks():
    lab = class_balanced_labels(50_000, 1000)
    assert (np.bincount(lab) == 50).all() and (lab[:50] == 0).all() and (np.diff(lab) >= 0).all()
    assert np.bincount(class_balanced_labels(10, 3)).tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    chunks = [rank_range(50_000, r, 8) for r in range(8)]
    assert sum(len(c) for c in chunks) == 50_000 and chunks[3].start == chunks[2].stop


def test_sampling_is_resumable_and_batch_independent(run, tmp_path):
    net, den, cfg, path = load_for_sampling(str(run / "run"), "ema1")
    assert path.name == "checkpoint-last.pth"
    kw = dict(img_size=16, num_classes=3, progress=False)
    s4 = SamplingConfig(n_samples=7, cfg_scale=2.0, sample_steps=3, batch_size=4)
    a = generate_samples(net, den, s4, out_dir=tmp_path / "a", **kw)
    b = generate_samples(net, den, dataclasses.replace(s4, batch_size=3), out_dir=tmp_path / "b", **kw)
    files = sorted(p.name for p in a.glob("*.png"))
    assert files == [f"{i:06d}.png" for i in range(7)]
    pa = [np.asarray(Image.open(a / f)).astype(int) for f in files]
    pb = [np.asarray(Image.open(b / f)).astype(int) for f in files]
    assert max(np.abs(x - y).max() for x, y in zip(pa, pb)) <= 1         # same noise per sample index
    (a / files[2]).unlink()
    first = (a / files[5]).stat().st_mtime_ns
    generate_samples(net, den, s4, out_dir=a, **kw)                       # resume: fills the gap only
    assert (a / files[2]).exists() and (a / files[5]).stat().st_mtime_ns == first
    assert np.array_equal(np.asarray(Image.open(a / files[2])), pa[2].astype(np.uint8))
    c = generate_samples(net, den, s4, out_dir=tmp_path / "c", fmt="npz", **kw)
    with np.load(c / "samples.npz") as z:
        assert z["arr_0"].shape == (7, 16, 16, 3) and z["arr_0"].dtype == np.uint8
        assert z["labels"].tolist() == class_balanced_labels(7, 3).tolist()
    assert not list(c.glob("*.png"))


def test_fid_matches_torch_fidelity_calculate_metrics(run, tmp_path):
    import torch_fidelity

    data = run / "train"
    ref_dir = tmp_path / "ref_pngs"                                        # centre-cropped PNGs, as the paper
    ref_dir.mkdir()
    for i, p in enumerate(sorted(data.rglob("*.*"))):
        Image.fromarray(load_image(str(p), 16).permute(1, 2, 0).numpy()).save(ref_dir / f"{i:04d}.png")
    stats = ref_stats.prepare_ref(data, tmp_path / "ref.npz", img_size=16, kind="tiny", verbose=False)
    net, den, cfg, _ = load_for_sampling(str(run / "run"), "ema2")
    s10 = SamplingConfig(ema="ema2", n_samples=20, cfg_scale=1.5, sample_steps=3, batch_size=10)
    samples = generate_samples(net, den, s10, out_dir=tmp_path / "s", img_size=16, num_classes=3, progress=False)
    ours = fid_mod.evaluate_folder(samples, stats, kind="tiny", batch_size=8)
    kw = features.fidelity_kwargs("tiny", batch_size=8)
    theirs = torch_fidelity.calculate_metrics(input1=str(samples), input2=str(ref_dir), isc=True, fid=True,
                                              **{k: v for k, v in kw.items() if k != "samples_find_ext"})
    assert ours["num_samples"] == 20 and np.isfinite(ours["fid"]) and ours["fid"] > 0
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["is_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-6)
    same = fid_mod.evaluate_folder(ref_dir, stats, kind="tiny")            # the reference against itself
    assert abs(same["fid"]) < 1e-3
    packed = generate_samples(net, den, s10, out_dir=samples, img_size=16, num_classes=3, fmt="npz",
                              progress=False)                              # packs the PNGs
    from_npz = fid_mod.evaluate_folder(packed / "samples.npz", stats, kind="tiny", batch_size=8)
    assert from_npz["fid"] == pytest.approx(ours["fid"], rel=1e-6)


def test_sweep_end_to_end(run, tmp_path, capsys):
    from manifold_lab.cli import main
    assert main(["prepare-ref", "--data-path", str(run / "train"), "--img-size", "16", "--out",
                 str(tmp_path / "ref.npz"), "--feature-extractor", "tiny"]) == 0
    out = tmp_path / "sweep"
    argv = ["sweep", "--checkpoint", str(run / "run"), "--ref", str(tmp_path / "ref.npz"), "--cfg-scales",
            "1.0:2.0:1.0", "--emas", "ema1", "ema2", "--search-samples", "12", "--final-samples", "15",
            "--sample-steps", "2", "--out", str(out), "--feature-extractor", "tiny", "--no-progress"]
    assert main(argv) == 0
    import pandas as pd
    df = pd.read_csv(out / "sweep.csv")
    assert len(df) == 5 and (df.stage == "final").sum() == 1
    assert set(df[df.stage == "search"].ema) == {"ema1", "ema2"} and (out / "sweep.png").exists()
    best = df[df.stage == "search"].sort_values("fid").iloc[0]
    final = df[df.stage == "final"].iloc[0]
    assert (final.ema, final.cfg_scale, final.n_samples) == (best.ema, best.cfg_scale, 15)
    assert not list(out.glob("samples-*"))                                 # cleaned up
    capsys.readouterr()
    assert main(argv) == 0 and "sampling" not in capsys.readouterr().out  # resumed: nothing left to do


def test_missing_inception_weights_says_how_to_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(features.ENV_WEIGHTS, raising=False)
    with pytest.raises(FileNotFoundError, match=features.ENV_WEIGHTS):
        features.resolve_inception_weights(None)
    monkeypatch.setenv(features.ENV_WEIGHTS, str(tmp_path / "w.pth"))
    from manifold_lab.cli import main
    (tmp_path / "s").mkdir()
    np.savez(tmp_path / "ref.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    assert main(["fid", str(tmp_path / "s"), "--ref", str(tmp_path / "ref.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights-inception-2015-12-05" in err and "--inception-weights" in err
    with pytest.raises(FileNotFoundError, match="prepare-ref"):
        ref_stats.load_ref_stats(tmp_path / "nope.npz")


def test_guidance_interval_with_zero_lower_bound_guides_from_t0():
    """The paper's code: interval_min == 0 means no lower bound, so the first step (t = 0) is guided."""
    from manifold_lab.denoiser import Denoiser
    from manifold_lab.sample import guided_velocity

    class Net(torch.nn.Module):
        def forward(self, z, t, y):
            return z * 0 + (y != 3).float().view(-1, 1)        # x-pred: 1 conditional, 0 unconditional

    den = Denoiser(pred="x", loss="v", num_classes=3)
    z, y = torch.zeros(2, 4), torch.tensor([0, 1])
    t0 = torch.zeros(2)
    no_lo = guided_velocity(den, Net(), y, cfg_scale=3.0, interval=(0.0, 1.0))(z, t0)
    lo = guided_velocity(den, Net(), y, cfg_scale=3.0, interval=(0.1, 1.0))(z, t0)
    assert torch.allclose(no_lo, torch.full_like(z, 3.0)) and torch.allclose(lo, torch.ones_like(z))


def test_imagenet_point_builds_a_sweep_config_and_its_argv_round_trips(tmp_path):
    """The ImageNet point calls the sweep with a SweepConfig; for torchrun the same config as flags parses
    back to an equal config (no cli import in the point, one spelling of each knob)."""
    from manifold_lab.cli import build_parser
    from manifold_lab.evaluate.sweep import sweep_argv, sweep_from_args
    from manifold_lab.imagenet_study import ImageNetPointConfig, sweep_config

    point = ImageNetPointConfig(cfg_scales=[1.0, 2.5], emas=["ema1", "0.9996"], interval=[0.1, 0.9], n_samples=9,
                                search_samples=6, sample_steps=3, sample_batch_size=4, feature_extractor="tiny")
    cfg = sweep_config(point, tmp_path, tmp_path / "ref.npz")
    assert (cfg.cfg_scales, cfg.emas, cfg.search_samples, cfg.final_samples) == ([1.0, 2.5], ["ema1", "0.9996"], 6, 9)
    assert (cfg.sampling.interval, cfg.sampling.sample_steps, cfg.sampling.batch_size) == ([0.1, 0.9], 3, 4)
    argv = sweep_argv(cfg)
    back, use = sweep_from_args(build_parser("sweep").parse_args([*argv, "--no-progress"]))
    assert back == cfg and use == []               # every sampling field given: nothing left to the checkpoint
    single = sweep_config(dataclasses.replace(point, cfg_scales=[2.0], emas=["ema1"]), tmp_path, tmp_path / "r")
    assert (single.search_samples, single.final_samples) == (9, 0)
    import manifold_lab.imagenet_study as study
    assert "manifold_lab.cli" not in open(study.__file__).read()
