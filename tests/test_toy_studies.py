"""The toy studies beyond the paper: finite training sets, memorisation metrics, the phase boundary fit,
the `id` command, and each of the three studies shrunken through the runner."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.cli import main
from manifold_lab.data.manifold import ColumnOrthogonalEmbedding, sample_toy
from manifold_lab.memorisation import MemorisationConfig
from manifold_lab.metrics.memorisation import memorisation_metrics
from manifold_lab.plots.phase import FACTOR, boundary_table, fit_boundary
from manifold_lab.toy import CycledBatches, ToyConfig, draw_train_set, run_toy_model

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(D=8, steps=30, batch_size=32, n_samples=60, sample_steps=2, hidden_size=32, depth=3)


# ---- n_train ---------------------------------------------------------------------------------------
def test_default_fresh_data_is_the_old_training_bit_for_bit(tmp_path):
    """n_train = 0 trains on exactly the batches the toy drew before the knob existed: the loss curve, the
    first sample and the metrics equal those stored from the code of that time (tests/data/, made at 1b20249
    and checked identical there). Any change to a draw, a seed stream or the training moves them by far more
    than the float rounding of another CPU allows (rtol 1e-6)."""
    ref = json.loads((ROOT / "tests" / "data" / "toy_tiny_fresh_data.json").read_text())
    metrics, model = run_toy_model(ToyConfig(**ref["config"]), tmp_path / "run", progress=False)
    loss = pd.read_csv(tmp_path / "run" / "curve.csv")["loss"].to_numpy()
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(model.samples[0].numpy(), ref["samples_first_row"], rtol=1e-5, atol=1e-6)
    for k, v in ref["metrics"].items():
        assert metrics[k] == pytest.approx(v, rel=1e-5), k
    assert model.train_set is None and "train" not in np.load(tmp_path / "run" / "samples.npz").files


def test_cycled_batches_visit_every_point_once_per_epoch():
    X = torch.arange(12.0)[:, None]
    batches = CycledBatches(X)
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([batches(4, g)[0] for _ in range(3)]).flatten()        # one epoch in three batches
    assert sorted(seen.tolist()) == list(range(12)) and batches.epochs == 1
    big = CycledBatches(X)(30, torch.Generator().manual_seed(1))[0].flatten()  # batch > N: 2 or 3 copies each
    counts = torch.bincount(big.long(), minlength=12)
    assert len(big) == 30 and counts.min() >= 2 and counts.max() <= 3
    again = CycledBatches(X)(30, torch.Generator().manual_seed(1))[0].flatten()
    assert torch.equal(big, again)                                           # reproducible from the seed


def test_finite_training_sets_are_seeded_and_disjoint(tmp_path):
    a = draw_train_set(ToyConfig(n_train=64, data_seed=0))
    assert a.shape == (64, 2) and draw_train_set(ToyConfig()) is None
    assert torch.equal(a, draw_train_set(ToyConfig(n_train=64, data_seed=0, seed=5, D=16)))  # not the run seed
    b = draw_train_set(ToyConfig(n_train=64, data_seed=1))
    assert torch.cdist(a.double(), b.double()).min() > 0
    cfg = ToyConfig(**TINY, n_train=16, data_seed=3)
    _, model = run_toy_model(cfg, tmp_path / "finite", progress=False)
    with np.load(tmp_path / "finite" / "samples.npz") as f:
        np.testing.assert_array_equal(f["train"], draw_train_set(cfg).numpy())
    with pytest.raises(ConfigError, match="n_train must be an integer >= 0"):
        ToyConfig(n_train=-1)
    with pytest.raises(ConfigError, match="n_train must be >= 2"):
        MemorisationConfig(n_train=0)


# ---- memorisation metrics ---------------------------------------------------------------------------
def _sets(dist="gaussian", d=2, D=16, N=500):
    g = torch.Generator().manual_seed(0)
    draw = [sample_toy(dist, n, d, g).numpy() for n in (N, N, 20000, 1000)]
    return ColumnOrthogonalEmbedding(D, d, 0), *draw


def test_copying_models_have_copy_share_one_and_fresh_samples_about_zero():
    emb, train_a, train_b, manifold, fresh = _sets()
    pick = np.random.default_rng(0).integers(0, len(train_a), 400)
    copies = [emb.embed(torch.from_numpy(t[pick])).numpy() for t in (train_a, train_b)]
    m, per = memorisation_metrics(*copies, train_a, train_b, emb, manifold, fresh)
    assert m["copy_share_a"] == 1 and m["copy_share_b"] == 1 and m["dist_train"] == pytest.approx(0, abs=1e-5)
    assert m["train_ratio"] < 0.01 and m["paired_dist_rel"] > 0.5 and per["paired"].shape == (400,)
    assert m["copy_share_proj"] == 1 and m["dist_train_proj"] == pytest.approx(m["dist_train"], abs=1e-6)
    g = torch.Generator().manual_seed(7)
    new = emb.embed(sample_toy("gaussian", 400, 2, g)).numpy()          # a perfect generaliser: fresh draws
    m2, _ = memorisation_metrics(new, new, train_a, train_b, emb, manifold, fresh)
    assert m2["copy_share"] < 0.05 and m2["copy_share_null"] < 0.05
    assert m2["train_ratio"] == pytest.approx(1, abs=0.15) and m2["paired_dist_rel"] == 0
    assert m2["copy_threshold"] == pytest.approx(0.1 * m2["spacing"])
    assert m2["shared_train_points"] == 0
    with pytest.raises(ConfigError, match=f"share {len(train_a)} of {len(train_a)} points"):
        memorisation_metrics(new, new, train_a, train_a, emb, manifold, fresh)
    few = train_b.copy()
    few[:2] = train_a[:2]                        # two coincidences, as float32 draws of a circle give
    m3, _ = memorisation_metrics(new, new, train_a, few, emb, manifold, fresh)
    assert m3["shared_train_points"] == 2


def test_off_subspace_samples_are_far_in_the_ambient_space():
    emb, train_a, train_b, manifold, fresh = _sets()
    copies = emb.embed(torch.from_numpy(train_a[:100])).numpy()
    off = np.eye(16)[None, 0] - emb.P.numpy() @ emb.P.numpy()[0]      # a unit-ish direction off the subspace
    far = copies + 3 * off / np.linalg.norm(off)
    m, per = memorisation_metrics(far, far, train_a, train_b, emb, manifold, fresh)
    np.testing.assert_allclose(per["d_train_a"], 3, rtol=1e-5)
    assert m["copy_share"] == 0
    # inside the subspace they are the training points: the in-subspace measures see the copies
    np.testing.assert_allclose(per["d_train_proj_a"], 0, atol=1e-5)
    assert m["copy_share_proj_a"] == 1 and m["dist_train_proj_a"] < 1e-5 and m["copy_share_proj_b"] < 0.05


# ---- phase boundary -----------------------------------------------------------------------------------
def _synthetic_phase(a=0.5, b=1.0):
    rows = []
    for w in (64, 128, 256, 512, 1024):
        for D in (8, 32, 128, 512, 2048):
            star = a * w ** b
            vals = {"x": 0.01, "v": 0.01 * FACTOR * D / star, "eps": 100.0}
            rows += [{"run_id": f"{w}-{D}-{p}", "hidden_size": w, "D": D, "pred": p, "metric": "nn_dist",
                      "value": v, "dist": "spiral", "d": 2, "steps": 2000} for p, v in vals.items()]
    return pd.DataFrame(rows)


def test_boundary_fit_recovers_a_power_law(tmp_path):
    summary = _synthetic_phase()
    bound = boundary_table(summary)
    v = bound[bound["target"] == "v"].set_index("hidden_size")
    assert (v["status"] == "crossing").all()
    np.testing.assert_allclose(v["D_star"], 0.5 * v.index.to_numpy(float), rtol=1e-9)
    assert v.loc[256, "D_pass"] == 128 and v.loc[256, "D_fail"] == 512
    assert (bound[bound["target"] == "eps"]["status"] == "fails_everywhere").all()
    fit = fit_boundary(bound).set_index("target")
    assert fit.loc["v", "a"] == pytest.approx(0.5) and fit.loc["v", "b"] == pytest.approx(1.0)
    assert math.isnan(fit.loc["eps", "b"]) and fit.loc["v", "n_widths"] == 5
    from manifold_lab.plots import figure_registry

    figure_registry()["phase_diagram"](summary, tmp_path)
    assert pd.read_csv(tmp_path / "boundary_fit.csv").set_index("target").loc["v", "b"] == pytest.approx(1.0)


def test_a_boundary_across_cells_not_run_is_bracketed_not_interpolated(tmp_path):
    summary = _synthetic_phase()
    gone = (summary["hidden_size"] == 256) & (summary["D"] == 128)        # v's last passing cell at width 256
    gone |= (summary["hidden_size"] == 64) & (summary["D"] <= 32)           # and the lower cells at width 64
    bound = boundary_table(summary[~gone]).query("target == 'v'").set_index("hidden_size")
    assert bound.loc[256, "status"] == "bracketed" and math.isnan(bound.loc[256, "D_star"])
    assert bound.loc[256, "D_pass"] == 32 and bound.loc[256, "D_fail"] == 512
    assert bound.loc[64, "status"] == "bracketed" and math.isnan(bound.loc[64, "D_pass"])
    fit = fit_boundary(bound.reset_index().assign(target="v")).set_index("target")
    assert fit.loc["v", "n_widths"] == 3 and fit.loc["v", "b"] == pytest.approx(1.0)
    from manifold_lab.plots import figure_registry

    figure_registry()["phase_diagram"](summary[~gone], tmp_path)           # draws with cells missing


def test_boundary_over_seeds_gives_a_range_and_a_bootstrap_interval(tmp_path):
    """Seed 0 runs the whole grid, seeds 1 and 2 only v's two deciding cells per width (as toy_phase_seeds):
    each seed's own D* (a = 0.4, 0.5, 0.6), their range in boundary.csv, and an interval on b around 1."""
    from manifold_lab.plots.phase import boundary_by_seed

    parts = []
    for seed, a in ((0, 0.5), (1, 0.4), (2, 0.6)):
        part = _synthetic_phase(a=a).assign(seed=seed)
        if seed:
            lo = {w: max(D for D in (8, 32, 128, 512, 2048) if D <= a * w) for w in (64, 128, 256, 512, 1024)}
            low = part["hidden_size"].map(lo)
            part = part[part["pred"].isin(["x", "v"]) & ((part["D"] == low) | (part["D"] == 4 * low))]
        parts.append(part.assign(run_id=part["run_id"] + f"-s{seed}"))
    summary = pd.concat(parts, ignore_index=True)
    per = boundary_by_seed(summary).query("target == 'v'").set_index(["hidden_size", "seed"])
    for seed, a in ((0, 0.5), (1, 0.4), (2, 0.6)):
        np.testing.assert_allclose(per.xs(seed, level="seed")["D_star"], a * per.xs(seed, level="seed").index,
                                   rtol=1e-9)
    bound = boundary_table(summary).query("target == 'v'").set_index("hidden_size")
    assert (bound["n_seeds"] == 3).all() and (bound["seed_status"] == "3 crossing").all()
    lower = summary["run_id"].str.endswith("-s1") & (summary["hidden_size"] == 64) & (summary["D"] == 8)
    short = boundary_table(summary[~lower]).query("target == 'v'").set_index("hidden_size").loc[64]
    assert short["n_seeds"] == 2 and short["seed_status"] == "2 crossing, 1 bracketed"   # seed 1 left out, said so
    np.testing.assert_allclose(bound["D_star_min"], 0.4 * bound.index.to_numpy(float), rtol=1e-9)
    np.testing.assert_allclose(bound["D_star_max"], 0.6 * bound.index.to_numpy(float), rtol=1e-9)
    fit = fit_boundary(boundary_table(summary), boundary_by_seed(summary)).set_index("target").loc["v"]
    assert fit["n_boot"] > 0 and fit["b_lo"] < 1.0 < fit["b_hi"] and fit["b_hi"] - fit["b_lo"] < 0.5
    assert fit["a_lo"] < fit["a"] < fit["a_hi"] and "(b " in fit["formula"]
    assert fit_boundary(boundary_table(summary)).set_index("target").loc["v", "n_boot"] == 0   # no seeds given
    from manifold_lab.plots import figure_registry

    figure_registry()["phase_diagram"](summary, tmp_path)
    written = pd.read_csv(tmp_path / "boundary.csv").query("target == 'v'")
    assert {"D_star_min", "D_star_max", "n_seeds"} <= set(written.columns)


