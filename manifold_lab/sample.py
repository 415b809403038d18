"""ODE samplers: integrate dz/dt = v(z, t) from t = 0 (noise) to t = 1 (clean).

``velocity_fn(z, t) -> v`` with z (B, ...) and t (B,). Heun is the paper's default: second-order steps
on a linear grid of ``steps`` intervals, with a plain Euler last step (the step that ends at t = 1).
Classifier-free guidance mixes conditional and unconditional velocities only for t inside
(t_min, t_max) (the paper's interval, default (0.1, 1.0)).
"""
from __future__ import annotations

from typing import Callable

import torch

from manifold_lab.checks import check_choice, check_positive
from manifold_lab.schedule import time_grid

SOLVERS = ("heun", "euler")
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def guided_velocity(denoiser, net, y: torch.Tensor, *, cfg: float = 1.0,
                    interval: tuple[float, float] = (0.1, 1.0), null_class: int | None = None) -> VelocityFn:
    """A velocity_fn with classifier-free guidance: v_u + w (v_c - v_u) for t in (t_min, t_max), else v_c.

    y: (B,) class labels. The unconditional branch uses ``null_class`` (default denoiser.num_classes).
    With cfg == 1 the net runs once per call; otherwise it runs on the conditional and unconditional
    halves in one batch of 2B.
    """
    t_min, t_max = interval
    null = denoiser.num_classes if null_class is None else null_class

    def fn(z, t):
        if cfg == 1.0:
            return denoiser.velocity(net, z, t, y)
        v = denoiser.velocity(net, torch.cat([z, z]), torch.cat([t, t]),
                              torch.cat([y, torch.full_like(y, null)]))
        v_c, v_u = v.chunk(2)
        inside = (t < t_max) & ((t > t_min) | (t_min == 0))   # the paper's code: t_min 0 = no lower bound
        w = torch.where(inside, torch.full_like(t, float(cfg)), torch.ones_like(t))
        w = w.reshape(t.shape + (1,) * (z.ndim - 1))
        return v_u + w * (v_c - v_u)

    return fn


def generate(denoiser, net, shape, *, y: torch.Tensor | None = None, steps: int = 50, solver: str = "heun",
             cfg: float = 1.0, interval: tuple[float, float] = (0.1, 1.0), device=None,
             generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Draw samples of ``shape`` (B, ...): noise from the denoiser, then the ODE. y: (B,) or None."""
    z0 = denoiser.noise(shape, device=device, generator=generator)
    if y is None:
        fn = lambda z, t: denoiser.velocity(net, z, t)  # noqa: E731
    else:
        fn = guided_velocity(denoiser, net, y, cfg=cfg, interval=interval)
    return sample_ode(fn, z0, steps=steps, solver=solver, progress=progress)
