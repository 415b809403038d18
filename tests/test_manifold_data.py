"""Toy distributions, the column-orthogonal embedding and the toy metrics."""
import math

import pytest
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.data.manifold import DISTRIBUTIONS, ColumnOrthogonalEmbedding, sample_toy
from manifold_lab.metrics.manifold import energy_distance, toy_metrics


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_distributions_are_normalised_and_seeded(name):
    d = 2 if DISTRIBUTIONS[name].dims == "2" else 5
    x = sample_toy(name, 20_000, d, torch.Generator().manual_seed(3))
    assert x.shape == (20_000, d) and x.dtype == torch.float32
    assert x.mean(0).abs().max() < 0.05
    assert abs((x ** 2).sum(1).mean().item() / d - 1) < 0.05
    y = sample_toy(name, 20_000, d, torch.Generator().manual_seed(3))
    assert torch.equal(x, y)


def test_sphere_and_torus_shapes():
    s = sample_toy("sphere", 1000, 4, torch.Generator().manual_seed(0))
    norms = s.norm(dim=1)
    assert torch.allclose(norms, norms[0].expand(1000), atol=1e-5)  # all on one sphere
    t = sample_toy("torus", 1000, 4, torch.Generator().manual_seed(0))
    r1, r2 = t[:, :2].norm(dim=1), t[:, 2:].norm(dim=1)
    assert torch.allclose(r1, r1[0].expand(1000), atol=1e-5) and torch.allclose(r2, r2[0].expand(1000), atol=1e-5)


def test_embedding_is_column_orthogonal_and_projects_back():
    emb = ColumnOrthogonalEmbedding(64, 3, seed=1)
    assert emb.P.shape == (64, 3)
    torch.testing.assert_close(emb.P.T @ emb.P, torch.eye(3), atol=1e-6, rtol=0)
    x_d = torch.randn(10, 3)
    x = emb.embed(x_d)
    torch.testing.assert_close(emb.project(x), x_d, atol=1e-5, rtol=0)
    assert emb.off_manifold(x).max() < 1e-5
    off = x + torch.randn(10, 64)
    assert emb.off_manifold(off).min() > 1.0
    assert torch.equal(ColumnOrthogonalEmbedding(64, 3, seed=1).P, emb.P)
    assert not torch.equal(ColumnOrthogonalEmbedding(64, 3, seed=2).P, emb.P)


def test_bad_dims_and_names():
    with pytest.raises(ConfigError, match="D=1 is smaller than d=2"):
        ColumnOrthogonalEmbedding(1, 2)
    with pytest.raises(ConfigError, match="unknown distribution 'banana'.*spiral"):
        sample_toy("banana", 10)
    with pytest.raises(ConfigError, match="'spiral' is 2-D only, got d=3"):
        sample_toy("spiral", 10, 3)


def test_metrics_separate_good_from_bad():
    emb = ColumnOrthogonalEmbedding(32, 2, seed=0)
    g = torch.Generator().manual_seed(0)
    ref = sample_toy("spiral", 10_000, 2, g)
    fresh = sample_toy("spiral", 1000, 2, g)
    good = emb.embed(sample_toy("spiral", 1000, 2, g))
    bad = good + torch.randn(1000, 32, generator=g)
    m_good, m_bad = toy_metrics(good, emb, ref, fresh), toy_metrics(bad, emb, ref, fresh)
    assert m_good["nn_dist"] < 0.05 and m_good["off_manifold"] < 1e-5 and m_good["energy_distance"] < 0.01
    assert m_bad["nn_dist"] > 3 * m_good["nn_dist"]
    assert 0.9 < m_bad["off_manifold"] < 1.1  # |noise off the plane| / sqrt(D) ~ sqrt(30/32)
    assert energy_distance(fresh, fresh + 3) > 1.0


def test_nonfinite_samples_give_infinite_metrics():
    emb = ColumnOrthogonalEmbedding(8, 2)
    ref = sample_toy("moons", 10_000, 2)
    s = emb.embed(sample_toy("moons", 100, 2))
    s[3, 0] = float("nan")
    m = toy_metrics(s, emb, ref, ref[:100])
    assert all(math.isinf(m[k]) for k in ("nn_dist", "energy_distance", "off_manifold", "nn_dist_ref"))
    assert m["nonfinite_frac"] == pytest.approx(0.01)
