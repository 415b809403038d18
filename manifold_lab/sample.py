"""ODE samplers: integrate dz/dt = v(z, t) from t = 0 (noise) to t = 1 (clean).

``velocity_fn(z, t) -> v`` with z (B, ...) and t (B,). Heun is the paper's default: second-order steps
on a linear grid of ``steps`` intervals, with a plain Euler last step (the step that ends at t = 1).
Classifier-free guidance mixes conditional and unconditional velocities only for t inside
(t_min, t_max) (the paper's interval, default (0.1, 1.0)).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.config import check_numbers
from manifold_lab.device import PRECISIONS
from manifold_lab.schedule import time_grid

SOLVERS = ("heun", "euler")
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# the settings a checkpoint may recommend (an official checkpoint's args); a flag given wins over them
RECOMMENDABLE = ("cfg_scale", "interval", "sample_steps", "solver")


def check_ema(ema: str, name: str = "ema") -> str:
    """The one parser of "which weights": ``model`` (the raw net), ``ema1``, ``ema2``, ... (the i-th EMA) or a
    decay in [0, 1) such as ``"0.9999"``. Returns ``ema`` as a string; anything else is a ConfigError."""
    text = str(ema)
    if text == "model" or (text.startswith("ema") and text[3:].isdigit() and int(text[3:]) >= 1):
        return text
    try:
        ok = 0 <= float(text) < 1
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be model, ema1, ema2, ... or an EMA decay in [0, 1), got {ema!r}")
    return text


def check_interval(interval, name: str = "interval") -> tuple[float, float]:
    """(lo, hi) with 0 <= lo < hi <= 1, both finite: CFG acts for lo < t < hi (lo 0: no lower bound)."""
    ok = isinstance(interval, (list, tuple)) and len(interval) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in interval)
    if not ok or not 0 <= interval[0] < interval[1] <= 1:
        raise ConfigError(f"{name} must be two numbers lo hi with 0 <= lo < hi <= 1, got {interval!r}")
    return float(interval[0]), float(interval[1])


@dataclass
class SamplingConfig:
    """How samples are drawn from a trained JiT (``sample``, ``sweep``, the ImageNet study point)."""

    ema: str = "ema1"           # which weights: ema1 (the first EMA decay), ema2, ..., model (raw), or a decay
    cfg_scale: float = 1.0      # guidance scale w: v_u + w (v_c - v_u) (paper: B 3.0, L 2.4, H 2.2 at 256)
    interval: list = field(default_factory=lambda: [0.1, 1.0])  # CFG acts for lo < t < hi (t = 1 clean; lo 0: no bound)
    sample_steps: int = 50      # ODE steps (heun: the last one Euler)
    solver: str = "heun"        # ODE solver: heun or euler
    batch_size: int = 64        # samples per process and batch
    n_samples: int = 50000      # samples drawn (class-balanced)
    seed: int = 0               # sample i starts from noise seeded with (seed, i)
    precision: str = "auto"     # auto (bf16 autocast on CUDA, none on the CPU), bf16 or fp32

    def __post_init__(self):
        check_numbers(self)
        for name in ("sample_steps", "batch_size", "n_samples"):
            check_positive(name, getattr(self, name), integer=True)
        if self.cfg_scale < 0:
            raise ConfigError(f"cfg_scale must be a finite number >= 0, got {self.cfg_scale!r}")
        self.interval = list(check_interval(self.interval))
        self.ema = check_ema(self.ema)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("precision", self.precision, PRECISIONS)


@torch.no_grad()
def sample_ode(velocity_fn: VelocityFn, z0: torch.Tensor, *, steps: int = 50, solver: str = "heun",
               progress: bool = False) -> torch.Tensor:
    """Integrate from z0 = z(t=0) to z(t=1). z0: (B, ...). Returns the clean estimate, shaped like z0.

    solver "heun": Heun steps, the last step Euler; "euler": Euler steps. ``steps`` intervals.
    """
    check_choice("solver", solver, SOLVERS)
    check_positive("steps", steps, integer=True)
    grid = time_grid(int(steps), device=z0.device)
    z = z0.float()
    b = z.shape[0]
    it = range(int(steps))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"{solver} sampling", leave=False)
    for i in it:
        t, t_next = grid[i].expand(b), grid[i + 1].expand(b)
        dt = grid[i + 1] - grid[i]
        v = velocity_fn(z, t)
        z_euler = z + dt * v
        if solver == "euler" or i == steps - 1:
            z = z_euler
        else:
            z = z + dt * 0.5 * (v + velocity_fn(z_euler, t_next))
    return z


def guided_velocity(denoiser, net, y: torch.Tensor, *, cfg_scale: float = 1.0,
                    interval: tuple[float, float] = (0.1, 1.0), null_class: int | None = None) -> VelocityFn:
    """A velocity_fn with classifier-free guidance: v_u + w (v_c - v_u) for t in (t_min, t_max), else v_c.

    y: (B,) class labels. The unconditional branch uses ``null_class`` (default denoiser.num_classes).
    With cfg_scale == 1 the net runs once per call; otherwise it runs on the conditional and unconditional
    halves in one batch of 2B.
    """
    t_min, t_max = interval
    null = denoiser.num_classes if null_class is None else null_class

    def fn(z, t):
        if cfg_scale == 1.0:
            return denoiser.velocity(net, z, t, y)
        v = denoiser.velocity(net, torch.cat([z, z]), torch.cat([t, t]),
                              torch.cat([y, torch.full_like(y, null)]))
        v_c, v_u = v.chunk(2)
        inside = (t < t_max) & ((t > t_min) | (t_min == 0))   # the paper's code: t_min 0 = no lower bound
        w = torch.where(inside, torch.full_like(t, float(cfg_scale)), torch.ones_like(t))
        w = w.reshape(t.shape + (1,) * (z.ndim - 1))
        return v_u + w * (v_c - v_u)

    return fn


def generate(denoiser, net, shape, *, y: torch.Tensor | None = None, steps: int = 50, solver: str = "heun",
             cfg_scale: float = 1.0, interval: tuple[float, float] = (0.1, 1.0), device=None,
             generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Draw samples of ``shape`` (B, ...): noise from the denoiser, then the ODE. y: (B,) or None."""
    z0 = denoiser.noise(shape, device=device, generator=generator)
    if y is None:
        fn = lambda z, t: denoiser.velocity(net, z, t)
    else:
        fn = guided_velocity(denoiser, net, y, cfg_scale=cfg_scale, interval=interval)
    return sample_ode(fn, z0, steps=steps, solver=solver, progress=progress)
