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


# ---- pre-conditioners (Table 10): F -> x^ = c_skip z + c_out F, then the x rules ---------------------------
PRE_PAIRS = list(itertools.product(param.PRECONDITIONERS, param.TARGETS))   # (pre-conditioner, loss space)
ALL_CONVERSIONS = list(itertools.product(param.PREDS, param.PREDS))


def paper_coefficients(kind, t):
    """The paper's formulas as printed (1/t, sigma_t = (1 - t)/t): defined for t in (0, 1]."""
    if kind == "linear":
        return t, 1 - t
    sd, st = param.SIGMA_D, (1 - t) / t
    return (1 / t) * sd ** 2 / (sd ** 2 + st ** 2), sd * st / torch.sqrt(sd ** 2 + st ** 2)


@pytest.mark.parametrize("kind", param.PRECONDITIONERS)
def test_coefficients_are_the_papers_and_finite_at_both_ends(kind):
    t = torch.linspace(0.01, 1.0, 100, dtype=torch.float64)
    for ours, theirs in zip(param.precond_coefficients(kind, t), paper_coefficients(kind, t)):
        torch.testing.assert_close(ours, theirs)
    c_skip, c_out = param.precond_coefficients(kind, torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(c_skip, torch.tensor([0.0, 1.0], dtype=torch.float64))   # t = 0: F alone; t = 1: z
    expect_out0 = param.SIGMA_D if kind == "edm" else 1.0
    torch.testing.assert_close(c_out, torch.tensor([expect_out0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("src,dst", ALL_CONVERSIONS)
def test_round_trip_through_every_parameterisation(shape, src, dst):
    x, eps, t, z = draw(shape)
    p = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(param.convert(param.convert(p, src, dst, z, t), dst, src, z, t), p)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", param.PRECONDITIONERS)
def test_preconditioned_output_is_read_as_x_hat(shape, kind):
    x, eps, t, z = draw(shape, 0.0, 1.0)
    f = torch.randn(shape, dtype=torch.float64)
    c_skip, c_out = (param.append_dims(c, len(shape)) for c in paper_coefficients(kind, t.clamp_min(1e-3)))
    torch.testing.assert_close(param.convert(f, kind, "x", z, t), c_skip * z + c_out * f, rtol=1e-5, atol=1e-5)
    for space in param.TARGETS:   # a pre-conditioned output converts and scores exactly as its x^ does
        torch.testing.assert_close(param.convert(f, kind, space, z, t),
                                   param.convert(param.precondition(f, kind, z, t), "x", space, z, t))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind,space", PRE_PAIRS)
def test_preconditioned_loss_is_the_x_loss_of_x_hat(shape, kind, space):
    x, eps, t, z = draw(shape, 0.0, 1.0)
    f = torch.randn(shape, dtype=torch.float64)
    kw = dict(loss_space=space, x=x, eps=eps, z=z, t=t)
    ours = param.loss(f, pred_type=kind, **kw)
    torch.testing.assert_close(ours, param.loss(param.precondition(f, kind, z, t), pred_type="x", **kw))
    if space == "x":   # |x^ - x|^2 = c_out^2 |F - F*|^2 away from the c_out floor
        keep = t < 0.9
        f_true = param.convert(x, "x", kind, z, t)
        c_out = param.precond_coefficients(kind, t)[1]
        torch.testing.assert_close(ours[keep], (c_out ** 2 * param.mean_flat((f - f_true) ** 2))[keep])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind,space", PRE_PAIRS)
def test_preconditioned_oracle_has_zero_loss(shape, kind, space):
    x, eps, t, z = draw(shape, 0.0, 1 - param.T_EPS)   # up to the c_out floor, where F* is exact
    oracle = param.convert(x, "x", kind, z, t)
    out = param.loss(oracle, pred_type=kind, loss_space=space, x=x, eps=eps, z=z, t=t)
    assert out.shape == (shape[0],) and torch.all(out < 1e-20)


@pytest.mark.parametrize("kind,space", PRE_PAIRS)
def test_preconditioned_clamps_at_both_ends(kind, space):
    x, eps, _, _ = draw((4, 6))
    t = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    z = param.interpolate(x, eps, t)
    f = torch.randn(4, 6, dtype=torch.float64)
    assert torch.isfinite(param.loss(f, pred_type=kind, loss_space=space, x=x, eps=eps, z=z, t=t)).all()
    for dst in param.PREDS:
        assert torch.isfinite(param.convert(f, kind, dst, z, t)).all()
        assert torch.isfinite(param.convert(f, dst, kind, z, t)).all()
    x_hat = param.precondition(f, kind, z, t)
    torch.testing.assert_close(x_hat[1::2], z[1::2])                               # t = 1: x^ = z, F ignored
    c0 = param.SIGMA_D if kind == "edm" else 1.0
    torch.testing.assert_close(x_hat[0::2], c0 * f[0::2])                          # t = 0: x^ = c_out(0) F
    t99 = torch.full((4,), 0.99, dtype=torch.float64)                              # the (1 - t) clip near t = 1
    z99 = param.interpolate(x, eps, t99)
    lv = param.loss(f, pred_type=kind, loss_space="v", x=x, eps=eps, z=z99, t=t99)
    lx = param.loss(f, pred_type=kind, loss_space="x", x=x, eps=eps, z=z99, t=t99)
    torch.testing.assert_close(lv, lx / param.T_EPS ** 2)
    floor = param.precond_coefficients(kind, torch.tensor(1 - param.T_EPS, dtype=torch.float64))[1]
    back = param.convert(x, "x", kind, z99, t99)                                   # division by c_out is floored
    c_skip = param.precond_coefficients(kind, t99)[0][:, None]
    torch.testing.assert_close(back, (x - c_skip * z99) / floor)


@pytest.mark.parametrize("kind,space", PRE_PAIRS)
def test_preconditioned_rank_agnostic_and_gradients_flow(kind, space):
    x, eps, t, z = draw((8, 12))
    p = torch.randn(8, 12, dtype=torch.float64)
    flat = param.loss(p, pred_type=kind, loss_space=space, x=x, eps=eps, z=z, t=t)
    img = param.loss(p.reshape(8, 3, 2, 2), pred_type=kind, loss_space=space, x=x.reshape(8, 3, 2, 2),
                     eps=eps.reshape(8, 3, 2, 2), z=z.reshape(8, 3, 2, 2), t=t)
    torch.testing.assert_close(flat, img)
    net = torch.nn.Linear(12, 12).double()
    param.loss(net(z), pred_type=kind, loss_space=space, x=x, eps=eps, z=z, t=t).mean().backward()
    assert torch.isfinite(net.weight.grad).all() and net.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", param.PRECONDITIONERS)
def test_denoiser_trains_and_samples_a_preconditioner_through_the_same_ode(kind):
    from manifold_lab.denoiser import Denoiser
    from manifold_lab.nets.mlp import MLP

    torch.manual_seed(0)
    net = MLP(6, hidden_size=16, depth=2)
    den = Denoiser(pred=kind, loss="v")
    x = torch.randn(32, 6)
    losses = den.loss_per_sample(net, x, generator=torch.Generator().manual_seed(0))
    assert losses.shape == (32,) and torch.isfinite(losses).all()
    losses.mean().backward()
    z, t = torch.randn(4, 6), torch.tensor([0.0, 0.3, 0.7, 1.0])
    with torch.no_grad():
        v = den.velocity(net, z, t)
        expect = param.convert(param.precondition(net(z, t), kind, z, t), "x", "v", z, t)
    torch.testing.assert_close(v, expect)
    assert torch.isfinite(v).all() and torch.all(v[3] == 0)                        # t = 1: x^ = z, v = 0


def test_unknown_pred_lists_the_preconditioners():
    from manifold_lab.denoiser import Denoiser

    with pytest.raises(ConfigError, match=r"unknown prediction target 'karras'.*x, eps, v, edm, linear"):
        Denoiser(pred="karras")
    with pytest.raises(ConfigError, match=r"loss space 'edm'"):
        Denoiser(pred="x", loss="edm")
