"""The one nearest-neighbour helper: both searches give the exact distances of a brute-force scan."""
import numpy as np
import pytest
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.metrics import knn as knn_mod


@pytest.mark.parametrize("tree", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_nearest_is_the_exact_kth_distance(monkeypatch, tree, k):
    monkeypatch.setattr(knn_mod, "KD_TREE_MAX_DIM", 16 if tree else 0)
    g = torch.Generator().manual_seed(0)
    P = torch.randn(500, 3, generator=g, dtype=torch.float64)
    Q = torch.cat([torch.randn(40, 3, generator=g, dtype=torch.float64), P[:5]])   # 5 queries are copies
    brute = (Q[:, None, :] - P[None]).pow(2).sum(2).sqrt().sort(dim=1).values[:, k - 1]
    got = knn_mod.nearest(P.numpy(), Q, k)
    assert got.dtype == torch.float64 and got.shape == (45,)
    torch.testing.assert_close(got, brute, rtol=0, atol=0)
    if k == 1:
        assert (got[-5:] == 0).all()


def test_nearest_refuses_bad_shapes_and_k():
    with pytest.raises(ConfigError, match="k must be an integer in"):
        knn_mod.nearest(np.zeros((3, 2)), np.zeros((1, 2)), k=4)
    with pytest.raises(ConfigError, match="points \\(n, d\\) and queries"):
        knn_mod.nearest(np.zeros((3, 2)), np.zeros((1, 3)))
