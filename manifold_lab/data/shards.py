"""Prepared datasets: an ImageFolder's ADM-cropped uint8 images written once into memory-mappable shards,
which the trainer then reads instead of decoding and cropping every image in every epoch.

    python -m manifold_lab prepare-data --data-path /data/imagenet/train --img-size 256 --out /data/in256_shards
    python -m manifold_lab train --config configs/jit_b16_in256.yaml --data-path /data/in256_shards ...

Item ``i`` of :class:`ShardDataset` equals item ``i`` of ``ImageFolderDataset(src, S)`` bit for bit (the
same scanner, the same :func:`load_image`, the same order), so a run gives the same losses on either path
and resumes bit-exactly on both. With ``bad_images="skip"`` unreadable images are dropped once, here, and
named in the manifest (the folder path drops them from their batch instead, every epoch).

A shard set (``out/``)::

    shard_00000.npy   uint8 (n, 3, S, S), n = shard_size (a shard may hold fewer if images were skipped);
                      np.load(path, mmap_mode="r") maps it without reading it
    shard_00000.json  the shard's marker, written after its .npy: count, labels, skipped paths
    prepare.json      the plan (source, img_size, shard_size, a fingerprint of the scan), written first
    labels.npy        int64 (N,) class index of every image, in scan order
    manifest.json     written last, so the set is complete iff it exists: format, version, crop "adm",
                      img_size, layout, source, classes, class_counts, num_images, shards, skipped, bytes

Every file is written atomically (a temporary name, then a rename): a killed prepare-data leaves finished
shards (marker present) and the temporary files of the shards it was writing, which a rerun of the same
command deletes before it writes the missing shards. A rerun with another source, size or shard size stops
with an error. Run one prepare-data per output folder at a time.

Size on disk: 3·S·S bytes per image (uncompressed). ImageNet-1k train, 1,281,167 images: 196,608 B/image,
251.9 GB (234.6 GiB) at 256 px; 786,432 B/image, 1,007.6 GB (938.4 GiB) at 512 px; 12,288 B/image,
15.7 GB at 64 px; about 1.8x the ~138 GB of the JPEG originals at 256 px.

Speed (`python -m benchmarks loader`): an item costs one copy of 3·S·S bytes out of the page cache, ~20,000
items per CPU-second against ~145 for JPEG decode + ADM crop, so one or two loader workers feed a GPU. At
1,700 img/s (JiT-B/16 on one H100) a 256 px set is read at 0.33 GB/s per GPU (2.7 GB/s for 8): keep it on
local NVMe, since it is larger than a machine's page cache. prepare-data itself runs at the JPEG rate
(~125 images per CPU-second here): ~1.28 M / (16 x 125) s ~ 11 min on 16 cores, if the disk keeps up.
"""
from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import torch

from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.data.imagefolder import BadImageError, ImageFolderDataset, load_image, scan_image_folder
from manifold_lab.io import atomic_write, read_json, write_json

FORMAT, VERSION, CROP, LAYOUT = "manifold_lab-shards", 1, "adm", "NCHW uint8"
MANIFEST, PLAN, LABELS = "manifest.json", "prepare.json", "labels.npy"
DEFAULT_SHARD_SIZE = 1024            # 201 MB per shard at 256 px, 805 MB at 512 px
_PLAN_KEYS = ("format", "version", "crop", "img_size", "shard_size", "fingerprint")


def bytes_per_image(img_size: int) -> int:
    """Bytes of one prepared image: uint8 (3, S, S)."""
    return 3 * int(img_size) ** 2


def is_shard_set(path) -> bool:
    """True if ``path`` is a finished shard set or an unfinished prepare-data output."""
    p = Path(path)
    return str(path) not in ("", ".") and ((p / MANIFEST).is_file() or (p / PLAN).is_file())


