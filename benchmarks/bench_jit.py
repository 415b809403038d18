"""Throughput of the JiT network: forward and training-step images/s, peak memory, achieved FLOP/s,
and the utilisation ratio to a plain matmul rate measured on the same machine in the same run.

    python benchmarks/bench_jit.py --device cpu --batch 2 --iters 3             # JiT-B/16 at 256 px
    python benchmarks/bench_jit.py --small --device cpu --batch 16 --iters 10   # a small CPU config
    python benchmarks/bench_jit.py --device cuda --dtype bf16 --batch 64 --iters 20 [--compile]

FLOPs are 2 x the analytic MACs (manifold_lab.nets.macs.count_macs); a training step counts 3 x the
forward (forward + backward), the usual model-FLOPs convention, so the optimiser and the loss are
overhead. Utilisation = achieved FLOP/s / matmul FLOP/s (an n x n x n matmul in the same dtype), a
figure that carries across machines better than raw images/s.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import torch

from manifold_lab.denoiser import Denoiser
from manifold_lab.device import autocast
from manifold_lab.nets.jit import JiT, JiT_models, build_jit
from manifold_lab.nets.macs import count_macs, count_params
from manifold_lab.train.core import LRSchedule, TrainCore

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# a small CPU configuration: 32 px, patch 4 (64 tokens), width 192, 6 blocks, every JiT feature on
SMALL = dict(img_size=32, patch_size=4, in_channels=3, hidden_size=192, depth=6, num_heads=3,
             num_classes=10, bottleneck_dim=32, in_context_len=8, in_context_start=2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, iters: int, warmup: int, device: torch.device) -> float:
    """Mean seconds per call of fn() after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, iters: int) -> float:
    """FLOP/s of an (n x n) @ (n x n) matmul in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sec = timed(lambda: a @ b, iters, warmup=2, device=device)
    return 2 * n ** 3 / sec


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def peak_memory_gib(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        return "peak allocated", torch.cuda.max_memory_allocated(device) / 2 ** 30
    # ru_maxrss is KiB on Linux: the whole process's peak resident set (weights, activations, libs)
    return "peak process RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="JiT-B/16", choices=list(JiT_models))
    ap.add_argument("--small", action="store_true", help="the small CPU configuration instead of --model")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="bf16 = autocast (weights stay fp32)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--attn_impl", default="sdpa", choices=["sdpa", "math"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the blocks and the final layer")
    ap.add_argument("--matmul_n", type=int, default=None, help="matmul size (default 2048 CPU, 8192 GPU)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    if args.small:
        name, net = "small", JiT(**SMALL, attn_impl=args.attn_impl)
    else:
        name, net = args.model, build_jit(args.model, attn_impl=args.attn_impl)
    net = net.to(device)
    if args.compile:
        net.compile_blocks()
    macs = count_macs(net)
    b, size = args.batch, net.img_size
    z = torch.randn(b, net.in_channels, size, size, device=device)
    t = torch.rand(b, device=device)
    y = torch.randint(0, net.num_classes, (b,), device=device) if net.num_classes else None
    den = Denoiser(pred="x", loss="v", noise_scale=size / 256 if size >= 256 else 1.0,
                   num_classes=net.num_classes, label_drop=0.1 if net.num_classes else 0.0)
    precision = "fp32" if dtype == torch.float32 else "bf16"
    core = TrainCore(net, den, schedule=LRSchedule(1e-4), generator=torch.Generator(device).manual_seed(0),
                     precision=precision)      # the training core's step (no EMA: the network's own cost)

    @torch.no_grad()
    def forward():
        with autocast(precision, device):
            net(z, t, y)

    def train_step():
        core.step(0, lambda: (z, y))
        core.flush()

    mm_n = args.matmul_n or (8192 if device.type == "cuda" else 2048)
    mm = matmul_rate(device, dtype, mm_n, iters=10 if device.type == "cuda" else 3)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    net.eval()
    fwd_s = timed(forward, args.iters, args.warmup, device)
    mem_name, fwd_mem = peak_memory_gib(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    net.train()
    step_s = timed(train_step, args.iters, args.warmup, device)
    _, step_mem = peak_memory_gib(device)

    fwd_flops = 2 * macs * b / fwd_s
    step_flops = 3 * 2 * macs * b / step_s
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    print(f"machine   {dev_name} | {platform.system()} | torch {torch.__version__} | python {sys.version.split()[0]}")
    print(f"          device {device}, dtype {args.dtype}, torch threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load avg {tuple(round(x, 2) for x in load)}")
    print(f"model     {name}: {size}px, patch {net.patch_size}, width {net.hidden_size}, depth {net.depth}, "
          f"{count_params(net) / 1e6:.2f}M params, {macs / 1e9:.3f} GMACs/img, attn {args.attn_impl}, "
          f"compile {args.compile}")
    print(f"matmul    {mm_n}^3 {args.dtype}: {mm / 1e9:.1f} GFLOP/s")
    print(f"forward   batch {b}: {fwd_s * 1e3:.1f} ms/iter, {b / fwd_s:.2f} img/s, "
          f"{fwd_flops / 1e9:.1f} GFLOP/s, utilisation {fwd_flops / mm:.1%}, {mem_name} {fwd_mem:.2f} GiB")
    print(f"train     batch {b}: {step_s * 1e3:.1f} ms/step, {b / step_s:.2f} img/s, "
          f"{step_flops / 1e9:.1f} GFLOP/s (3x fwd), utilisation {step_flops / mm:.1%}, {mem_name} {step_mem:.2f} GiB")


if __name__ == "__main__":
    main()
