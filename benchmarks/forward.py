"""The network's forward pass (no grad) and one guided sampling batch, per net and mode (the old bench_jit).

    python -m benchmarks forward --net JiT-B/16 --batch-size 64 --modes bf16 bf16+compile --out DIR   # GPU
    python -m benchmarks forward --net small --batch-size 16 --modes fp32 bf16 --threads 1 --out DIR  # CPU

Nets: every JiT_models name at its paper size (256 px for /16, 512 px for /32 and /64) and ``small`` (32 px,
patch 4, width 192, depth 6, every JiT feature on). Modes as in ``step`` (fp32 | bf16 | auto, +compile:
the blocks and the final layer compiled, as the paper's code). FLOPs = 2 x analytic forward MACs x batch
(manifold_lab.nets.macs), against the measured matmul rate (fp32 on the CPU, bf16 on CUDA).
``--sample-batch N``: also N images of guided Heun sampling (--sample-steps, cfg 3.0, interval (0.1, 1)) in
the first mode: seconds and images/s of the first call (compile included where the mode compiles).
"""
from __future__ import annotations

import resource
import time

import torch

from benchmarks import _harness as H
from benchmarks.step import parse_mode

SMALL = dict(img_size=32, patch_size=4, in_channels=3, hidden_size=192, depth=6, num_heads=3,
             num_classes=10, bottleneck_dim=32, in_context_len=8, in_context_start=2)


def add_arguments(p) -> None:
    from manifold_lab.nets.jit import JiT_models
    p.add_argument("--net", default="JiT-B/16", choices=[*JiT_models, "small"])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["auto"], help="fp32 | bf16 | auto, each optionally +compile")
    p.add_argument("--device", default="auto")
    p.add_argument("--attn-impl", default="sdpa", choices=["sdpa", "math"])
    p.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per mode")
    p.add_argument("--sample-batch", type=int, default=0, help="guided sampling batch (0: none)")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--matmul-n", type=int, default=None, help="matmul size (default 8192 CUDA, 1024 CPU)")


def smoke(a) -> None:
    a.net, a.batch_size, a.modes, a.device, a.min_run_time, a.matmul_n = "small", 2, ["fp32"], "cpu", 0.1, 256
    a.sample_batch, a.sample_steps = 2, 2


def make_net(name: str, attn_impl: str, compile_blocks: bool, device: torch.device):
    from manifold_lab.nets.jit import JiT, build_jit
    torch.manual_seed(0)
    net = JiT(**SMALL, attn_impl=attn_impl) if name == "small" else build_jit(name, attn_impl=attn_impl)
    net = net.to(device).eval()
    return net.compile_blocks() if compile_blocks else net


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated CUDA memory, or the process's peak resident set on the CPU (weights, libs and all)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def forward_figures(a, mode: str, device: torch.device, matmul: float) -> tuple[dict, object]:
    from manifold_lab.device import autocast
    from manifold_lab.nets.macs import count_macs
    prec, comp = parse_mode(mode)
    net = make_net(a.net, a.attn_impl, comp, device)
    g = torch.Generator(device).manual_seed(0)
    b, s = a.batch_size, net.img_size
    z = torch.randn(b, net.in_channels, s, s, device=device, generator=g)
    t = torch.rand(b, device=device, generator=g)
    y = torch.randint(0, net.num_classes, (b,), device=device, generator=g) if net.num_classes else None

    @torch.no_grad()
    def fwd():
        with autocast(prec, device):
            net(z, t, y)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    fwd()
    H.sync(device)
    first = time.perf_counter() - start
    m = H.timeit(fwd, warmup=1, min_run_time=a.min_run_time)
    flops = 2 * count_macs(net) * b / m["median_s"]
    return {"forward_ms": 1e3 * m["median_s"], "forward_ms_iqr": 1e3 * m["iqr_s"], "first_call_s": first,
            "samples_per_s": b / m["median_s"], "flops": flops, "share_of_matmul": flops / matmul,
            "peak_mem_gib": peak_memory_gib(device)}, net


def sample_figures(a, net, prec: str, device: torch.device) -> dict:
    """One guided Heun batch of ``a.sample_batch`` images from ``net`` (first call, compile included)."""
    from manifold_lab.denoiser import Denoiser
    from manifold_lab.device import autocast
    from manifold_lab.sample import guided_velocity, sample_ode
    den = Denoiser(pred="x", loss="v", noise_scale=max(net.img_size / 256, 1.0), num_classes=net.num_classes)
    g = torch.Generator(device).manual_seed(1)
    yb = torch.arange(a.sample_batch, device=device) % net.num_classes
    z0 = den.noise((a.sample_batch, 3, net.img_size, net.img_size), device=device, generator=g)
    fn = guided_velocity(den, net, yb, cfg_scale=3.0, interval=(0.1, 1.0))
    H.sync(device)
    t = time.perf_counter()
    with torch.no_grad(), autocast(prec, device):
        x = sample_ode(fn, z0, steps=a.sample_steps, solver="heun")
    H.sync(device)
    dt = time.perf_counter() - t
    return {"sample_s": dt, "sample_images_per_s": a.sample_batch / dt, "sample_finite": bool(torch.isfinite(x).all())}


def run(a) -> tuple[dict, dict]:
    from manifold_lab.device import resolve_device
    device = resolve_device(a.device)
    ref = torch.bfloat16 if device.type == "cuda" else torch.float32
    figures = {"matmul_flops": H.matmul_rate(device, ref, a.matmul_n), "matmul_dtype": str(ref).split(".")[-1]}
    net = None
    for mode in a.modes:
        figures[mode], net_m = forward_figures(a, mode, device, figures["matmul_flops"])
        net = net or net_m
    if a.sample_batch:
        figures["sample"] = sample_figures(a, net, parse_mode(a.modes[0])[0], device)
    config = {"net": a.net, "batch_size": a.batch_size, "modes": a.modes, "device": str(device),
              "attn_impl": a.attn_impl, "img_size": net.img_size, "sample_batch": a.sample_batch,
              "sample_steps": a.sample_steps}
    return config, figures


def report(config: dict, figures: dict) -> None:
    print(f"forward: {config['net']} ({config['img_size']} px) batch {config['batch_size']} on {config['device']}, "
          f"{torch.get_num_threads()} thread(s); matmul {figures['matmul_flops'] / 1e9:.1f} GFLOP/s "
          f"({figures['matmul_dtype']})")
    for m in config["modes"]:
        f = figures[m]
        print(f"  {m:<14} {f['forward_ms']:8.2f} ms, {f['samples_per_s']:8.1f} img/s, {f['flops'] / 1e9:7.1f} GFLOP/s"
              f" = {f['share_of_matmul']:.2f} of matmul, first call {f['first_call_s']:.1f} s, peak "
              f"{f['peak_mem_gib']:.2f} GiB")
    if "sample" in figures:
        s = figures["sample"]
        print(f"  sampling {config['sample_batch']} images, Heun {config['sample_steps']} steps, cfg 3.0: "
              f"{s['sample_s']:.1f} s = {s['sample_images_per_s']:.2f} img/s, finite {s['sample_finite']}")