# ---- the id command ------------------------------------------------------------------------------------
def test_id_command_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "id.json"
    assert main(["id", "--dist", "sphere", "--d", "3", "--D", "64", "--n", "1500", "--estimator", "twonn",
                 "--out", str(out)]) == 0
    line = capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert "twonn dimension of x" in line and "k=2" in line and f"{rec['estimate']:.3f}" in line
    assert rec["k"] == 2 and rec["d"] == 3 and rec["D"] == 64 and rec["estimate"] == pytest.approx(2, rel=0.2)
    assert main(["id", "--dist", "sphere", "--d", "3", "--D", "64", "--n", "1500", "--estimator", "mle",
                 "--of", "z", "--t", "0.5", "--out", str(out)]) == 0
    assert "z at t=0.5" in capsys.readouterr().out and json.loads(out.read_text())["estimate"] > 10
    run_toy_model(ToyConfig(**TINY), tmp_path / "run", progress=False)
    assert main(["id", "--samples", str(tmp_path / "run"), "--estimator", "pca", "--pca-k", "10"]) == 0
    assert "pca dimension of samples (spiral, d=2 (k=1), D=8, n=60)" in capsys.readouterr().out
    assert main(["id", "--of", "w"]) == 2 and "unknown cloud 'w'" in capsys.readouterr().err