def open_dataset(path, img_size: int, *, bad_images: str = "error"):
    """The trainer's dataset: a :class:`ShardDataset` if ``path`` holds a shard set, else an
    ``ImageFolderDataset`` (``bad_images`` applies to the folder; a shard set applied it when prepared)."""
    if is_shard_set(path):
        return ShardDataset(path, img_size)
    return ImageFolderDataset(path, img_size, bad_images=bad_images)


def _shard(i: int) -> str:
    return f"shard_{i:05d}"


# ---- prepare-data ------------------------------------------------------------------------------------
def _make_plan(src, img_size: int, shard_size: int) -> tuple[dict, list[tuple[str, int]]]:
    """(plan dict, [(path, label)]) of a source ImageFolder; the fingerprint covers relative paths + labels."""
    classes, samples = scan_image_folder(src)
    root = Path(src).resolve()
    h = hashlib.sha256()
    for path, label in samples:
        h.update(f"{os.path.relpath(Path(path).resolve(), root)}\t{label}\n".encode())
    plan = {"format": FORMAT, "version": VERSION, "crop": CROP, "img_size": int(img_size),
            "shard_size": int(shard_size), "source": str(root), "classes": classes,
            "num_source_images": len(samples), "fingerprint": h.hexdigest()}
    return plan, samples


def _start(out: Path, plan: dict) -> None:
    """Write the plan, or check that ``out`` holds this plan's (partial) output; delete stale temporaries."""
    if out.resolve().is_relative_to(plan["source"]):
        raise ConfigError(f"--out {out} lies inside the source folder {plan['source']}; write it elsewhere")
    if out.exists() and not (out / PLAN).is_file() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no {PLAN}; give prepare-data an empty or new --out")
    if (out / PLAN).is_file():
        old = read_json(out / PLAN)
        diff = [k for k in _PLAN_KEYS if old.get(k) != plan[k]]
        if diff:
            raise ConfigError(f"{out} holds shards of another plan (differs in {', '.join(diff)}; source "
                              f"{old.get('source')}); choose another --out or delete that folder")
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(".*.tmp"):               # atomic_write's temporaries of a killed run
        tmp.unlink()
    write_json(out / PLAN, plan)


def _shard_done(out: Path, i: int, start: int, n_planned: int, img_size: int) -> dict | None:
    """The marker of shard ``i`` if the shard is finished and matches the plan, else None."""
    marker, data = out / f"{_shard(i)}.json", out / f"{_shard(i)}.npy"
    if not (marker.is_file() and data.is_file()):
        return None
    m = read_json(marker)
    if m.get("start") != start or m.get("planned") != n_planned:
        return None
    if m["count"] and np.load(data, mmap_mode="r").shape != (m["count"], 3, img_size, img_size):
        return None
    return m


def _fill(tmp: str, items, img_size: int, bad_images: str) -> tuple[list[int], list[str]]:
    """Write the ADM crops of ``items`` [(path, label)] into the .npy file ``tmp``; (labels, skipped)."""
    shape = (len(items), 3, img_size, img_size)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    labels, skipped = [], []
    for path, label in items:
        try:
            arr[len(labels)] = load_image(path, img_size).numpy()
        except BadImageError as e:
            if bad_images != "skip":
                raise BadImageError(f"{e} (pass --bad-images skip to leave unreadable images out)") from None
            skipped.append(path)
            continue
        labels.append(label)
    arr.flush()
    if skipped:                                  # rare: rewrite the file with the good rows only
        good = np.array(arr[:len(labels)])
        del arr
        with open(tmp, "wb") as f:
            np.save(f, good)
    return labels, skipped


def _write_shard(job) -> dict:
    """One shard (a top-level function, so a worker pool can run it): the .npy, then its marker."""
    out, i, start, items, img_size, bad_images = job
    got = {}
    atomic_write(Path(out) / f"{_shard(i)}.npy",
                 lambda tmp: got.update(zip(("labels", "skipped"), _fill(tmp, items, img_size, bad_images))))
    marker = {"shard": i, "start": start, "planned": len(items), "count": len(got["labels"]),
              "labels": got["labels"], "skipped": got["skipped"]}
    write_json(Path(out) / f"{_shard(i)}.json", marker)
    return marker


