"""The GPU speed report (issue 14) in one run on one device, for JiT-B/16 and JiT-L/16 (batch 128, bf16,
torch.compile):

    python benchmarks/gpu_speed.py --out $OUT                 # ~6-7 min on one H100 (two compiles, ~55 s each)
    python benchmarks/gpu_speed.py --models JiT-B/16 --out $OUT
    python benchmarks/gpu_speed.py --cpu-smoke --out /tmp/smoke   # every code path, tiny JiT on the CPU, < 60 s

1. rates   a measured bf16 matmul rate (8192^3, TFLOP/s) and the pinned uint8 host->device copy (GB/s)
2. data    a generated ImageFolder (--images natural-ish JPEG q90, ImageNet-like sizes, see
           bench_loader.make_natural_folder) and its prepared shard set (prepare-data), with their costs
3. loader  the loader alone, per data path: the trainer's DataLoader (sampler, --num-workers, pin_memory)
           and the .to(device) copy, no model: steady images/s after the first batch
4. models  per model, in one process after torch._dynamo.reset():
           core     TrainCore.step on synthetic uint8 data already on the device (as gpu_train_check.py;
                    losses read once at the end): images/s, ms/step, peak memory, model TFLOP/s
                    (6 x forward MACs per image) and its share of the measured matmul rate
           profile  torch.profiler over a few core steps: device time per kernel group (attention, matmul,
                    norm/modulation, elementwise, optimizer, EMA, other) and the top kernels
           trainer  manifold_lab.train.imagenet.train with --max-steps through each data path (imagefolder:
                    the JPEGs decoded and cropped by the workers; shards: the prepared set): images/s from
                    log.csv after --warmup-steps steps, peak memory. Checkpoints are not written (the
                    benchmark replaces ImageNetRun.save by a flush: L/16's would be 9 GB).

Writes --out/gpu_speed.json after every section (a run cut short keeps what it measured) and
--out/profile_<model>.json (every kernel's time and group).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_loader import make_natural_folder  # noqa: E402
from manifold_lab.data.imagefolder import (ResumableDistributedSampler, collate_skip_none, random_flip,  # noqa: E402
                                           to_model_range)
from manifold_lab.data.shards import open_dataset, prepare_data  # noqa: E402
from manifold_lab.nets.macs import count_macs  # noqa: E402
from manifold_lab.train.build import build_denoiser, build_model  # noqa: E402
from manifold_lab.train.config import load_config  # noqa: E402
from manifold_lab.train.core import LRSchedule, TrainCore  # noqa: E402

CONFIGS = {"JiT-B/16": "jit_b16_in256.yaml", "JiT-L/16": "jit_l16_in256.yaml", "JiT-B/32": "jit_b32_in512.yaml",
           "JiT-L/32": "jit_l32_in512.yaml", "JiT-H/16": "jit_h16_in256.yaml"}
# kernel (or CPU op) name -> group; the first match wins (EMA's _foreach_lerp_ before the optimizer's)
GROUPS = [("EMA", r"lerp"),
          ("optimizer", r"adam|_foreach_"),
          ("attention", r"flash|fmha|attention|sdpa|softmax|cudnn.*mha"),
          ("matmul", r"gemm|xmma|cutlass|nvjet|cublas|wgmma|_scaled_mm|conv|"
                     r"aten::(mm|addmm|bmm|baddbmm|matmul|linear)$"),
          ("norm/modulation", r"rsqrt|norm|modulat|rms"),
          ("elementwise", r"triton_|elementwise|vectorized|unrolled|copy|fill|cat|reduce|memcpy|memset|aten::")]


# ---- rates and data ------------------------------------------------------------------------------------
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def matmul_tflops(dev: torch.device, dtype: torch.dtype, n: int, iters: int) -> float:
    """Measured n x n x n matmul rate in TFLOP/s (the bar the training step is compared with)."""
    a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(dev)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(dev)
    return 2 * n ** 3 * iters / (time.perf_counter() - t) / 1e12


def h2d_gb_per_s(dev: torch.device, batch: int, size: int, iters: int = 20) -> float:
    """Pinned uint8 (batch, 3, S, S) host -> device copies, GB/s (NaN on the CPU)."""
    if dev.type != "cuda":
        return float("nan")
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8).pin_memory()
    x.to(dev, non_blocking=True)
    sync(dev)
    t = time.perf_counter()
    for _ in range(iters):
        x.to(dev, non_blocking=True)
    sync(dev)
    return x.numel() * iters / (time.perf_counter() - t) / 1e9


def make_data(a, work: Path, size: int) -> dict:
    """The JPEG ImageFolder and its shard set under ``work``; what each cost."""
    jpeg = make_natural_folder(work / "jpeg", a.images, classes=a.classes, fmt="jpg", workers=a.gen_workers,
                               unique=a.unique_images)
    t = time.perf_counter()
    m = prepare_data(work / "jpeg", work / "shards", size, shard_size=256, workers=a.gen_workers, progress=False)
    dt = time.perf_counter() - t
    return {"jpeg": jpeg, "shards": {"root": str(work / "shards"), "images": m["num_images"], "seconds": dt,
                                     "images_per_s": m["num_images"] / dt, "workers": a.gen_workers,
                                     "gb": m["bytes"] / 1e9}}


def loader_alone(root, size: int, batch: int, workers: int, dev: torch.device) -> dict:
    """The trainer's DataLoader over ``root`` (one epoch) plus the copy to ``dev``: images/s after the
    first 2 x workers + 1 batches (the prefetched ones, made while the first was waited for)."""
    ds = open_dataset(root, size)
    sampler = ResumableDistributedSampler(ds, seed=0)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                                     pin_memory=dev.type == "cuda", collate_fn=collate_skip_none)
    skip = 2 * workers + 1
    t0 = time.perf_counter()
    it = iter(dl)
    next(it)[0].to(dev, non_blocking=True)
    first, n = time.perf_counter() - t0, 0
    for k, (u8, _) in enumerate(it, start=1):
        u8.to(dev, non_blocking=True)
        if k == skip:
            sync(dev)
            t = time.perf_counter()
        n += u8.shape[0] if k > skip else 0
    sync(dev)
    rate = n / (time.perf_counter() - t) if n else float("nan")
    return {"workers": workers, "batch": batch, "timed_images": n, "images_per_s": rate, "first_batch_s": first,
            "kind": type(ds).__name__}


# ---- the training core on synthetic data, and its profile ----------------------------------------------
def core_rate(cfg, dev: torch.device, a) -> tuple[dict, TrainCore, callable]:
    """TrainCore.step on uint8 (B, 3, S, S) noise already on ``dev`` (flip and map on the device, as the
    trainer does); returns (figures, core, one-step function)."""
    torch.manual_seed(0)
    net = build_model(cfg).to(dev)
    macs = count_macs(net)
    core = TrainCore(net, build_denoiser(cfg), schedule=LRSchedule(cfg.resolved_lr(8)),
                     generator=torch.Generator(dev).manual_seed(0), ema_decays=cfg.ema_decays, betas=cfg.betas,
                     precision=cfg.precision)
    u8 = torch.randint(0, 256, (a.batch, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8, device=dev)
    y = torch.randint(0, cfg.num_classes, (a.batch,), device=dev)
    net.train()
    steps = iter(range(10 ** 9))

    def step():
        return core.step(next(steps), lambda: (random_flip(to_model_range(u8), core.generator), y))
    t = time.perf_counter()
    for _ in range(a.core_warmup):
        step()
    core.flush()
    sync(dev)
    warm = time.perf_counter() - t
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    for _ in range(a.core_steps):
        step()
    loss = core.flush()[-1][1]                 # one sync for all timed steps; raises on a NaN loss
    sync(dev)
    dt = (time.perf_counter() - t) / a.core_steps
    res = {"batch": a.batch, "step_ms": dt * 1e3, "images_per_s": a.batch / dt, "warmup_s": warm, "loss": loss,
           "fwd_gmacs_per_image": macs / 1e9, "model_tflops": 6 * macs * a.batch / dt / 1e12,
           "peak_mem_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")}
    return res, core, step


def group_of(name: str) -> str:
    """The kernel group of a CUDA kernel or CPU op name (GROUPS; "other" if none matches)."""
    low = name.lower()
    return next((g for g, pat in GROUPS if re.search(pat, low)), "other")


def group_times(rows: list[tuple[str, float, int]]) -> dict:
    """[(name, microseconds, calls)] -> {"groups": {group: {"ms", "share"}}, "top": the 15 longest}."""
    total = sum(us for _, us, _ in rows) or 1.0
    groups: dict[str, float] = {}
    for name, us, _ in rows:
        groups[group_of(name)] = groups.get(group_of(name), 0.0) + us
    top = sorted(rows, key=lambda r: -r[1])[:15]
    return {"total_ms": total / 1e3,
            "groups": {g: {"ms": us / 1e3, "share": us / total}
                       for g, us in sorted(groups.items(), key=lambda x: -x[1])},
            "top": [{"name": n[:120], "group": group_of(n), "ms": us / 1e3, "calls": c, "share": us / total}
                    for n, us, c in top]}


def profile_core(step, core: TrainCore, dev: torch.device, n_steps: int) -> tuple[dict, list]:
    """torch.profiler over ``n_steps`` core steps: device kernels on CUDA (self time), CPU ops on the CPU.
    Returns (grouped summary per step, every row)."""
    from torch.profiler import ProfilerActivity, profile
    cuda = dev.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(n_steps):
            step()
        core.flush()
        sync(dev)
    ka = prof.key_averages()
    if cuda:
        rows = [(e.key, e.self_device_time_total, e.count) for e in ka
                if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
        rows = rows or [(e.key, e.self_device_time_total, e.count) for e in ka if e.self_device_time_total > 0]
    else:
        rows = [(e.key, e.self_cpu_time_total, e.count) for e in ka if e.self_cpu_time_total > 0]
    rows = [(n, us / n_steps, c // n_steps) for n, us, c in rows]
    return {"steps": n_steps, "timer": "cuda kernels" if cuda else "cpu ops", **group_times(rows)}, rows


# ---- the trainer through each data path ----------------------------------------------------------------
@contextlib.contextmanager
def trainer_patches():
    """No checkpoint files (save = flush); the dataset through open_dataset if the trainer does not yet."""
    from manifold_lab.train import imagenet
    saved = {"save": imagenet.ImageNetRun.save, "ds": getattr(imagenet, "ImageFolderDataset", None)}
    imagenet.ImageNetRun.save = lambda self, name: self._flush()
    if not hasattr(imagenet, "open_dataset"):
        imagenet.ImageFolderDataset = lambda root, size, bad_images="error": open_dataset(root, size,
                                                                                          bad_images=bad_images)
    try:
        yield imagenet
    finally:
        imagenet.ImageNetRun.save = saved["save"]
        if saved["ds"] is not None:
            imagenet.ImageFolderDataset = saved["ds"]


def trainer_rate(config: Path, data: str, out: Path, dev: torch.device, a, extra: dict) -> dict:
    """manifold_lab.train.imagenet.train for --trainer-steps steps on ``data``; images/s over the steps
    after --warmup-steps (the harmonic mean of log.csv's per-flush rates), peak memory, wall time."""
    over = {"data_path": str(data), "output_dir": str(out), "batch_size": a.batch,
            "max_steps": a.warmup_steps + a.trainer_steps,
            "log_every": a.log_every, "num_workers": a.num_workers, "progress": False, "device": dev.type,
            "save_every_epochs": 10 ** 6, "keep_every_epochs": 10 ** 6, **extra}
    cfg = load_config(config, over)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    with trainer_patches() as imagenet:
        res = imagenet.train(cfg)
        log = imagenet.read_log(out / "log.csv")
    wall = time.perf_counter() - t
    rows = log[log.step > a.warmup_steps]
    rows = rows if len(rows) else log
    ips = len(rows) / sum(1.0 / v for v in rows.images_per_s)
    return {"steps": res["step"], "images_per_s": ips, "wall_s": wall, "workers": a.num_workers,
            "measured_steps": len(rows), "losses": [v for _, v in res["losses"]],
            "peak_mem_gib": torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")}


# ---- one model, the whole run --------------------------------------------------------------------------
def model_section(name: str, config: Path, a, dev: torch.device, data: dict, res: dict, save) -> dict:
    """core, profile, trainer per data path for one model; ``save()`` after each part."""
    torch._dynamo.reset()                               # no shapes or guards carried over from another model
    over = {"batch_size": a.batch, "compile": not a.no_compile, "device": dev.type}
    cfg = load_config(config, over)
    out = res["models"][name] = {"config": str(config.relative_to(ROOT)), "img_size": cfg.img_size}
    core, core_obj, step = core_rate(cfg, dev, a)
    core["share_of_matmul"] = core["model_tflops"] / res["matmul_tflops"]
    out["core"] = core
    print(f"[{name}] core: {core['images_per_s']:.1f} img/s ({core['step_ms']:.1f} ms/step), "
          f"{core['model_tflops']:.1f} TFLOP/s = {100 * core['share_of_matmul']:.1f}% of matmul, peak "
          f"{core['peak_mem_gib']:.1f} GiB, warm-up {core['warmup_s']:.0f} s", flush=True)
    save()
    prof, rows = profile_core(step, core_obj, dev, a.profile_steps)
    out["profile"] = prof
    tag = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    (a.out / f"profile_{tag}.json").write_text(json.dumps(
        [{"name": n, "us_per_step": us, "calls_per_step": c, "group": group_of(n)} for n, us, c in rows], indent=1))
    print_profile(name, prof)
    del core_obj, step
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    save()
    out["trainer"] = {}
    for path, root in (("imagefolder", data["jpeg"]["root"]), ("shards", data["shards"]["root"])):
        r = trainer_rate(config, root, a.work / f"run_{tag}_{path}", dev, a, over)
        r["share_of_core"] = r["images_per_s"] / core["images_per_s"]
        out["trainer"][path] = r
        print(f"[{name}] trainer via {path}: {r['images_per_s']:.1f} img/s = {100 * r['share_of_core']:.0f}% of "
              f"the core's ({a.num_workers} workers, {r['measured_steps']} timed steps, {r['wall_s']:.0f} s)",
              flush=True)
        save()
        gc.collect()
    la, lb = out["trainer"]["imagefolder"]["losses"], out["trainer"]["shards"]["losses"]
    out["trainer"]["max_abs_loss_diff"] = max(abs(x - y) for x, y in zip(la, lb))   # 0 on the CPU: same items
    print(f"[{name}] largest loss difference between the two paths: {out['trainer']['max_abs_loss_diff']:.3g}")
    return out


def print_profile(name: str, prof: dict) -> None:
    print(f"[{name}] profile ({prof['timer']}, {prof['total_ms']:.1f} ms per step): " + ", ".join(
        f"{g} {100 * v['share']:.1f}%" for g, v in prof["groups"].items()))
    for r in prof["top"][:10]:
        print(f"    {r['ms']:8.2f} ms {100 * r['share']:5.1f}%  {r['group']:<16} {r['name'][:90]}")


def print_summary(res: dict) -> None:
    print(f"\n{res['device']} | matmul {res['matmul_tflops']:.1f} TFLOP/s ({res['matmul_dtype']}) | pinned H2D "
          f"{res['h2d_gb_per_s']:.1f} GB/s | loader alone: " + ", ".join(
              f"{k} {v['images_per_s']:.0f} img/s ({v['workers']} workers)" for k, v in res["loader"].items()))
    print(f"{'model':<10}{'core img/s':>12}{'% matmul':>10}{'peak GiB':>10}{'via JPEG':>10}{'via shards':>12}")
    for name, m in res["models"].items():
        c, t = m.get("core", {}), m.get("trainer", {})
        cell = lambda d, k, f: format(d[k], f) if k in d else "-"  # noqa: E731
        print(f"{name:<10}{cell(c, 'images_per_s', '12.1f')}{format(100 * c.get('share_of_matmul', math.nan), '10.1f')}"
              f"{cell(c, 'peak_mem_gib', '10.1f')}{cell(t.get('imagefolder', {}), 'images_per_s', '10.1f')}"
              f"{cell(t.get('shards', {}), 'images_per_s', '12.1f')}")


# ---- command line --------------------------------------------------------------------------------------
def parse(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--models", nargs="+", default=["JiT-B/16", "JiT-L/16"], choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=128, help="per-GPU batch (the paper: 128)")
    p.add_argument("--unique-images", type=int, default=640, help="distinct JPEGs (copied up to the count needed)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=min(12, max((os.cpu_count() or 2) - 2, 1)))
    p.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1, help="processes making the data")
    p.add_argument("--core-warmup", type=int, default=10)
    p.add_argument("--core-steps", type=int, default=30)
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--trainer-steps", type=int, default=40, help="timed trainer steps (after the warm-up)")
    p.add_argument("--warmup-steps", type=int, default=None, help="trainer steps left out of its images/s "
                   "(default 2 x workers + 10, rounded up to --log-every: compile, then the prefetched batches)")
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--work", default=None, help="folder for data and runs (default: a temporary one)")
    p.add_argument("--out", default=None, help="output folder (default $OUT or .)")
    p.add_argument("--cpu-smoke", action="store_true", help="every code path on the CPU, tiny JiT, < 60 s")
    a = p.parse_args(argv)
    a.out = Path(a.out or os.environ.get("OUT", "."))
    if a.cpu_smoke:                                     # the tiny config, small counts, no compile
        a.models, a.no_compile = ["tiny"], True
        a.batch, a.unique_images, a.classes, a.num_workers, a.gen_workers = 8, 24, 3, 1, 2
        a.core_warmup, a.core_steps, a.profile_steps, a.trainer_steps = 2, 3, 2, 4
        a.warmup_steps, a.log_every = 2, 2
    if a.warmup_steps is None:
        a.warmup_steps = -(-(2 * a.num_workers + 10) // a.log_every) * a.log_every
    a.images = a.batch * (a.warmup_steps + a.trainer_steps)   # one epoch: every trainer step, no epoch restart
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if not a.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA device: this report needs a GPU (or pass --cpu-smoke)", file=sys.stderr)
        return 1
    dev = torch.device("cpu" if a.cpu_smoke else "cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    a.out.mkdir(parents=True, exist_ok=True)
    configs = {"tiny": ROOT / "configs/jit_tiny_cpu.yaml"} if a.cpu_smoke else {m: ROOT / "configs" / CONFIGS[m]
                                                                                for m in a.models}
    size = load_config(configs[a.models[0]]).img_size
    t0 = time.perf_counter()
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (smoke)",
           "torch": torch.__version__,
           "cpus": os.cpu_count(), "batch": a.batch, "img_size": size, "models": {},
           "matmul_dtype": "bf16" if dev.type == "cuda" else "fp32"}
    out_json = a.out / "gpu_speed.json"

    def save():
        res["elapsed_s"] = time.perf_counter() - t0
        out_json.write_text(json.dumps(res, indent=2, default=float))
    n, it = (8192, 20) if dev.type == "cuda" else (256, 5)
    res["matmul_tflops"] = matmul_tflops(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32, n, it)
    res["h2d_gb_per_s"] = h2d_gb_per_s(dev, a.batch, size)
    with tempfile.TemporaryDirectory(dir=a.work) as work:
        a.work = Path(work)
        res["data"] = make_data(a, a.work, size)
        print(f"data: {res['data']['jpeg']['images']} JPEGs ({res['data']['jpeg']['mean_kb']:.0f} KB mean) in "
              f"{res['data']['jpeg']['seconds']:.0f} s; shards in {res['data']['shards']['seconds']:.1f} s", flush=True)
        res["loader"] = {k: loader_alone(res["data"][p]["root"], size, a.batch, a.num_workers, dev)
                         for k, p in (("imagefolder", "jpeg"), ("shards", "shards"))}
        save()
        for name in a.models:
            model_section(name, configs[name], a, dev, res["data"], res, save)
            print(f"... {time.perf_counter() - t0:.0f} s so far", flush=True)
    save()
    print_summary(res)
    print(f"wrote {out_json} ({res['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
