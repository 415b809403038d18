"""The long skip (MLP and image JiT) and the toy's data scale: the knobs, their defaults, and the three
studies (toy_skip, image_skip, toy_data_scale) shrunken through the runner."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from manifold_lab import toy
from manifold_lab.checks import ConfigError
from manifold_lab.cli import main
from manifold_lab.data.manifold import ColumnOrthogonalEmbedding, sample_toy
from manifold_lab.image_study import ImageConfig, make_net
from manifold_lab.nets.mlp import MLP
from manifold_lab.nets.skip import LongSkip
from manifold_lab.toy import ToyConfig, run_toy_model

ROOT = Path(__file__).resolve().parents[1]
TINY = {"D": 8, "steps": 30, "batch_size": 32, "n_samples": 60, "sample_steps": 2, "hidden_size": 32, "depth": 3}


def test_long_skip_starts_as_the_plain_net_and_learns_its_gates():
    torch.manual_seed(0)
    plain = MLP(8, hidden_size=16, depth=3)
    torch.manual_seed(0)
    wrapped = LongSkip(MLP(8, hidden_size=16, depth=3), (8,))
    z, t = torch.randn(5, 8), torch.rand(5)
    assert torch.equal(wrapped(z, t), plain(z, t)) and wrapped.gate.shape == (8,)
    wrapped.gate.data.fill_(0.5)
    torch.testing.assert_close(wrapped(z, t), plain(z, t) + 0.5 * z)
    (wrapped(z, t) ** 2).sum().backward()
    assert wrapped.gate.grad is not None and wrapped.gate.grad.abs().sum() > 0


def test_image_long_skip_wraps_the_same_jit():
    cfg = ImageConfig(patch_size=2, hidden_size=16, depth=1)
    plain, skip = make_net(cfg), make_net(ImageConfig(patch_size=2, hidden_size=16, depth=1, long_skip=True))
    assert isinstance(skip, LongSkip) and skip.gate.shape == (3, 8, 8)
    for (n1, p1), (n2, p2) in zip(plain.named_parameters(), skip.inner.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    z, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    skip.gate.data.fill_(1.0)
    torch.testing.assert_close(skip(z, t), plain(z, t) + z)


@pytest.mark.parametrize("bad, msg", [({"data_scale": 0}, "data_scale must be a finite number > 0, got 0"),
                                      ({"data_scale": -2.0}, "got -2.0"), ({"data_scale": "4"}, "got '4'"),
                                      ({"long_skip": "yes"}, "long_skip must be true or false, got 'yes'")])
def test_config_checks(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        ToyConfig(**bad)
    with pytest.raises(ConfigError, match="long_skip must be true or false"):
        ImageConfig(long_skip=1)


def test_long_skip_changes_the_run_and_its_gates_train(tmp_path):
    """The default is the plain MLP (test_toy_studies checks it trains on the old batches bit for bit); the
    skip's gates move off zero in training."""
    _, a = run_toy_model(ToyConfig(**TINY), tmp_path / "a", progress=False)
    assert isinstance(a.net, MLP)
    _, c = run_toy_model(ToyConfig(**TINY, long_skip=True), tmp_path / "c", progress=False)
    assert isinstance(c.net, LongSkip) and c.net.gate.abs().sum() > 0    # the gates trained
    assert not torch.equal(a.samples, c.samples)


def test_data_scale_trains_on_scaled_data_and_measures_in_unit_scale(tmp_path, monkeypatch):
    """The trainer sees data of RMS s; a sampler that returns perfect data at scale s scores as a perfect
    sampler at s = 1 (samples are divided by s before every metric)."""
    seen, calls = [], {}

    def fake_train(net, den, batch_fn, tcfg, **kw):
        seen.append(batch_fn(4096, torch.Generator().manual_seed(0))[0])
        return real_train(net, den, batch_fn, tcfg, **kw)

    def fake_generate(den, net, shape, **kw):
        cfg = calls["cfg"]
        emb = ColumnOrthogonalEmbedding(cfg.D, cfg.d, seed=cfg.proj_seed)
        return cfg.data_scale * emb.embed(sample_toy(cfg.dist, shape[0], cfg.d, torch.Generator().manual_seed(5)))

    real_train = toy.train
    monkeypatch.setattr(toy, "train", fake_train)
    monkeypatch.setattr(toy, "generate", fake_generate)
    nn = {}
    for s in (1.0, 16.0):
        calls["cfg"] = cfg = ToyConfig(**TINY, data_scale=s)
        metrics, model = run_toy_model(cfg, tmp_path / f"s{s}", progress=False)
        nn[s] = metrics["nn_dist"]
        rms = seen[-1].pow(2).sum(1).mean().div(cfg.d).sqrt().item()
        assert rms == pytest.approx(s, rel=0.05)
        with np.load(tmp_path / f"s{s}" / "samples.npz") as f:
            assert np.allclose(f["samples"], model.samples.numpy())
    assert nn[16.0] == pytest.approx(nn[1.0], rel=1e-5)