def _run_jobs(jobs: list, workers: int, bar) -> list[dict]:
    """Write every shard of ``jobs``, in a pool of ``workers`` processes (0: in this process)."""
    if workers <= 0 or len(jobs) <= 1:
        results = []
        for job in jobs:
            results.append(_write_shard(job))
            bar.update(len(job[3]))
        return results
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(min(workers, len(jobs))) as pool:
        results = []
        for marker in pool.imap_unordered(_write_shard, jobs):
            results.append(marker)
            bar.update(marker["planned"])
        return results


def prepare_data(src_folder, out_folder, img_size: int, *, shard_size: int = DEFAULT_SHARD_SIZE,
                 workers: int = 0, bad_images: str = "error", progress: bool = True) -> dict:
    """Write ``src_folder``'s ADM crops at ``img_size`` into a shard set in ``out_folder``; returns the manifest.

    Resumable: a rerun of a killed call keeps the finished shards and writes the rest; a finished set is
    left as it is. ``workers`` processes write whole shards (0: this process). Raises BadImageError on an
    unreadable image unless ``bad_images="skip"`` (then it is left out and listed in the manifest).
    """
    check_positive("img_size", img_size, integer=True)
    check_positive("shard_size", shard_size, integer=True)
    check_choice("bad_images", bad_images, ("error", "skip"))
    out = Path(out_folder)
    plan, samples = _make_plan(src_folder, img_size, shard_size)
    _start(out, plan)
    if (out / MANIFEST).is_file():
        return read_json(out / MANIFEST)
    starts = range(0, len(samples), shard_size)
    markers, jobs = {}, []
    for i, start in enumerate(starts):
        items = samples[start:start + shard_size]
        done = _shard_done(out, i, start, len(items), img_size)
        if done is not None:
            markers[i] = done
        else:
            jobs.append((str(out), i, start, items, int(img_size), bad_images))
    from tqdm.auto import tqdm
    with tqdm(total=len(samples), initial=sum(m["planned"] for m in markers.values()), unit="img",
              desc=f"prepare-data {img_size}px", disable=not progress, dynamic_ncols=True) as bar:
        for m in _run_jobs(jobs, workers, bar):
            markers[m["shard"]] = m
    return _finish(out, plan, [markers[i] for i in range(len(starts))], bad_images)


def _finish(out: Path, plan: dict, markers: list[dict], bad_images: str) -> dict:
    """labels.npy, then manifest.json (last: its presence marks the set complete)."""
    labels = np.array([y for m in markers for y in m["labels"]], dtype=np.int64)
    if labels.size == 0:
        raise BadImageError(f"no readable image in {plan['source']}")

    def save_labels(tmp):
        with open(tmp, "wb") as f:
            np.save(f, labels)
    atomic_write(out / LABELS, save_labels)
    counts = np.bincount(labels, minlength=len(plan["classes"]))
    manifest = {**plan, "layout": LAYOUT, "num_images": int(labels.size), "bad_images": bad_images,
                "class_counts": {c: int(n) for c, n in zip(plan["classes"], counts)},
                "shards": [{"file": f"{_shard(m['shard'])}.npy", "count": m["count"]} for m in markers],
                "skipped": [p for m in markers for p in m["skipped"]],
                "bytes_per_image": bytes_per_image(plan["img_size"]),
                "bytes": int(labels.size) * bytes_per_image(plan["img_size"])}
    write_json(out / MANIFEST, manifest)
    return manifest


