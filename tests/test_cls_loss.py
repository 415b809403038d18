"""The classification loss of the paper's Table 11 on a tiny JiT: a GAP + linear head after block k, its
cross-entropy weighted by lambda beside the l2 loss, and no class conditioning before the head."""
from __future__ import annotations

import pytest
import torch

from manifold_lab import param
from manifold_lab.checks import ConfigError
from manifold_lab.denoiser import Denoiser
from manifold_lab.nets.jit import JiT

TINY = dict(img_size=8, patch_size=4, hidden_size=32, depth=4, num_heads=2, num_classes=5, bottleneck_dim=8,
            in_context_len=2, in_context_start=2, cls_head_after=2, cls_weight=100.0)


def _randomised(**kw):
    """A tiny JiT with every parameter random (the zero init would hide gradients and conditioning)."""
    torch.manual_seed(0)
    net = JiT(**{**TINY, **kw})
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    return net


def _block_outputs(net, z, t, y):
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o.detach().clone())) for b in net.blocks]
    _, logits = net(z, t, y, return_cls=True)
    for h in hooks:
        h.remove()
    return outs, logits


def test_no_class_conditioning_before_the_head():
    net = _randomised()
    z, t = torch.randn(3, 3, 8, 8), torch.rand(3)
    a, logits_a = _block_outputs(net, z, t, torch.tensor([0, 1, 2]))
    b, logits_b = _block_outputs(net, z, t, torch.tensor([4, 3, 5]))          # 5: the null class
    for k in range(TINY["cls_head_after"]):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)               # blocks before the head: blind to y
    torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=0)           # so is the head
    assert not torch.allclose(a[2], b[2])                                     # from block k on, y matters
    assert logits_a.shape == (3, 5) and logits_a.dtype == torch.float32


def test_the_heads_gradient_reaches_the_early_blocks_only():
    net = _randomised()
    den = Denoiser(pred="x", loss="v", num_classes=5, label_drop=0.1)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    terms = den.loss_terms(net, x, y, generator=torch.Generator().manual_seed(0))
    terms["cls"].mean().backward()                                            # the head's loss alone
    early = net.blocks[0].attn.qkv.weight.grad
    assert early is not None and early.abs().sum() > 0
    assert net.x_embedder.proj1.weight.grad.abs().sum() > 0                   # down to the patch embedding
    for p in list(net.blocks[2].parameters()) + list(net.final_layer.parameters()):
        assert p.grad is None or p.grad.abs().sum() == 0                     # blocks after the head: untouched


def test_loss_is_l2_plus_lambda_over_elements_times_ce():
    net = _randomised()
    den = Denoiser(pred="x", loss="v", num_classes=5)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    terms = den.loss_terms(net, x, y, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)                                      # the same draw by hand
    t = den.t_sampler(4, generator=g)
    eps = torch.randn(x.shape, generator=g)
    z = param.interpolate(x, eps, t)
    out, logits = net(z, t, y, return_cls=True)
    l2 = param.loss(out, pred_type="x", loss_space="v", x=x, eps=eps, z=z, t=t)
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(terms["loss"], l2 + 100.0 / (3 * 8 * 8) * ce)
    torch.testing.assert_close(terms["cls"], ce)


def test_default_net_has_no_head_and_unchanged_keys():
    off = JiT(**{**TINY, "cls_head_after": 0, "cls_weight": 0.0})
    assert off.cls_head is None and not any(k.startswith("cls_head") for k in off.state_dict())
    assert "cls" not in Denoiser(num_classes=5).loss_terms(off, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    on = JiT(**TINY)
    assert on(torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([0, 1])).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("kw,match", [
    (dict(in_context_start=1), "class tokens before the classification head"),
    (dict(num_classes=None), "needs a class-conditional model"),
    (dict(cls_weight=0.0), "go together"),
    (dict(cls_head_after=4), r"cls_head_after must be an integer in \[0, depth=4\)"),
    (dict(cls_weight=-1.0), "cls_weight must be a number >= 0"),
])
def test_bad_head_settings_are_one_line_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        JiT(**{**TINY, **kw})
