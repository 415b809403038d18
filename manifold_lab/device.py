"""Where a run computes, in what precision and how: the ``device``, ``precision`` and ``compile`` knobs.

device: ``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
precision: ``auto`` (bf16 autocast on CUDA, none on the CPU), ``bf16`` (autocast wherever the run is) or
``fp32`` (never). Autocast covers the forward passes of training and sampling; weights, optimiser state,
losses and the ODE state stay fp32. On the CPU, bf16 is allowed only where the processor computes it
natively (AMX or AVX512-BF16, read from /proc/cpuinfo): there oneDNN runs the matmuls in bf16 several
times faster than fp32; elsewhere bf16 would be emulated and slower than fp32, so asking for it is a
one-line ConfigError (use fp32 or auto).
compile: :func:`compile_net` wraps a module in ``torch.compile`` with inductor's on-disk caches (FX graph
and AOTAutograd) in :func:`compile_cache_dir`, so only the first run of a shape pays the full compile. The
small runs compile their whole loss but the random draws (:class:`manifold_lab.train.core.LossGraph`: net,
noising and loss algebra, forward and backward), one graph per net shape, target and loss space. On the CPU
the image study's JiT is then built in a layout inductor fuses better, the same function and parameters
(:func:`manifold_lab.image_study.compiled_cpu_layout`).
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path

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


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), []))
    except OSError:
        return frozenset()


def native_bf16() -> bool:
    """Whether the CPU computes bf16 natively: AMX (amx_bf16) or AVX512-BF16 (avx512_bf16)."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether the precision policy autocasts to bf16 on ``device``. bf16 on a CPU without native bf16 is
    a one-line ConfigError (it would be emulated, slower than fp32)."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "bf16" and device.type == "cpu" and not native_bf16():
        raise ConfigError("precision bf16 on the CPU needs native bf16 (AMX or AVX512-BF16), which this CPU "
                          "lacks (emulated bf16 is slower than fp32); use precision fp32 or auto")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast(precision: str, device: torch.device):
    """The autocast context of the precision policy (a null context where it does not autocast)."""
    if not uses_bf16(precision, device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator on ``device`` (every random draw of a run comes from one of these)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def compile_cache_dir() -> Path:
    """Inductor's cache folder: $TORCHINDUCTOR_CACHE_DIR if the user set it (torch writes its own default,
    /tmp/torchinductor_<user>, there once inductor is imported: that one does not count), else
    $MANIFOLD_LAB_CACHE/inductor (default ~/.cache/manifold_lab/inductor)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    user = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if user and os.path.abspath(user) != os.path.abspath(default_cache_dir()):
        return Path(user)
    root = os.environ.get("MANIFOLD_LAB_CACHE") or Path.home() / ".cache" / "manifold_lab"
    return Path(root) / "inductor"


def compile_net(net: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(net)`` with the FX graph and AOTAutograd caches on disk in :func:`compile_cache_dir`
    (set as TORCHINDUCTOR_CACHE_DIR for this process and its children), so a second process compiling the
    same network and shapes loads the compiled code instead of compiling again. The returned module
    shares ``net``'s parameters (train ``net``, run the forward through the result)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir())   # read by inductor at each cache access
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return torch.compile(net)