# ---- the three studies, shrunken, through the runner ------------------------------------------------------
SHRINK = {
    "toy_phase": ["hidden_size=[16]", "D=[4]", "pred=[x,v]", "steps=20", "batch_size=32", "n_samples=100",
                  "sample_steps=3"],
    "toy_memorisation": ["D=[2]", "n_train=[16]", "pred=[x]", "steps=20", "batch_size=32", "n_samples=100",
                         "sample_steps=3", "n_manifold=2000", "hidden_size=32"],
    "toy_intrinsic_dim": ["D=[16]", "dist=sphere", "d=3", "n=300", "steps=20", "batch_size=32", "n_samples=300",
                          "sample_steps=3", "jac_points=3", "t_grid=[0.5,1.0]", "jac_t=[0.5,0.95]", "preds=[x,v]",
                          "hidden_size=32"],
}
METRICS = {"toy_phase": {"nn_dist"},
           "toy_memorisation": {"copy_share", "copy_share_proj", "paired_dist_rel", "train_ratio", "train_ratio_proj"},
           "toy_intrinsic_dim": {"id_twonn_x", "id_mle_samples_v", "id_pca_samples_proj_x", "jac_count_x_t0.95"}}


@pytest.mark.parametrize("study", list(SHRINK))
def test_study_runs_shrunken_through_the_runner(study, tmp_path, monkeypatch):
    from manifold_lab.studies.spec import load_study

    monkeypatch.chdir(ROOT)
    spec = load_study(ROOT / "studies" / f"{study}.yaml")
    args = ["study", f"studies/{study}.yaml", "--results-dir", str(tmp_path), "--workers", "2", "--no-progress"]
    for s in SHRINK[study]:
        args += ["--set", s]
    assert main(args) == 0
    summary = pd.read_csv(tmp_path / study / "summary.csv")
    assert METRICS[study] <= set(summary["metric"])
    assert summary["run_id"].nunique() == (2 if study == "toy_phase" else 1)
    if study != "toy_phase":        # the manifold's dimension k is a derived setting: a column, not a metric
        assert "k" not in set(summary["metric"]) and set(summary["k"]) == {2 if study == "toy_intrinsic_dim" else 1}
    for name in spec.figures:
        assert (tmp_path / study / f"fig_{name}.png").stat().st_size > 5_000, name
    if study == "toy_phase":
        assert {"target", "hidden_size", "D_star", "status"} <= set(pd.read_csv(tmp_path / study / "boundary.csv"))
