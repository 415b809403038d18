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

Pre-conditioners (the paper's Table 10) are two more ways to read the network output F, beside x, eps
and v. Both give an x-prediction x^ = c_skip(t) * z + c_out(t) * F, which then follows the x rules above
(the same clamped conversions to v and eps, in training and in sampling)::

    edm:     sigma_t = (1 - t) / t, sigma_d = 0.5,
             c_skip = (1 / t) * sigma_d^2 / (sigma_d^2 + sigma_t^2),  c_out = sigma_d * sigma_t / sqrt(sigma_d^2 + sigma_t^2)
    linear:  c_skip = t,  c_out = 1 - t

Clamps of the pre-conditioners. The t = 0 end: EDM's 1/t and sigma_t = (1 - t)/t diverge, but the
coefficients do not. Multiplying through by t^2 gives the same values for t in (0, 1] in a form that is
finite on all of [0, 1], which is what is computed (no clamp is needed, nothing is changed)::

    c_skip = sigma_d^2 * t / (sigma_d^2 t^2 + (1 - t)^2),   c_out = sigma_d (1 - t) / sqrt(sigma_d^2 t^2 + (1 - t)^2)

with the limits c_skip(0) = 0, c_out(0) = sigma_d (the net alone predicts x from pure noise). The t = 1 end:
c_out -> 0 for both (x^ = z, the net has no say on clean input); the conversion x^ -> v, eps divides by
max(1 - t, t_eps) as for x-prediction, and the one division by c_out (the true value of F, used only to
carry a value INTO a pre-conditioned space) is by max(c_out(t), c_out(1 - t_eps)), the analogue of JiT's
(1 - t) clip, so every value stays finite at t in {0, 1}.

Every function here is rank-agnostic: x, eps, z may be (B, D) vectors or (B, C, H, W) images; t is (B,).
"""
from __future__ import annotations

from typing import Literal

import torch

from manifold_lab.checks import check_choice

Target = Literal["x", "eps", "v"]
TARGETS: tuple[str, ...] = ("x", "eps", "v")
PRECONDITIONERS: tuple[str, ...] = ("edm", "linear")   # x^ = c_skip(t) z + c_out(t) F (Table 10)
PREDS: tuple[str, ...] = TARGETS + PRECONDITIONERS     # every way to read a network output
T_EPS = 0.05
SIGMA_D = 0.5                                          # EDM's data standard deviation (the paper: 0.5)


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


def check_pred(name: str, value: str) -> str:
    """Raise a one-line error unless ``value`` is a prediction parameterisation: x, eps, v, edm, linear."""
    return check_choice(name, value, PREDS)


def precond_coefficients(kind: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of pre-conditioner ``kind`` (edm or linear) at t (any shape, t = 1 clean).

    EDM's coefficients are computed in the form multiplied through by t^2 (see the module docstring):
    equal to the paper's for t in (0, 1], finite at t = 0. Both are shaped like t.
    """
    check_choice("pre-conditioner", kind, PRECONDITIONERS)
    if kind == "linear":
        return t, 1 - t
    sd2 = SIGMA_D ** 2
    den = sd2 * t ** 2 + (1 - t) ** 2
    return sd2 * t / den, SIGMA_D * (1 - t) / den.sqrt()


def _c_out_floor(kind: str, t_eps: float) -> float:
    """c_out at t = 1 - t_eps: the floor of the division by c_out (JiT's (1 - t) clip, carried over)."""
    return float(precond_coefficients(kind, torch.tensor(1.0 - t_eps, dtype=torch.float64))[1])


def precondition(out: torch.Tensor, kind: str, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x^ = c_skip(t) z + c_out(t) F for the network output F = ``out``; out, z: (B, ...), t: (B,)."""
    c_skip, c_out = (c.to(out.dtype) for c in precond_coefficients(kind, append_dims(t, z.ndim)))
    return c_skip * z + c_out * out


def unprecondition(x: torch.Tensor, kind: str, z: torch.Tensor, t: torch.Tensor,
                   t_eps: float = T_EPS) -> torch.Tensor:
    """The F with x = c_skip z + c_out F: (x - c_skip z) / max(c_out, c_out(1 - t_eps)). Shapes as precondition."""
    c_skip, c_out = (c.to(x.dtype) for c in precond_coefficients(kind, append_dims(t, z.ndim)))
    return (x - c_skip * z) / c_out.clamp_min(_c_out_floor(kind, t_eps))


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
    clamped from below by ``t_eps``. Returns a tensor shaped like pred. ``src`` and ``dst`` may also be a
    pre-conditioner (edm, linear): the value is carried through x^ (see :func:`precondition`).
    """
    check_pred("source space", src)
    check_pred("destination space", dst)
    if src == dst:
        return pred
    if src in PRECONDITIONERS:
        return convert(precondition(pred, src, z, t), "x", dst, z, t, t_eps)
    if dst in PRECONDITIONERS:
        return unprecondition(convert(pred, src, "x", z, t, t_eps), dst, z, t, t_eps)
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
    conversion (see the module docstring for the weights this implies). A pre-conditioned output (edm,
    linear) is read as the x-prediction x^ = c_skip z + c_out F and scored as one against the true x.
    """
    check_target("loss space", loss_space)
    if check_pred("prediction target", pred_type) in PRECONDITIONERS:
        pred, pred_type = precondition(pred, pred_type, z, t), "x"
    true = targets(x, eps)[check_target("prediction target", pred_type)]
    diff = convert(pred, pred_type, loss_space, z, t, t_eps) - convert(true, pred_type, loss_space, z, t, t_eps)
    if diff.dtype in (torch.float16, torch.bfloat16):
        diff = diff.float()  # reduce low-precision outputs in fp32
    return mean_flat(diff ** 2)
