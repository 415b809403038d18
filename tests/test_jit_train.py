"""A tiny JiT trains and samples through the same Denoiser, trainer and ODE solvers as the toy MLP."""
from __future__ import annotations

import math

import pytest
import torch
from tiny_jit import TINY_JIT

from manifold_lab.denoiser import Denoiser
from manifold_lab.nets.jit import JiT
from manifold_lab.param import TARGETS
from manifold_lab.sample import generate, guided_velocity
from manifold_lab.train.loop import TrainConfig, train

TINY = TINY_JIT
NUM_CLASSES = TINY["num_classes"]


def tiny_images() -> tuple[torch.Tensor, torch.Tensor]:
    """8 smooth 3x8x8 images in [-1, 1] (two per class: oriented gradients and stripes), labels 0..3."""
    r = torch.linspace(-1, 1, 8)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    bases = [xx, yy, torch.sin(3 * xx), torch.cos(3 * (xx + yy))]
    imgs, labels = [], []
    for label, base in enumerate(bases):
        for sign in (1.0, -1.0):
            imgs.append(torch.stack([sign * base, 0.5 * base, -sign * base.flip(0)]).clamp(-1, 1))
            labels.append(label)
    return torch.stack(imgs), torch.tensor(labels)


IMAGES, LABELS = tiny_images()


def batch_fn(batch: int, gen: torch.Generator):
    idx = torch.randint(0, len(IMAGES), (batch,), generator=gen)
    return IMAGES[idx], LABELS[idx]


def make_net(**kw) -> JiT:
    torch.manual_seed(0)
    return JiT(**{**TINY, **kw})


def eval_loss(net, den: Denoiser, n: int = 512) -> float:
    """Loss over a fixed draw of (x, t, eps), so before/after numbers are comparable."""
    gen = torch.Generator().manual_seed(123)
    x, y = batch_fn(n, gen)
    with torch.no_grad():
        return den.loss_per_sample(net, x, y, generator=gen).mean().item()


@pytest.mark.parametrize("pred", TARGETS)
def test_200_steps_lower_the_loss(pred):
    den = Denoiser(pred=pred, loss="v", num_classes=NUM_CLASSES, label_drop=0.1)
    net = make_net()
    before = eval_loss(net, den)
    result = train(net, den, batch_fn, TrainConfig(steps=200, batch_size=32, lr=2e-3, warmup_steps=10, seed=0),
                   progress=False)
    after = eval_loss(result.net, den)
    assert math.isfinite(after) and after < 0.7 * before, (before, after)
    curve = result.curve["loss"]
    assert curve.iloc[-40:].mean() < curve.iloc[:20].mean()


@pytest.mark.parametrize("pred", TARGETS)
@pytest.mark.parametrize("loss", TARGETS)
def test_every_objective_pair_gives_gradients(pred, loss):
    net = make_net()
    with torch.no_grad():   # leave the zero init, so every layer sits on the gradient path
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    den = Denoiser(pred=pred, loss=loss, num_classes=NUM_CLASSES)
    gen = torch.Generator().manual_seed(0)
    x, y = batch_fn(4, gen)
    losses = den.loss_per_sample(net, x, y, generator=gen)
    assert losses.shape == (4,) and torch.isfinite(losses).all()
    losses.mean().backward()
    assert net.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert net.x_embedder.proj1.weight.grad.abs().sum() > 0


def test_guided_sampling_with_interval():
    den = Denoiser(pred="x", loss="v", num_classes=NUM_CLASSES)
    net = make_net()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    net.eval()
    y = torch.tensor([0, 1, 2, 3])
    shape = (4, 3, 8, 8)
    runs = {cfg: generate(den, net, shape, y=y, steps=5, cfg_scale=cfg, interval=(0.1, 1.0),
                          generator=torch.Generator().manual_seed(0)) for cfg in (1.0, 3.0)}
    for out in runs.values():
        assert out.shape == shape and torch.isfinite(out).all()
    assert not torch.allclose(runs[1.0], runs[3.0])
    # outside the interval (t <= 0.1) the guided velocity is the conditional one; inside it is not
    fn = guided_velocity(den, net, y, cfg_scale=3.0, interval=(0.1, 1.0))
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for t_val, same in ((0.05, True), (0.5, False)):
        t = torch.full((4,), t_val)
        cond = den.velocity(net, z, t, y)
        assert torch.allclose(fn(z, t), cond, atol=1e-5) == same
    # an unconditional JiT samples with y=None through the same path
    unc = make_net(num_classes=None).eval()
    out = generate(Denoiser(pred="x", loss="v"), unc, shape, steps=3, solver="euler")
    assert out.shape == shape and torch.isfinite(out).all()
