"""The x / eps / v algebra: prediction targets, conversions with clamps, per-sample losses.

This is the ONE place in manifold_lab where the three parameterisations are related. The toy MLP,
the small image ViT and the full ImageNet JiT all train and sample through it.

Convention (JiT / SiT): t in [0, 1], **t = 1 is clean data, t = 0 is pure noise**::

    z = t * x + (1 - t) * eps            (eps ~ N(0, s^2 I))
    v = dz/dt = x - eps

Closed-form conversions, given the network output of one space and the noisy input z::

    from x:    v = (x - z) / (1 - t)          eps = (z - t * x) / (1 - t)
    from eps:  x = (z - (1 - t) * eps) / t    v   = (z - eps) / t
    from v:    x = z + (1 - t) * v            eps = z - t * v

Divisions by (1 - t) and by t are clamped from below by ``t_eps`` (JiT's 0.05, the paper's "clip of
(1 - t) in division"), in training and in sampling alike, so values stay finite at t in {0, 1}.

Loss in space S for a prediction of space P: both the prediction and the true value of P are carried to
S by the same clamped conversion, and the squared error is averaged over all non-batch dimensions. Since
every conversion is affine in the prediction with the same z, the loss is a per-sample weighting of the
error in P space; for x-prediction (with c = max(1 - t, t_eps))::

    x-loss = |x^ - x|^2,   v-loss = |x^ - x|^2 / c^2,   eps-loss = t^2 / c^2 * |x^ - x|^2

which is JiT's v = (x - z) / max(1 - t, t_eps) target, and the paper's footnote 4.

Every function here is rank-agnostic: x, eps, z may be (B, D) vectors or (B, C, H, W) images; t is (B,).
"""
from __future__ import annotations

from typing import Literal

import torch

from manifold_lab.checks import check_choice

Target = Literal["x", "eps", "v"]
TARGETS: tuple[str, ...] = ("x", "eps", "v")
T_EPS = 0.05


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape t of shape (B,) to (B, 1, ..., 1) with ``ndim`` dimensions, for broadcasting."""
    if t.ndim > ndim:
        raise ValueError(f"t has {t.ndim} dims, more than the target's {ndim}")
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: (B, ...) -> (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def check_target(name: str, value: str) -> str:
    """Raise a one-line error unless ``value`` is one of x, eps, v."""
    return check_choice(name, value, TARGETS)


def interpolate(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z = t * x + (1 - t) * eps. x, eps: (B, ...); t: (B,) with t = 1 clean. Returns z like x."""
    t = append_dims(t, x.ndim).to(x.dtype)
    return t * x + (1 - t) * eps


def targets(x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """The true value of each space: {"x": x, "eps": eps, "v": x - eps}, all shaped like x."""
    return {"x": x, "eps": eps, "v": x - eps}


def convert(pred: torch.Tensor, src: str, dst: str, z: torch.Tensor, t: torch.Tensor,
            t_eps: float = T_EPS) -> torch.Tensor:
    """Carry ``pred`` (a value of space ``src``) to space ``dst``, given z and t.

    pred, z: (B, ...) of the same shape; t: (B,), t = 1 clean. Divisions by (1 - t) and by t are
    clamped from below by ``t_eps``. Returns a tensor shaped like pred.
    """
    check_target("source space", src)
    check_target("destination space", dst)
    if src == dst:
        return pred
    t = append_dims(t, z.ndim).to(pred.dtype)
    one_minus_t = (1 - t).clamp_min(t_eps)
    t_clamped = t.clamp_min(t_eps)
    if src == "x":
        return (pred - z) / one_minus_t if dst == "v" else (z - t * pred) / one_minus_t
    if src == "eps":
        return (z - (1 - t) * pred) / t_clamped if dst == "x" else (z - pred) / t_clamped
    # src == "v"
    return z + (1 - t) * pred if dst == "x" else z - t * pred


def loss(pred: torch.Tensor, *, pred_type: str, loss_space: str, x: torch.Tensor, eps: torch.Tensor,
         z: torch.Tensor, t: torch.Tensor, t_eps: float = T_EPS) -> torch.Tensor:
    """Per-sample squared error in ``loss_space`` of a network output read as ``pred_type``.

    pred, x, eps, z: (B, ...) of one shape; t: (B,), t = 1 clean. Returns (B,), the mean over all
    non-batch dimensions of (convert(pred) - convert(true))^2, both carried by the same clamped
    conversion (see the module docstring for the weights this implies).
    """
    check_target("loss space", loss_space)
    true = targets(x, eps)[check_target("prediction target", pred_type)]
    diff = convert(pred, pred_type, loss_space, z, t, t_eps) - convert(true, pred_type, loss_space, z, t, t_eps)
    if diff.dtype in (torch.float16, torch.bfloat16):
        diff = diff.float()  # reduce low-precision outputs in fp32
    return mean_flat(diff ** 2)
