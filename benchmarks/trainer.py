"""The ImageNet trainer end to end through real files: images/s per data path, against the loader alone.

    python -m benchmarks trainer --net JiT-B/16 --batch-size 128 --num-workers 12 --out DIR   # one GPU
    python -m benchmarks trainer --cpu-smoke --out DIR                                        # seconds

Generates a natural-ish JPEG ImageFolder (manifold_lab.data.synthetic.make_natural_folder; ``--unique-images``
distinct files copied up to one epoch of every trainer step) and its prepared shard set (prepare-data), then
per data path (``imagefolder``: JPEGs decoded and cropped by the workers; ``shards``: the prepared set):

  loader_alone  the trainer's DataLoader (sampler, --num-workers, pin_memory) and the copy to the device,
                no model: steady images/s after the prefetched batches
  trainer       manifold_lab.train.imagenet.train for --warmup-steps + --steps steps with
                ``save_checkpoints: false`` (no checkpoint files: L/16's would be 9 GB): images/s over the
                steps after the warm-up (harmonic mean of log.csv's per-flush rates), wall time, losses

On the CPU the two paths feed the same items, so their losses agree exactly (``max_abs_loss_diff``).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import _harness as H
from benchmarks.step import CONFIGS, parse_mode


def add_arguments(p) -> None:
    p.add_argument("--net", default="JiT-B/16", choices=list(CONFIGS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--mode", default="auto", help="fp32 | bf16 | auto, optionally +compile")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=min(12, max((os.cpu_count() or 2) - 2, 1)))
    p.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1, help="processes making the data")
    p.add_argument("--unique-images", type=int, default=640, help="distinct JPEGs (copied up to the count needed)")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--steps", type=int, default=40, help="timed trainer steps (after --warmup-steps)")
    p.add_argument("--warmup-steps", type=int, default=None, help="steps left out of images/s (default "
                   "2 x workers + 10, rounded up to --log-every: compile, then the prefetched batches)")
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--work", default=None, help="folder for data and runs (default: a temporary one)")


def smoke(a) -> None:
    a.net, a.batch_size, a.mode, a.device, a.num_workers, a.gen_workers = "tiny", 4, "fp32", "cpu", 1, 1
    a.unique_images, a.classes, a.steps, a.warmup_steps, a.log_every = 12, 3, 4, 2, 2


def make_data(a, work: Path, size: int) -> dict:
    """The JPEG folder (one epoch of every trainer step) and its shard set under ``work``; their costs."""
    from manifold_lab.data.shards import prepare_data
    from manifold_lab.data.synthetic import make_natural_folder
    jpeg = make_natural_folder(work / "jpeg", a.batch_size * (a.warmup_steps + a.steps), classes=a.classes,
                               workers=a.gen_workers, unique=a.unique_images)
    t = time.perf_counter()
    m = prepare_data(work / "jpeg", work / "shards", size, shard_size=256, workers=a.gen_workers, progress=False)
    return {"jpeg": jpeg, "shards": {"root": str(work / "shards"), "images": m["num_images"],
                                     "seconds": time.perf_counter() - t, "gb": m["bytes"] / 1e9}}


def loader_alone(root, size: int, a, device: torch.device) -> dict:
    """The trainer's DataLoader over ``root`` plus the copy to ``device``: images/s after the first
    2 x workers + 1 batches (made while the first was waited for)."""
    from manifold_lab.data.imagefolder import ResumableDistributedSampler, collate_skip_none
    from manifold_lab.data.shards import open_dataset
    ds = open_dataset(root, size)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch_size, sampler=ResumableDistributedSampler(ds, seed=0),
                                     num_workers=a.num_workers, drop_last=True, pin_memory=device.type == "cuda",
                                     collate_fn=collate_skip_none)
    skip, n, t = 2 * a.num_workers + 1, 0, time.perf_counter()
    for k, (u8, _) in enumerate(dl):
        u8.to(device, non_blocking=True)
        if k == skip:
            H.sync(device)
            t = time.perf_counter()
        n += u8.shape[0] if k > skip else 0
    H.sync(device)
    return {"images_per_s": n / (time.perf_counter() - t) if n else float("nan"), "timed_images": n,
            "kind": type(ds).__name__}


def trainer_rate(a, data: str, out: Path, device: torch.device) -> dict:
    """The trainer for warm-up + timed steps on ``data``, no checkpoint files; images/s after the warm-up."""
    from manifold_lab.train import imagenet
    from manifold_lab.train.config import load_config
    prec, comp = parse_mode(a.mode)
    cfg = load_config(H.ROOT / "configs" / CONFIGS[a.net], {
        "data_path": str(data), "output_dir": str(out), "batch_size": a.batch_size, "precision": prec,
        "compile": comp, "max_steps": a.warmup_steps + a.steps, "log_every": a.log_every, "num_workers": a.num_workers,
        "progress": False, "device": device.type, "save_checkpoints": False, "num_classes": max(a.classes, 3)})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    res = imagenet.train(cfg)
    wall = time.perf_counter() - t
    log = imagenet.read_log(out / "log.csv")
    rows = log[log.step > a.warmup_steps]
    rows = rows if len(rows) else log
    return {"steps": res["step"], "images_per_s": len(rows) / sum(1.0 / v for v in rows.images_per_s),
            "wall_s": wall, "measured_steps": len(rows), "losses": [v for _, v in res["losses"]],
            "checkpoints_written": len(list(out.glob("*.pth"))),
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else math.nan}


def run(a) -> tuple[dict, dict]:
    from manifold_lab.device import resolve_device
    from manifold_lab.train.config import load_config
    device = resolve_device(a.device)
    if a.warmup_steps is None:
        a.warmup_steps = -(-(2 * a.num_workers + 10) // a.log_every) * a.log_every
    size = load_config(H.ROOT / "configs" / CONFIGS[a.net]).img_size
    figures: dict = {"paths": {}}
    with tempfile.TemporaryDirectory(dir=a.work) as work:
        figures["data"] = make_data(a, Path(work), size)
        roots = {"imagefolder": figures["data"]["jpeg"]["root"], "shards": figures["data"]["shards"]["root"]}
        for path, root in roots.items():
            r = {"loader_alone": loader_alone(root, size, a, device),
                 "trainer": trainer_rate(a, root, Path(work) / f"run_{path}", device)}
            r["trainer"]["share_of_loader"] = r["trainer"]["images_per_s"] / r["loader_alone"]["images_per_s"]
            figures["paths"][path] = r
    la, lb = (figures["paths"][p]["trainer"]["losses"] for p in ("imagefolder", "shards"))
    figures["max_abs_loss_diff"] = max(abs(x - y) for x, y in zip(la, lb))
    config = {"net": a.net, "batch_size": a.batch_size, "mode": a.mode, "device": str(device), "img_size": size,
              "num_workers": a.num_workers, "steps": a.steps, "warmup_steps": a.warmup_steps}
    return config, figures


def report(config: dict, figures: dict) -> None:
    d = figures["data"]
    print(f"trainer: {config['net']} batch {config['batch_size']} ({config['mode']}) on {config['device']}, "
          f"{config['num_workers']} workers; {d['jpeg']['images']} JPEGs ({d['jpeg']['mean_kb']:.0f} KB mean), "
          f"shards in {d['shards']['seconds']:.1f} s")
    for path, r in figures["paths"].items():
        t = r["trainer"]
        print(f"  {path:<12} loader alone {r['loader_alone']['images_per_s']:8.1f} img/s | trainer "
              f"{t['images_per_s']:8.1f} img/s ({t['measured_steps']} timed steps, {t['wall_s']:.0f} s, "
              f"{t['checkpoints_written']} checkpoint files)")
    print(f"  largest loss difference between the two paths: {figures['max_abs_loss_diff']:.3g}")
