"""Property tests of the x/eps/v algebra: every (pred, loss) pair, vectors and images alike."""
import itertools

import pytest
import torch

from manifold_lab import param
from manifold_lab.checks import ConfigError

PAIRS = list(itertools.product(param.TARGETS, param.TARGETS))
SHAPES = [(16, 8), (16, 3, 4, 4)]


def draw(shape, t_lo=0.1, t_hi=0.9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = t_lo + (t_hi - t_lo) * torch.rand(shape[0], generator=g, dtype=torch.float64)
    return x, eps, t, param.interpolate(x, eps, t)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("src,dst", PAIRS)
def test_round_trip(shape, src, dst):
    x, eps, t, z = draw(shape)
    p = torch.randn(shape, dtype=torch.float64)
    back = param.convert(param.convert(p, src, dst, z, t), dst, src, z, t)
    torch.testing.assert_close(back, p)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("src,dst", PAIRS)
def test_true_values_agree_across_spaces(shape, src, dst):
    x, eps, t, z = draw(shape)
    true = param.targets(x, eps)
    torch.testing.assert_close(param.convert(true[src], src, dst, z, t), true[dst])


def test_interpolation_direction():
    x, eps = torch.ones(2, 3), torch.zeros(2, 3)
    torch.testing.assert_close(param.interpolate(x, eps, torch.tensor([1.0, 0.0])), torch.tensor([[1.0] * 3, [0.0] * 3]))


@pytest.mark.parametrize("shape", SHAPES)
def test_loss_identities_for_x_prediction(shape):
    x, eps, t, z = draw(shape, 0.05, 0.9)  # 1 - t >= 0.1 > t_eps: away from the clamp
    x_hat = x + 0.3 * torch.randn(shape, dtype=torch.float64)
    kw = dict(pred_type="x", x=x, eps=eps, z=z, t=t)
    lx = param.loss(x_hat, loss_space="x", **kw)
    torch.testing.assert_close(param.loss(x_hat, loss_space="v", **kw), lx / (1 - t) ** 2)
    torch.testing.assert_close(param.loss(x_hat, loss_space="eps", **kw), t ** 2 / (1 - t) ** 2 * lx)


def test_loss_weight_is_clamped_near_t1():
    x, eps, _, _ = draw((4, 5))
    t = torch.full((4,), 0.99, dtype=torch.float64)
    z = param.interpolate(x, eps, t)
    x_hat = x + 1.0
    lv = param.loss(x_hat, pred_type="x", loss_space="v", x=x, eps=eps, z=z, t=t, t_eps=0.05)
    torch.testing.assert_close(lv, param.loss(x_hat, pred_type="x", loss_space="x", x=x, eps=eps, z=z, t=t) / 0.05 ** 2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pred,space", PAIRS)
def test_oracle_has_zero_loss(shape, pred, space):
    x, eps, t, z = draw(shape, 0.0, 1.0)
    oracle = param.targets(x, eps)[pred]
    out = param.loss(oracle, pred_type=pred, loss_space=space, x=x, eps=eps, z=z, t=t)
    assert out.shape == (shape[0],)
    assert torch.all(out < 1e-20)


@pytest.mark.parametrize("pred,space", PAIRS)
def test_finite_at_t_edges(pred, space):
    x, eps, _, _ = draw((4, 6))
    t = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    z = param.interpolate(x, eps, t)
    p = torch.randn(4, 6, dtype=torch.float64)
    assert torch.isfinite(param.loss(p, pred_type=pred, loss_space=space, x=x, eps=eps, z=z, t=t)).all()
    assert torch.isfinite(param.convert(p, pred, space, z, t)).all()


@pytest.mark.parametrize("pred,space", PAIRS)
def test_rank_agnostic(pred, space):
    x, eps, t, z = draw((8, 12))
    p = torch.randn(8, 12, dtype=torch.float64)
    flat = param.loss(p, pred_type=pred, loss_space=space, x=x, eps=eps, z=z, t=t)
    img = param.loss(*(a.reshape(8, 3, 2, 2) for a in (p,)), pred_type=pred, loss_space=space,
                     x=x.reshape(8, 3, 2, 2), eps=eps.reshape(8, 3, 2, 2), z=z.reshape(8, 3, 2, 2), t=t)
    torch.testing.assert_close(flat, img)


@pytest.mark.parametrize("pred,space", PAIRS)
def test_gradients_flow(pred, space):
    x, eps, t, z = draw((8, 5))
    net = torch.nn.Linear(5, 5).double()
    out = param.loss(net(z), pred_type=pred, loss_space=space, x=x, eps=eps, z=z, t=t).mean()
    out.backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all() and net.weight.grad.abs().sum() > 0


def test_unknown_target_names_value():
    z = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match=r"unknown source space 'score'.*x, eps, v"):
        param.convert(z, "score", "x", z, torch.zeros(2))
    with pytest.raises(ConfigError, match="loss space 'y'"):
        param.loss(z, pred_type="x", loss_space="y", x=z, eps=z, z=z, t=torch.zeros(2))
