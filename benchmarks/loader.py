"""Where the training data loader's time goes, per CPU worker: decode, ADM crop, item, DataLoader, shards.

    python -m benchmarks loader --out DIR                     # ~2 min on 2 cores (incl. the images)
    python -m benchmarks loader --images 200 --png-images 100 --min-s 0.5 --workers 0 1 --out DIR

Generates its own ImageNet-like folders in a temporary directory (manifold_lab.data.synthetic
.make_natural_folder: ``--images`` JPEG (quality 90) and ``--png-images`` PNG images of 500x375-ish sizes
with natural-ish content, 10 classes; nothing is downloaded). Then measures, in images/s of one process:

  read          the file's bytes (page cache: the files were just written)
  decode        PIL open + convert("RGB"), JPEG and PNG separately; torchvision.io.decode_jpeg (CPU) too
  crop          the ADM centre crop (center_crop_arr) of decoded images
  to_tensor     np.asarray -> uint8 (3, S, S) contiguous tensor
  item          ImageFolderDataset[i] (all of the above), JPEG and PNG; ShardDataset[i] (prepared shards)
  collate       collate_skip_none of a batch, per image
  loader        DataLoader end to end incl. collate, num_workers in --workers, steady state after the first
                batch (persistent workers), plus the time to the first batch
  prepare       prepare-data (one process) on the JPEG folder: the one-time cost of the shard path
  host_copy     memcpy of a uint8 batch (what pin_memory adds per batch), GB/s

and estimates how many workers each path needs for --target images/s (JiT-B/16 on one H100: ~1700).
Figures depend on this CPU and on other jobs sharing it: "cpu_share" is process CPU time / wall time.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from manifold_lab.data.imagefolder import ImageFolderDataset, center_crop_arr, collate_skip_none, list_images
from manifold_lab.data.shards import ShardDataset, prepare_data
from manifold_lab.data.synthetic import make_natural_folder


def add_arguments(p) -> None:
    p.add_argument("--images", type=int, default=500, help="JPEG images to generate")
    p.add_argument("--png-images", type=int, default=200, help="PNG images to generate")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader num_workers to try")
    p.add_argument("--min-s", type=float, default=2.0, help="seconds per measurement")
    p.add_argument("--target", type=float, default=1700.0, help="images/s to feed (JiT-B/16, one H100)")
    p.add_argument("--gen-workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--tmp", default=None, help="folder for the generated data (default: a temporary one)")


def smoke(a) -> None:
    a.images, a.png_images, a.img_size, a.batch_size, a.workers, a.min_s, a.gen_workers = 6, 3, 32, 3, [0], 0.02, 1


# ---- timing --------------------------------------------------------------------------------------------
def timed(fn, items: list, min_s: float) -> dict:
    """Call fn(item) over ``items`` (cycling) until ``min_s`` seconds have passed and every item was seen
    once (after one untimed call: imports, caches); returns images/s, microseconds per image and the
    process's CPU share of the wall time and images per CPU-second (a dedicated core's rate)."""
    fn(items[0])
    n, t, c = 0, time.perf_counter(), time.process_time()
    while True:
        fn(items[n % len(items)])
        n += 1
        dt = time.perf_counter() - t
        if dt >= min_s and n >= min(len(items), 50) or n >= 20 * len(items):
            break
    cpu = time.process_time() - c
    return {"images_per_s": n / dt, "us_per_image": 1e6 * dt / n, "n": n, "cpu_share": cpu / dt,
            "images_per_cpu_s": n / max(cpu, 1e-9)}


def _decode_pil(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _decode_tv(path: str) -> torch.Tensor:
    import torchvision.io as tio
    return tio.decode_jpeg(tio.read_file(path), mode=tio.ImageReadMode.RGB)


def _read(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.read())


def _to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


def stage_rates(paths: list[str], size: int, min_s: float, *, tv: bool) -> dict:
    """read / decode (PIL, optionally torchvision) / crop / to_tensor rates on the images of ``paths``."""
    out = {"read": timed(_read, paths, min_s), "decode": timed(_decode_pil, paths, min_s)}
    if tv:
        out["decode_torchvision"] = timed(_decode_tv, paths, min_s)
    decoded = [_decode_pil(p) for p in paths[:60]]
    out["crop"] = timed(lambda im: center_crop_arr(im, size), decoded, min_s)
    cropped = [center_crop_arr(im, size) for im in decoded[:20]]
    out["to_tensor"] = timed(_to_tensor, cropped, min_s)
    return out


def item_rate(ds, min_s: float, seed: int = 0) -> dict:
    """Dataset item rate in a random order (as a shuffled sampler reads it)."""
    order = np.random.default_rng(seed).permutation(len(ds)).tolist()
    return timed(lambda i: ds[i], order, min_s)


def collate_rate(ds, batch: int, min_s: float) -> dict:
    """collate_skip_none of ``batch`` ready items, per image."""
    items = [ds[i % len(ds)] for i in range(batch)]
    r = timed(lambda _: collate_skip_none(items), [0], min_s)
    return {**r, "images_per_s": r["images_per_s"] * batch, "us_per_image": r["us_per_image"] / batch,
            "images_per_cpu_s": r["images_per_cpu_s"] * batch}


def loader_rate(ds, *, batch: int, workers: int, min_s: float, seed: int = 0) -> dict:
    """DataLoader (shuffled, drop_last, collate_skip_none, persistent workers): steady-state images/s and
    images per worker CPU-second after the first batch and the 2 x workers prefetched ones, and the
    seconds to the first batch (worker start-up included). batch <= len(ds)."""
    batch = min(batch, len(ds))
    g = torch.Generator().manual_seed(seed)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                     collate_fn=collate_skip_none, generator=g, persistent_workers=workers > 0)
    t0 = time.perf_counter()
    it = iter(dl)
    next(it)
    first = time.perf_counter() - t0
    for _ in range(2 * workers):                 # the prefetched batches, made before the timed window
        next(it, None)
    pids = [w.pid for w in getattr(getattr(dl, "_iterator", None), "_workers", [])]
    n, t, c, wc = 0, time.perf_counter(), time.process_time(), _cpu_seconds(pids)
    while time.perf_counter() - t < min_s or n < 2 * batch:
        try:
            x, _ = next(it)
        except StopIteration:                    # next epoch, same (persistent) workers
            it = iter(dl)
            continue
        n += x.shape[0]
    rate = n / (time.perf_counter() - t)
    main_cpu, worker_cpu = time.process_time() - c, _cpu_seconds(pids) - wc
    del it, dl
    return {"workers": workers, "batch": batch, "images_per_s": rate, "first_batch_s": first,
            "images_per_s_per_worker": rate / max(workers, 1), "main_cpu_s": main_cpu, "worker_cpu_s": worker_cpu,
            "images_per_worker_cpu_s": n / max(worker_cpu if workers else main_cpu, 1e-9)}


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes ``pids`` so far (Linux /proc; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def host_copy_rate(size: int, batch: int, min_s: float) -> dict:
    """memcpy of a uint8 (batch, 3, S, S) batch into a preallocated one (pin_memory's extra host copy)."""
    src = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    dst = torch.empty_like(src)
    r = timed(lambda _: dst.copy_(src), [0], min_s)
    return {"gb_per_s": src.numel() * r["images_per_s"] / 1e9, "batch_bytes": src.numel()}


# ---- the run -------------------------------------------------------------------------------------------
def measure(a, tmp: Path) -> dict:
    """Every figure of the module docstring on folders generated under ``tmp``."""
    S, res = a.img_size, {}
    res["data"] = {"jpeg": make_natural_folder(tmp / "jpeg", a.images, fmt="jpg", workers=a.gen_workers),
                   "png": make_natural_folder(tmp / "png", a.png_images, fmt="png", workers=a.gen_workers, seed=1)}
    paths = {k: list_images(tmp / k) for k in ("jpeg", "png")}
    res["stages"] = {k: stage_rates(paths[k], S, a.min_s, tv=k == "jpeg") for k in paths}
    t, c = time.perf_counter(), time.process_time()
    prepare_data(tmp / "jpeg", tmp / "shards", S, workers=0, progress=False)
    res["prepare"] = {"images_per_s": a.images / (time.perf_counter() - t), "workers": 1,
                      "images_per_cpu_s": a.images / (time.process_time() - c)}
    ds = {"jpeg": ImageFolderDataset(tmp / "jpeg", S), "png": ImageFolderDataset(tmp / "png", S),
          "shards": ShardDataset(tmp / "shards", S)}
    res["item"] = {k: item_rate(d, a.min_s) for k, d in ds.items()}
    res["collate"] = collate_rate(ds["shards"], a.batch_size, a.min_s)
    res["loader"] = {k: [loader_rate(d, batch=a.batch_size, workers=w, min_s=a.min_s) for w in a.workers]
                     for k, d in ds.items()}
    res["host_copy"] = host_copy_rate(S, a.batch_size, a.min_s)
    return res


def shares(res: dict) -> dict:
    """CPU microseconds per image of each stage and its share of the one-process loader's CPU time per
    image (the larger of the measured loader time and the sum of the stages). CPU time, not wall time,
    so that other jobs on the machine move the figures less."""
    out = {}
    for k in ("jpeg", "png", "shards"):
        us = {} if k == "shards" else {s: 1e6 / res["stages"][k][s]["images_per_cpu_s"]
                                         for s in ("read", "decode", "crop", "to_tensor")}
        if k == "shards":
            us["item (mmap copy)"] = 1e6 / res["item"][k]["images_per_cpu_s"]
        us["collate"] = 1e6 / res["collate"]["images_per_cpu_s"]
        w0 = [r for r in res["loader"][k] if r["workers"] == 0]
        total = max(1e6 / w0[0]["images_per_worker_cpu_s"] if w0 else 0.0, sum(us.values()))
        us["other"] = total - sum(us.values())
        out[k] = {s: {"cpu_us_per_image": v, "share": v / total} for s, v in us.items()}
    return out


def workers_needed(res: dict, target: float) -> dict:
    """Loader workers for ``target`` images/s per path, from the 1-worker loader: per worker CPU-second (a
    dedicated core) and per wall second here (whatever share of a core the worker got)."""
    out = {}
    for k, rows in res["loader"].items():
        one = [r for r in rows if r["workers"] == 1] or rows
        cpu, wall = one[0]["images_per_worker_cpu_s"], one[0]["images_per_s"]
        out[k] = {"per_worker_cpu_images_per_s": cpu, "per_worker_wall_images_per_s": wall,
                  "workers": math.ceil(target / cpu), "workers_at_wall_rate": math.ceil(target / wall)}
    return out


def _cell(r: dict | None, cpu_key: str = "images_per_cpu_s") -> str:
    return f"{r['images_per_s']:>8.0f} ({r[cpu_key]:>6.0f})" if r else f"{'-':>17}"


def report(config: dict, res: dict) -> None:
    """The table (images/s of wall time, and in brackets per CPU-second), the shares and the estimates."""
    a = SimpleNamespace(**config)
    print(f"\nloader: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, Pillow {res['pillow']}, "
          f"{a.img_size} px crops, batch {a.batch_size}")
    for k, d in res["data"].items():
        print(f"  {k}: {d['images']} images, mean {d['mean_kb']:.1f} KB, generated in {d['seconds']:.1f} s")
    print(f"\n{'images/s: wall (per CPU-second)':<30}{'JPEG':>17}{'PNG':>17}{'shards':>17}")
    st, it = res["stages"], res["item"]
    rows = [("read file (page cache)", st["jpeg"]["read"], st["png"]["read"], None),
            ("decode PIL open+convert", st["jpeg"]["decode"], st["png"]["decode"], None),
            ("decode torchvision (CPU)", st["jpeg"]["decode_torchvision"], None, None),
            ("ADM crop (center_crop_arr)", st["jpeg"]["crop"], st["png"]["crop"], None),
            ("to uint8 tensor", st["jpeg"]["to_tensor"], st["png"]["to_tensor"], None),
            ("dataset item", it["jpeg"], it["png"], it["shards"]),
            ("collate (per image)", None, None, res["collate"])]
    for name, *cols in rows:
        print(f"{name:<30}" + "".join(_cell(c) for c in cols))
    for i, w in enumerate(a.workers):
        r = [res["loader"][k][i] for k in ("jpeg", "png", "shards")]
        print(f"{f'DataLoader, {w} worker(s)':<30}" + "".join(_cell(x, "images_per_worker_cpu_s") for x in r)
              + "   first batch " + " / ".join(f"{x['first_batch_s']:.2f}" for x in r) + " s")
    print(f"{'prepare-data, 1 process':<30}{_cell(res['prepare'])}")
    shares_cpu = [v["cpu_share"] for d in (st["jpeg"], st["png"], it) for v in d.values()]
    print(f"process CPU / wall in the one-process measurements: {min(shares_cpu):.2f}-{max(shares_cpu):.2f} "
          "(below 1: other jobs had the core); DataLoader brackets: images per worker CPU-second")
    for k, sh in res["shares"].items():
        print(f"share of the one-process loader's CPU time, {k}: " + ", ".join(
            f"{s} {v['cpu_us_per_image']:.0f} us ({100 * v['share']:.0f}%)" for s, v in sh.items()))
    print(f"\nworkers for {a.target:.0f} img/s (dedicated cores; at this run's wall rate): " + ", ".join(
        f"{k} {v['workers']} ({v['workers_at_wall_rate']})" for k, v in res["workers_needed"].items()))
    h = res["h2d"]
    print(f"uint8 traffic at {a.target:.0f} img/s: {h['gb_per_s']:.2f} GB/s (host memcpy here "
          f"{res['host_copy']['gb_per_s']:.1f} GB/s: {100 * h['memcpy_core_share']:.1f}% of one core; "
          f"~{100 * h['gb_per_s'] / 25:.1f}% of a PCIe 4 x16 link's ~25 GB/s pinned); JPEG file reads "
          f"{h['jpeg_read_gb_per_s']:.2f} GB/s")


def run(a) -> tuple[dict, dict]:
    import PIL
    res = {"pillow": PIL.__version__, "target_images_per_s": a.target}
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        res.update(measure(a, Path(tmp)))
    res["shares"], res["workers_needed"] = shares(res), workers_needed(res, a.target)
    gbs = a.target * 3 * a.img_size ** 2 / 1e9
    res["h2d"] = {"gb_per_s": gbs, "memcpy_core_share": gbs / res["host_copy"]["gb_per_s"],
                  "jpeg_read_gb_per_s": a.target * res["data"]["jpeg"]["mean_kb"] / 1e6}
    config = {"images": a.images, "png_images": a.png_images, "img_size": a.img_size, "batch_size": a.batch_size,
              "workers": a.workers, "min_s": a.min_s, "target": a.target, "device": "cpu"}
    return config, res