# ---- reading -----------------------------------------------------------------------------------------
def read_manifest(root) -> dict:
    """The manifest of a finished shard set; a one-line ConfigError if ``root`` is none or unfinished."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not (root / MANIFEST).is_file():
        if (root / PLAN).is_file():
            raise ConfigError(f"{root}: prepare-data has not finished (no {MANIFEST}); rerun the same "
                              "prepare-data command to complete it")
        raise ConfigError(f"{root} is no shard set (no {MANIFEST}); write one with `python -m manifold_lab "
                          f"prepare-data --data-path SRC --img-size S --out {root}`")
    m = read_json(root / MANIFEST)
    if m.get("format") != FORMAT or m.get("version") != VERSION or m.get("crop") != CROP:
        raise ConfigError(f"{root}/{MANIFEST} is not a {FORMAT} v{VERSION} '{CROP}' manifest "
                          f"(format {m.get('format')!r}, version {m.get('version')!r}, crop {m.get('crop')!r})")
    return m


class ShardDataset(torch.utils.data.Dataset):
    """Items are (uint8 image (3, S, S), class index), as ImageFolderDataset's, read from memory-mapped
    shards (each worker maps a shard the first time it needs it; pickling drops the maps)."""

    def __init__(self, root, img_size: int):
        self.root, self.img_size = Path(root), int(img_size)
        m = read_manifest(root)
        if m["img_size"] != self.img_size:
            raise ConfigError(f"{root} holds {m['img_size']} px images but img_size is {self.img_size}; "
                              f"write a {self.img_size} px set with prepare-data --img-size {self.img_size}")
        self.manifest, self.classes = m, list(m["classes"])
        self.labels = np.load(self.root / LABELS)                              # int64 (N,)
        self.files = [s["file"] for s in m["shards"]]
        self.offsets = np.cumsum([0] + [s["count"] for s in m["shards"]])      # (n_shards + 1,)
        if len(self.labels) != self.offsets[-1] or self.offsets[-1] != m["num_images"]:
            raise ConfigError(f"{root}: {LABELS} holds {len(self.labels)} labels, the shards "
                              f"{self.offsets[-1]} images; rerun prepare-data into a new folder")
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _map(self, k: int) -> np.ndarray:
        """Shard ``k`` as a read-only memory map, uint8 (n, 3, S, S)."""
        arr = self._maps.get(k)
        if arr is None:
            arr = self._maps[k] = np.load(self.root / self.files[k], mmap_mode="r")
        return arr

    def __getitem__(self, i: int):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i = int(i) % n
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        img = np.array(self._map(k)[i - self.offsets[k]])                       # copy out of the map
        return torch.from_numpy(img), int(self.labels[i])

    def __getstate__(self):
        return {**self.__dict__, "_maps": {}}


# ---- command line ------------------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser("prepare-data", help="write an ImageFolder's ADM crops into memory-mappable shards",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
    p.add_argument("--data-path", required=True, help="source ImageFolder (root/<class>/<image>)")
    p.add_argument("--img-size", type=int, required=True, help="ADM centre-crop size (256 or 512 in the paper)")
    p.add_argument("--out", required=True, help="output folder of the shard set (resumed if it holds a partial one)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="images per shard")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="processes that write shards (0: this process)")
    p.add_argument("--bad-images", default="error", choices=("error", "skip"),
                   help="error: stop with the path; skip: leave the image out and list it in the manifest")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from manifold_lab.io import check_writable_dir

    for name in ("img_size", "shard_size"):
        check_positive("--" + name.replace("_", "-"), getattr(args, name), integer=True)
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0: this process), got {args.workers}")
    check_writable_dir(args.out, "--out")
    m = prepare_data(args.data_path, args.out, args.img_size, shard_size=args.shard_size, workers=args.workers,
                     bad_images=args.bad_images, progress=not args.no_progress)
    print(f"{args.out}: {m['num_images']} images, {len(m['classes'])} classes, {len(m['shards'])} shards, "
          f"{m['bytes'] / 1e9:.3g} GB at {m['img_size']} px; skipped {len(m['skipped'])}")
    return 0
