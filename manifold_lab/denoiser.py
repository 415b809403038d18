"""The objective every network trains with, and the velocity every sampler integrates.

A net is dumb: ``net(z, t[, y]) -> tensor shaped like z``. The :class:`Denoiser` says what that tensor
means (``pred``: x, eps or v) and where the loss is measured (``loss``: x, eps or v), using
:mod:`manifold_lab.param` for all algebra. The trainer sees one call, ``denoiser.loss(net, x, y)``,
which returns per-sample losses of shape (B,).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from manifold_lab import param
from manifold_lab.checks import ConfigError
from manifold_lab.schedule import TimeSampler


def _call(net, z, t, y):
    return net(z, t) if y is None else net(z, t, y)


@dataclass
class Denoiser:
    """Target, loss space and noise process of a denoising model (t = 1 clean).

    pred: how the net output is read (x, eps, v, or a pre-conditioner edm, linear: x^ = c_skip z + c_out F;
    see :mod:`manifold_lab.param`). loss: the space of the squared error (x, eps, v).
    t_sampler: training-time t. t_eps: the clamp of (1 - t) and t in divisions (JiT 0.05).
    noise_scale: eps ~ N(0, noise_scale^2 I) (JiT: image_size / 256).
    num_classes / label_drop: class conditioning; with probability label_drop a label is replaced by the
    null class ``num_classes`` (classifier-free guidance training). num_classes None = unconditional.
    """

    pred: str = "x"
    loss: str = "v"
    t_sampler: TimeSampler = field(default_factory=TimeSampler)
    t_eps: float = param.T_EPS
    noise_scale: float = 1.0
    num_classes: int | None = None
    label_drop: float = 0.0

    def __post_init__(self):
        param.check_pred("prediction target", self.pred)
        param.check_target("loss space", self.loss)
        if not 0 < self.t_eps < 1:
            raise ConfigError(f"t_eps must be in (0, 1), got {self.t_eps!r}")
        if not self.noise_scale > 0:
            raise ConfigError(f"noise_scale must be > 0, got {self.noise_scale!r}")
        if not 0 <= self.label_drop < 1:
            raise ConfigError(f"label_drop must be in [0, 1), got {self.label_drop!r}")

    # ---- training ----------------------------------------------------------------------------
    def drop_labels(self, y: torch.Tensor | None, generator: torch.Generator | None = None):
        """Replace each label by the null class num_classes with probability label_drop."""
        if y is None or self.label_drop == 0:
            return y
        drop = torch.rand(y.shape[0], device=y.device, generator=generator) < self.label_drop
        return torch.where(drop, torch.full_like(y, self.num_classes), y)

    def loss_per_sample(self, net, x, y=None, generator=None) -> torch.Tensor:
        """Per-sample loss (B,) for clean x (B, ...) and optional labels y (B,)."""
        return self.loss_terms(net, x, y, generator)["loss"]

    def loss_terms(self, net, x: torch.Tensor, y: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One noising draw and the per-sample loss {"loss": (B,)}. x: (B, ...) clean data; y: (B,) labels or None.

        :meth:`draw` then :meth:`loss_given`: the random part and the pure rest (which a compiled run fuses).
        """
        t, eps, y_net = self.draw(x, y, generator)
        return self.loss_given(net, x, t, eps, y_net, y)

    def draw(self, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """The random part of one training loss, in this order from ``generator``: t (B,) (t = 1 clean), eps
        shaped like x (N(0, noise_scale^2)), and the labels the net sees (y with label_drop applied, or None)."""
        t = self.t_sampler(x.shape[0], device=x.device, generator=generator)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator) * self.noise_scale
        return t, eps, self.drop_labels(y, generator)

    def loss_given(self, net, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                   y_net: torch.Tensor | None = None, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The deterministic rest of the loss for the draws of :meth:`draw`: z = t x + (1 - t) eps, the net on
        (z, t, y_net), the per-sample loss {"loss": (B,)}. No random draw, so ``torch.compile`` takes it whole.

        A net with a classification head (``cls_weight`` > 0, the JiT's Table 11 switch) adds
        ``cls_weight * CE / numel`` with the true labels y: the paper weights the CE by lambda against the l2
        loss written as a per-sample SUM of squared errors, and the loss here is the per-element mean, so lambda
        is divided by the elements per sample (C*H*W) to keep its meaning; the CE (B,) is returned as "cls".
        """
        z = param.interpolate(x, eps, t)
        weight = float(getattr(getattr(net, "module", net), "cls_weight", 0.0))   # JiT's Table 11 head (DDP too)
        if weight:
            out, logits = net(z, t, y_net, return_cls=True)
        else:
            out = _call(net, z, t, y_net)
        losses = param.loss(out, pred_type=self.pred, loss_space=self.loss, x=x, eps=eps, z=z, t=t,
                            t_eps=self.t_eps)
        if not weight:
            return {"loss": losses}
        ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")        # the TRUE labels
        return {"loss": losses + weight / x[0].numel() * ce, "cls": ce}

    # ---- sampling ----------------------------------------------------------------------------
    def velocity(self, net, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """v = dz/dt at (z, t) from the net's output, through the same clamp as training. t: (B,)."""
        out = _call(net, z, t, y)
        return param.convert(out.float(), self.pred, "v", z.float(), t, self.t_eps)

    def noise(self, shape, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The starting point z(t=0) of sampling: N(0, noise_scale^2 I) of the given shape."""
        return torch.randn(shape, device=device, generator=generator) * self.noise_scale
