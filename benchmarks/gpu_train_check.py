"""GPU check of the full-scale trainer's step: JiT-B/16, bf16, synthetic 256 px data, then one guided batch.

    python benchmarks/gpu_train_check.py                    # ~2-4 min on one H100 (incl. torch.compile)
    python benchmarks/gpu_train_check.py --batch 64 --steps 30 --no-compile

Prints images/s, peak memory and the utilisation: model FLOPs/s (3 x 2 x forward MACs per image, the usual
training estimate) against a bf16 matmul rate measured on this GPU just before. It runs exactly the
trainer's step (same builders, the same Denoiser loss, AdamW, two EMAs, bf16 autocast, uint8 -> [-1, 1]
and the flip on the device); only the data is synthetic (uint8 noise already on the GPU, so the data
loader is not measured); the step is the training core's (manifold_lab.train.core.TrainCore.step), the
one every trainer takes, with the losses read back once at the end. Then one guided sampling batch: Heun 50 steps (last Euler), cfg 3.0,
interval (0.1, 1.0). Writes a JSON of the figures to --out (default $OUT/gpu_train_check.json or ./).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from manifold_lab.data.imagefolder import random_flip, to_model_range  # noqa: E402
from manifold_lab.device import autocast  # noqa: E402
from manifold_lab.nets.macs import count_macs  # noqa: E402
from manifold_lab.sample import guided_velocity, sample_ode  # noqa: E402
from manifold_lab.train.build import build_denoiser, build_model  # noqa: E402
from manifold_lab.train.config import load_config  # noqa: E402
from manifold_lab.train.core import LRSchedule, TrainCore  # noqa: E402


def matmul_tflops(n: int = 8192, iters: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * iters / (time.perf_counter() - t) / 1e12


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs/jit_b16_in256.yaml"))
    p.add_argument("--batch", type=int, default=128, help="per-GPU batch (the paper: 128)")
    p.add_argument("--steps", type=int, default=40, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--sample-batch", type=int, default=32)
    p.add_argument("--out", default=None)
    p.add_argument("--cpu-smoke", action="store_true", help="code-path check on the CPU with the tiny config")
    a = p.parse_args(argv)
    if a.cpu_smoke:
        a.config = str(Path(__file__).resolve().parents[1] / "configs/jit_tiny_cpu.yaml")
        a.no_compile = True
    elif not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU (or pass --cpu-smoke)", file=sys.stderr)
        return 1
    dev = torch.device("cpu" if a.cpu_smoke else "cuda")
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "batch": a.batch}
    res["matmul_bf16_tflops"] = matmul_tflops() if cuda else float("nan")
    print(f"{res['device']}: measured bf16 matmul {res['matmul_bf16_tflops']:.1f} TFLOP/s", flush=True)

    cfg = load_config(a.config, {"batch_size": a.batch, "compile": not a.no_compile})
    torch.manual_seed(0)
    net = build_model(cfg).to(dev)
    macs = count_macs(net)
    den = build_denoiser(cfg)
    core = TrainCore(net, den, schedule=LRSchedule(cfg.resolved_lr(8)), generator=torch.Generator(dev).manual_seed(0),
                     ema_decays=cfg.ema_decays, betas=cfg.betas, precision=cfg.precision)
    u8 = torch.randint(0, 256, (a.batch, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8, device=dev)
    y = torch.randint(0, cfg.num_classes, (a.batch,), device=dev)
    net.train()
    n_steps = iter(range(10 ** 9))

    def step():
        return core.step(next(n_steps), lambda: (random_flip(to_model_range(u8), core.generator), y))

    t = time.perf_counter()
    for _ in range(a.warmup):
        step()
    core.flush()
    sync()
    res["warmup_s"] = time.perf_counter() - t
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    core.flush()                       # one sync for all timed steps; raises on a NaN loss
    sync()
    dt = (time.perf_counter() - t) / a.steps
    res.update(step_s=dt, images_per_s=a.batch / dt, loss=float(loss), fwd_gmacs_per_image=macs / 1e9,
               peak_mem_gib=torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan"))
    res["model_tflops"] = 6 * macs * a.batch / dt / 1e12
    res["utilisation_vs_matmul"] = res["model_tflops"] / res["matmul_bf16_tflops"]
    print(f"train: {res['images_per_s']:.1f} img/s ({dt * 1e3:.1f} ms/step, batch {a.batch}), "
          f"peak {res['peak_mem_gib']:.1f} GiB, {res['model_tflops']:.1f} model TFLOP/s = "
          f"{100 * res['utilisation_vs_matmul']:.1f}% of the measured matmul rate; loss {res['loss']:.4f} "
          f"(warm-up incl. compile {res['warmup_s']:.0f} s)", flush=True)
    print(f"epoch estimate: {1281167 / res['images_per_s'] / 3600:.2f} h per ImageNet epoch on this GPU; "
          f"600 epochs on 8 such GPUs ~ {600 * 1281167 / res['images_per_s'] / 8 / 86400:.1f} days", flush=True)

    net.eval()
    yb = torch.arange(a.sample_batch, device=dev) % cfg.num_classes
    z0 = den.noise((a.sample_batch, 3, cfg.img_size, cfg.img_size), device=dev, generator=core.generator)
    fn = guided_velocity(den, net, yb, cfg_scale=3.0, interval=(0.1, 1.0))
    sync()
    t = time.perf_counter()
    with torch.no_grad(), autocast(cfg.precision, dev):
        x = sample_ode(fn, z0, steps=50, solver="heun")
    sync()
    res["sample_s"] = time.perf_counter() - t
    res["sample_images_per_s"] = a.sample_batch / res["sample_s"]
    res["sample_finite"] = bool(torch.isfinite(x).all())
    print(f"sampling: {a.sample_batch} images, Heun 50 (99 guided NFE) cfg 3.0 in {res['sample_s']:.1f} s "
          f"= {res['sample_images_per_s']:.2f} img/s (first call, incl. any compile); finite: "
          f"{res['sample_finite']}", flush=True)
    out = Path(a.out or os.environ.get("OUT", ".")) / "gpu_train_check.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
