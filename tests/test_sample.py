"""ODE samplers, guidance interval, time samplers, the Denoiser objective."""
import pytest
import torch

from manifold_lab import param
from manifold_lab.checks import ConfigError
from manifold_lab.denoiser import Denoiser
from manifold_lab.sample import generate, guided_velocity, sample_ode
from manifold_lab.schedule import TimeSampler


@pytest.mark.parametrize("solver", ["heun", "euler"])
@pytest.mark.parametrize("pred", ["x", "eps", "v"])
def test_sampler_reaches_point_mass(solver, pred):
    """With the exact velocity of a point mass at c the ODE must end at c, for any head."""
    c = torch.tensor([[2.0, -1.0, 0.5]])
    den = Denoiser(pred=pred, t_eps=1e-3)  # the default 0.05 clamp slows the last two steps on purpose

    class Oracle(torch.nn.Module):
        def forward(self, z, t, y=None):
            # x = c, eps = (z - t c)/(1 - t): the exact values, converted to the head's space
            x = c.expand_as(z)
            return param.convert(x, "x", pred, z, t, t_eps=1e-6)

    out = generate(den, Oracle(), (64, 3), steps=50, solver=solver, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, c.expand(64, 3), atol=0.05, rtol=0)


def test_heun_last_step_is_euler():
    calls = []

    def v(z, t):
        calls.append(float(t[0]))
        return torch.zeros_like(z)

    sample_ode(v, torch.zeros(2, 2), steps=4, solver="heun")
    # 3 Heun steps (2 evaluations each) + 1 Euler step; never evaluated at t = 1
    assert len(calls) == 7 and max(calls) < 1.0


def test_heun_beats_euler_on_linear_ode():
    v = lambda z, t: -z
    z0 = torch.ones(1, 1)
    exact = torch.exp(torch.tensor(-1.0))
    err_h = (sample_ode(v, z0, steps=10, solver="heun") - exact).abs().item()
    err_e = (sample_ode(v, z0, steps=10, solver="euler") - exact).abs().item()
    assert err_h < err_e / 3


def test_guidance_only_inside_interval():
    den = Denoiser(pred="v", num_classes=3)

    class Net(torch.nn.Module):
        def forward(self, z, t, y):
            return (y.float() == 3).float()[:, None].expand_as(z)  # uncond -> 1, cond -> 0

    fn = guided_velocity(den, Net(), torch.tensor([0, 1]), cfg_scale=3.0, interval=(0.1, 0.5))
    z = torch.zeros(2, 4)
    inside = fn(z, torch.tensor([0.3, 0.3]))
    outside = fn(z, torch.tensor([0.7, 0.05]))
    torch.testing.assert_close(inside, torch.full((2, 4), 1 + 3.0 * (0 - 1)))  # v_u + w (v_c - v_u)
    torch.testing.assert_close(outside, torch.zeros(2, 4))  # conditional only


def test_time_samplers():
    g = torch.Generator().manual_seed(0)
    t = TimeSampler("logit_normal", -0.8, 0.8)(100_000, generator=g)
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean() + 0.8) < 0.01 and abs(logit.std() - 0.8) < 0.01
    u = TimeSampler("uniform")(100_000, generator=g)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.01
    with pytest.raises(ConfigError, match="unknown time sampler 'beta'"):
        TimeSampler("beta")


def test_denoiser_checks_and_label_drop():
    with pytest.raises(ConfigError, match="unknown prediction target 'score'"):
        Denoiser(pred="score")
    den = Denoiser(num_classes=10, label_drop=0.5)
    y = den.drop_labels(torch.zeros(10_000, dtype=torch.long), torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) == {0, 10}
    assert abs((y == 10).float().mean().item() - 0.5) < 0.02


def test_bad_steps_and_solver():
    with pytest.raises(ConfigError, match="steps must be a positive integer, got 0"):
        sample_ode(lambda z, t: z, torch.zeros(1, 1), steps=0)
    with pytest.raises(ConfigError, match="unknown solver 'rk4'"):
        sample_ode(lambda z, t: z, torch.zeros(1, 1), solver="rk4")
