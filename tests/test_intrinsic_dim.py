"""Intrinsic-dimension estimators, the toy ground truth, and the denoiser's Jacobian local dimension."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from manifold_lab import param
from manifold_lab.checks import ConfigError
from manifold_lab.denoiser import Denoiser
from manifold_lab.metrics import intrinsic_dim as idim
from manifold_lab.nets.mlp import MLP


# ---- the formulas on hand-made distances ---------------------------------------------------------
def test_mle_averages_inverse_local_estimates():
    T = torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 2.0]], dtype=torch.float64)
    inv = [(math.log(4) + math.log(2)) / 2, (math.log(2) + math.log(2)) / 2]  # 1 / m_i with K = 3
    assert idim.mle_from_distances(T) == pytest.approx(1 / np.mean(inv), rel=1e-12)
    assert idim.mle_from_distances(T) != pytest.approx(np.mean([1 / v for v in inv]), rel=1e-3)


@pytest.mark.parametrize("k", [1.0, 3.0, 10.0])
def test_twonn_fit_recovers_the_pareto_exponent(k):
    g = torch.Generator().manual_seed(0)
    mu = torch.rand(200_000, generator=g, dtype=torch.float64) ** (-1 / k)  # P(mu > m) = m^-k
    r = torch.stack([torch.ones_like(mu), mu], 1)
    assert idim.twonn_from_distances(r) == pytest.approx(k, rel=0.02)


def test_duplicates_are_dropped():
    X = idim.noised_cloud("sphere", 3, 16, 2000, seed=0).double()
    Xdup = torch.cat([X, X[:200], X[:50]])  # 250 extra copies
    dist, idx = idim.knn(Xdup, 2)  # copies are found at distance exactly 0
    assert (dist[:200, 0] == 0).all() and (dist[200:2000, 0] > 0).all() and (idx[:200, 0] >= 2000).all()
    assert len(idim.unique_points(Xdup)) == 2000
    for fn in (idim.twonn, idim.mle):  # copies kept once: the estimate of the clean cloud, exactly
        assert fn(Xdup) == pytest.approx(fn(X), rel=1e-9)
    r = torch.tensor([[0.0, 1.0], [1.0, 2.0], [1.0, 3.0], [1.0, 4.0], [2.0, 5.0]], dtype=torch.float64)
    assert idim.twonn_from_distances(r, discard=0) == idim.twonn_from_distances(r[1:], discard=0)


def test_knn_matches_brute_force_and_accepts_numpy():
    X = torch.randn(300, 7, generator=torch.Generator().manual_seed(1))
    d_full = torch.cdist(X.double(), X.double()).fill_diagonal_(math.inf)
    ref = d_full.sort(1)
    dist, idx = idim.knn(X.numpy(), 5)
    torch.testing.assert_close(dist, ref.values[:, :5])
    assert (idx == ref.indices[:, :5]).all()
    assert idim.twonn(X.numpy()) == idim.twonn(X)


# ---- acceptance: spheres S^k in D = 512 with 5,000 points ----------------------------------------
@pytest.mark.parametrize("k", [2, 4, 8])
def test_sphere_twonn_and_mle_within_20_percent(k):
    X = idim.noised_cloud("sphere", k + 1, 512, 5000, seed=0)  # S^k lives in d = k + 1 dims
    assert idim.manifold_dimension("sphere", k + 1) == k
    assert idim.twonn(X) == pytest.approx(k, rel=0.2)
    assert idim.mle(X, k=20) == pytest.approx(k, rel=0.2)


@pytest.mark.parametrize("dist,d", [("sphere", 3), ("torus", 6)])
def test_local_pca_on_low_curvature_manifolds(dist, d):
    X = idim.noised_cloud(dist, d, 512, 5000, seed=0)
    k = idim.manifold_dimension(dist, d)  # 2 (S^2), 3 (T^3)
    assert idim.local_pca(X, k=20) == pytest.approx(k, abs=0.1)
    counts = idim.local_pca_counts(X, k=20, n_anchors=100)
    assert counts.shape == (100,) and counts.dtype == torch.int64


def test_local_pca_counts_a_flat_subspace_exactly():
    g = torch.Generator().manual_seed(0)
    X = idim.ColumnOrthogonalEmbedding(64, 5, 0).embed(torch.rand(3000, 5, generator=g))
    counts = idim.local_pca_counts(X, k=40)  # uniform in a cube: 5 equal variances, none outside
    assert counts.max() == 5 and counts.double().mean() > 4.9  # a few anchors at faces read 4


# ---- noise is high-dimensional, data is not --------------------------------------------------------
def test_noised_clouds_read_at_least_10x_the_data():
    # local PCA counts at most k directions: with k = 20 it cannot reach 10x the spiral's 2, so k = 100
    kws = {"twonn": {}, "mle": {}, "pca": {"k": 100, "n_anchors": 200}}
    x = idim.noised_cloud("spiral", 2, 512, 2000, "x", seed=0)
    data = {name: idim.estimate(x, name, **kw) for name, kw in kws.items()}
    assert all(1 <= v <= 3 for v in data.values()), data
    for of, t in (("eps", 0.5), ("v", 0.5), ("z", 0.5), ("z", 0.9)):
        noisy = idim.noised_cloud("spiral", 2, 512, 2000, of, t, seed=0)
        for name, kw in kws.items():
            assert idim.estimate(noisy, name, **kw) >= 10 * data[name], (of, t, name)


def test_noised_cloud_follows_the_algebra():
    parts = {of: idim.noised_cloud("torus", 4, 32, 100, of, 0.3, seed=5) for of in idim.CLOUDS}
    torch.testing.assert_close(parts["v"], parts["x"] - parts["eps"])
    torch.testing.assert_close(parts["z"], 0.3 * parts["x"] + 0.7 * parts["eps"])
    P = idim.ColumnOrthogonalEmbedding(32, 4, 0).P
    torch.testing.assert_close(parts["x"] - parts["x"] @ P @ P.T, torch.zeros(100, 32), atol=1e-5, rtol=0)
    assert parts["eps"].std().item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ConfigError, match="'noise'"):
        idim.noised_cloud("torus", 4, 32, 100, "noise")


# ---- toy ground truth ----------------------------------------------------------------------------
@pytest.mark.parametrize("d", [4, 5, 8])
def test_flat_torus_reads_half_d(d):
    X = idim.noised_cloud("torus", d, 64, 5000, seed=0)
    k = idim.manifold_dimension("torus", d)
    assert k == d // 2 + d % 2
    assert idim.twonn(X) == pytest.approx(k, rel=0.1)
    assert idim.mle(X) == pytest.approx(k, rel=0.1)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_gaussian_reads_d(d):
    X = idim.noised_cloud("gaussian", d, 64, 5000, seed=0)
    assert idim.manifold_dimension("gaussian", d) == d
    assert idim.twonn(X) == pytest.approx(d, rel=0.1)
    assert idim.mle(X) == pytest.approx(d, rel=0.1)


def test_manifold_dimension_table():
    assert [idim.manifold_dimension("sphere", d) for d in (2, 3, 9)] == [1, 2, 8]
    assert [idim.manifold_dimension("torus", d) for d in (2, 3, 4, 7)] == [1, 2, 2, 4]
    assert idim.manifold_dimension("gaussian", 7) == 7
    assert idim.manifold_dimension("spiral", 2) == 1 and idim.manifold_dimension("checkerboard", 2) == 2
    with pytest.raises(ConfigError, match="2-D only"):
        idim.manifold_dimension("spiral", 3)


def test_toy_dimensions_record_carries_d_and_k():
    rec = idim.toy_dimensions("sphere", 3, 32, 1000, estimators=("twonn",))
    assert rec["d"] == 3 and rec["k"] == 2 and rec["D"] == 32 and set(rec) >= {"twonn", "of", "t"}
    assert "mle" not in rec and rec["twonn"] == pytest.approx(2, rel=0.2)


def test_bad_estimator_name_is_a_config_error():
    X = torch.randn(50, 3)
    with pytest.raises(ConfigError, match=r"'tonn'.*allowed: twonn, mle, pca"):
        idim.estimate(X, "tonn")
    with pytest.raises(ConfigError, match="k must be"):
        idim.estimate(X, "mle", k=50)
    with pytest.raises(ConfigError, match="2-D"):
        idim.twonn(torch.randn(50))


# ---- Jacobian local dimension -------------------------------------------------------------------
class ProjectionNet(nn.Module):
    """Outputs whatever value of space ``pred`` makes the clean-data estimate exactly P P^T z."""

    def __init__(self, P: torch.Tensor, pred: str, t_eps: float):
        super().__init__()
        self.P, self.pred, self.t_eps = P, pred, t_eps

    def forward(self, z, t):
        return param.convert(z @ self.P @ self.P.T, "x", self.pred, z, t, self.t_eps)


@pytest.mark.parametrize("pred", ["x", "eps", "v"])
def test_projection_denoiser_has_d_unit_singular_values(pred):
    D, d = 32, 3
    P = torch.linalg.qr(torch.randn(D, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    den = Denoiser(pred=pred)
    z = torch.randn(4, D, dtype=torch.float64)
    sv = idim.jacobian_spectrum(den, ProjectionNet(P, pred, den.t_eps), z, 0.6)
    assert sv.shape == (4, D)
    torch.testing.assert_close(sv[:, :d], torch.ones(4, d, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(sv[:, d:], torch.zeros(4, D - d, dtype=torch.float64), atol=1e-10, rtol=0)
    assert (idim.count_large(sv) == d).all()


@pytest.mark.parametrize("pred,t", [("x", 0.9), ("eps", 0.7), ("v", 0.3)])
def test_jacobian_agrees_with_autograd(pred, t):
    torch.manual_seed(0)
    net = MLP(6, 16, 3).double()
    den = Denoiser(pred=pred)
    z = torch.randn(3, 6, dtype=torch.float64)
    tt = torch.full((1,), t, dtype=torch.float64)
    jac = idim.denoiser_jacobian(den, net, z, t)
    for b in range(3):
        ref = torch.autograd.functional.jacobian(
            lambda zi: param.convert(net(zi[None], tt), pred, "x", zi[None], tt, den.t_eps)[0], z[b])
        torch.testing.assert_close(jac[b], ref)
        torch.testing.assert_close(idim.jacobian_spectrum(den, net, z[b:b + 1], t)[0], torch.linalg.svdvals(ref))


def test_jacobian_spectrum_at_D_512():
    torch.manual_seed(0)
    sv = idim.jacobian_spectrum(Denoiser(pred="x"), MLP(512), torch.randn(2, 512), 0.9)
    assert sv.shape == (2, 512) and torch.isfinite(sv).all()
    assert (sv[:, :-1] >= sv[:, 1:]).all() and (sv >= 0).all()


def test_count_large_rule():
    sv = torch.tensor([[2.0, 1.5, 0.9, 0.0], [1.0, 0.6, 0.4, 0.1]])
    assert idim.count_large(sv).tolist() == [2, 2]
    assert idim.count_large(sv, rel=0.05).tolist() == [3, 4]
    with pytest.raises(ConfigError, match="rel"):
        idim.count_large(sv, rel=1.0)


def test_id_accuracy_mode_writes_the_table(tmp_path, capsys):
    """``id --accuracy``: x reads k on spheres, eps and v read far more; the table is written; a K the
    ambient dimension cannot hold is a one-line error."""
    import pandas as pd

    from manifold_lab.cli import main

    out = tmp_path / "acc.csv"
    assert main(["id", "--accuracy", "2", "--D", "64", "--n", "800", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df["of"]) == {"x", "eps", "v"} and set(df["estimator"]) == {"twonn", "mle"} and len(df) == 6
    x = df[df["of"] == "x"]
    assert (x["rel_error_vs_k"].abs() < 0.25).all() and (df[df["of"] != "x"]["ratio_to_x"] > 5).all()
    assert "x against k" in capsys.readouterr().out
    assert main(["id", "--accuracy", "70", "--D", "64"]) == 2
    assert "--accuracy K=70 needs D >= K + 1" in capsys.readouterr().err
