"""Where a run computes and in what precision: the ``device`` and ``precision`` knobs of every config.

device: ``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
precision: ``auto`` (bf16 autocast on CUDA, none on the CPU), ``bf16`` (autocast wherever the run is) or
``fp32`` (never). Autocast covers the forward passes of training and sampling; weights, optimiser state,
losses and the ODE state stay fp32.
"""
from __future__ import annotations

import contextlib
import re

import torch

from manifold_lab.checks import ConfigError, check_choice

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "bf16", "fp32")


def check_device(spec: str) -> str:
    """Return ``spec`` if it is auto, cpu, cuda or cuda:N; else a one-line ConfigError."""
    if not isinstance(spec, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        raise ConfigError(f"unknown device {spec!r}; allowed: {', '.join(DEVICES)}")
    return spec


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch.device of a device knob. Asking for CUDA where torch sees none is a one-line error."""
    check_device(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA device; use device auto or cpu")
    dev = torch.device(spec)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {spec!r} does not exist: torch sees {torch.cuda.device_count()} CUDA "
                          f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether the precision policy autocasts to bf16 on ``device``."""
    check_choice("precision", precision, PRECISIONS)
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(precision: str, device: torch.device):
    """The autocast context of the precision policy (a null context where it does not autocast)."""
    if not uses_bf16(precision, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator on ``device`` (every random draw of a run comes from one of these)."""
    return torch.Generator(device=device).manual_seed(int(seed))