SHRINK = {
    "toy_skip": ["cell=[{hidden_size: 16, D: 4}]", "pred=[x]", "seed=[0]", "steps=20", "batch_size=32",
                 "n_samples=100", "sample_steps=3"],
    "toy_data_scale": ["data_scale=[0.25,4.0]", "D=[4]", "pred=[x,v]", "seed=[0]", "steps=20", "batch_size=32",
                       "n_samples=100", "sample_steps=3", "hidden_size=16"],
    "image_skip": ["setting=[{patch_size: 2, hidden_size: 16, steps: 3}]", "pred=[x]", "long_skip=[false,true]",
                   "seed=[0]", "batch_size=8", "n_train=64", "n_samples=16", "sample_steps=2", "feat_steps=11",
                   "warmup_steps=0", "depth=1"],
}
RUNS = {"toy_skip": 2, "toy_data_scale": 4, "image_skip": 2}


@pytest.mark.parametrize("study", list(SHRINK))
def test_study_runs_shrunken_through_the_runner(study, tmp_path, monkeypatch):
    from manifold_lab.studies.spec import load_study

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path / "cache"))
    spec = load_study(ROOT / "studies" / f"{study}.yaml")
    assert len(spec.points()) == {"toy_skip": 198, "toy_data_scale": 144, "image_skip": 36}[study]
    args = ["study", f"studies/{study}.yaml", "--results-dir", str(tmp_path), "--workers", "2", "--no-progress"]
    for s in SHRINK[study]:
        args += ["--set", s]
    assert main(args) == 0
    summary = pd.read_csv(tmp_path / study / "summary.csv")
    assert summary["run_id"].nunique() == RUNS[study]
    assert {"nn_dist" if study.startswith("toy") else "fd_feat"} <= set(summary["metric"])
    for name in spec.figures:
        assert (tmp_path / study / f"fig_{name}.png").stat().st_size > 5_000, name
    if "skip_ratio" in spec.figures:                                    # the figure's tidy table beside it
        ratios = pd.read_csv(tmp_path / study / "skip_ratio.csv")
        # plain and skip x-prediction in one cell: every ratio is against plain x (the skip's gates, which add
        # to the derived parameter count, must not split the cell)
        assert set(ratios["long_skip"]) == {True, False} and ratios["ratio"].notna().all()
    if "scale_ratio" in spec.figures:                                   # v over x at each data scale
        ratios = pd.read_csv(tmp_path / study / "scale_ratio.csv")
        assert sorted(ratios["data_scale"].unique()) == [0.25, 4.0] and ratios["ratio"].notna().all()
        assert (ratios.loc[ratios["pred"] == "x", "ratio"] == 1).all()


@pytest.mark.parametrize("study, points", [("toy_phase_seeds", 108), ("toy_sample_complexity", 28)])
def test_written_studies_load_and_match_their_notebooks(study, points):
    """The YAMLs of items 5 and 6 of issue 22 expand to their grids and name only notebook parameters."""
    from manifold_lab.studies.spec import check_against_notebook, load_study

    spec = load_study(ROOT / "studies" / f"{study}.yaml")
    check_against_notebook(spec)
    assert len(spec.points()) == points


def test_skip_ratios_sort_cells_by_their_settings_and_divide_by_plain_x_of_the_same_seed():
    from manifold_lab.plots.toy import skip_ratios

    rows = [{"run_id": f"{w}-{D}-{p}-{s}-{seed}", "hidden_size": w, "D": D, "pred": p, "long_skip": s, "seed": seed,
             "params": 100 + int(s), "metric": "nn_dist", "value": (2.0 if p == "v" else 1.0) * (1 + seed) * D}
            for w, D in [(256, 512), (64, 32), (256, 8), (64, 8)] for p in ("x", "v") for s in (False, True)
            for seed in (0, 1)]
    r = skip_ratios(pd.DataFrame(rows))
    assert list(dict.fromkeys(r["cell"])) == ["hidden_size=64 D=8", "hidden_size=64 D=32", "hidden_size=256 D=8",
                                              "hidden_size=256 D=512"]      # numbers in order, not as text
    assert np.allclose(r.loc[r["pred"] == "v", "ratio"], 2.0) and np.allclose(r.loc[r["pred"] == "x", "ratio"], 1.0)
