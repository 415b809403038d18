"""Image folders, the one way every part of manifold_lab reads them: the ADM centre crop, uint8 tensors,
the device-side [-1, 1] map and back (:func:`to_uint8`).

Layout: ``root/<class name>/<image>``; classes are the sorted sub-folder names (index = position).
Images are decoded and centre-cropped in the loader workers and stay uint8 (B, 3, H, W) until they reach
the device, where :func:`to_model_range` maps them to [-1, 1] and :func:`random_flip` flips half of them
horizontally with the training generator (so the flip is part of the resumable random state).

Errors are clear: a missing folder, a folder with no class sub-folders or no images, and an unreadable
image (with ``bad_images="error"``, the default) each raise with the path; with ``bad_images="skip"`` an
unreadable image is logged with its path and dropped from its batch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from manifold_lab.checks import ConfigError, check_choice

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class BadImageError(RuntimeError):
    """An image file could not be read or decoded."""


def center_crop_arr(pil_image: Image.Image, img_size: int) -> Image.Image:
    """ADM centre crop: halve with BOX while the short side >= 2 * size, BICUBIC-resize the short side
    to ``img_size``, then crop the centre ``img_size`` square."""
    while min(*pil_image.size) >= 2 * img_size:
        pil_image = pil_image.resize(tuple(s // 2 for s in pil_image.size), resample=Image.BOX)
    scale = img_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(s * scale) for s in pil_image.size), resample=Image.BICUBIC)
    arr = np.asarray(pil_image)
    top = (arr.shape[0] - img_size) // 2
    left = (arr.shape[1] - img_size) // 2
    return Image.fromarray(arr[top:top + img_size, left:left + img_size])


def _walk_images(folder: Path) -> list[str]:
    """Every image file under ``folder`` (recursive, following links), sorted by path. A sub-folder that
    cannot be read is a one-line PermissionError naming it (not a silently smaller data set)."""
    def refuse(e: OSError):
        raise PermissionError(f"cannot read folder {e.filename}: {e.strerror}") from None

    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder, onerror=refuse, followlinks=True)
                  for f in files if f.lower().endswith(IMG_EXTENSIONS))


def _check_folder(root) -> Path:
    root = Path(root)
    if not str(root) or str(root) == ".":
        raise ConfigError("no data folder given (set data_path / --data-path to an image folder)")
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist (expected root/<class>/<image> files)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PermissionError(f"cannot read data folder {root}: permission denied")
    return root


def list_images(root: str | os.PathLike) -> list[str]:
    """Every image under ``root`` (an ImageFolder or a flat folder), sorted. Raises if there are none."""
    files = _walk_images(_check_folder(root))
    if not files:
        raise FileNotFoundError(f"no images under {root} (extensions: {', '.join(sorted(set(IMG_EXTENSIONS)))})")
    return files


def scan_image_folder(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(path, class index)]) of an ImageFolder, sorted. Raises on a missing or empty folder.

    The one folder scanner: the trainer, the image studies, ``prepare-ref`` and FID all read folders
    through it (:func:`list_images` is the same walk without labels).
    """
    root = _check_folder(root)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"data folder {root} has no class sub-folders (expected root/<class>/<image>)")
    samples = [(path, i) for i, c in enumerate(classes) for path in _walk_images(root / c)]
    if not samples:
        raise FileNotFoundError(f"data folder {root} has {len(classes)} class folder(s) but no images "
                                f"(extensions: {', '.join(sorted(set(IMG_EXTENSIONS)))})")
    return classes, samples


def load_image(path: str, img_size: int) -> torch.Tensor:
    """Read one image as RGB, ADM-centre-crop it, return uint8 (3, size, size). Raises BadImageError."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - PIL raises many types for truncated or non-image files
        raise BadImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    arr = np.asarray(center_crop_arr(im, img_size))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageFolderDataset(torch.utils.data.Dataset):
    """Items are (uint8 image (3, S, S), class index). Randomness (the flip) is left to the device side.

    bad_images: "error" raises BadImageError naming the path; "skip" logs it and returns None for the
    item, which :func:`collate_skip_none` drops from its batch.
    """

    def __init__(self, root: str | os.PathLike, img_size: int, *, bad_images: str = "error"):
        check_choice("bad_images", bad_images, ("error", "skip"))
        self.root, self.img_size, self.bad_images = str(root), int(img_size), bad_images
        self.classes, self.samples = scan_image_folder(root)
        if bad_images == "skip":
            self._check_something_decodes()

    def _check_something_decodes(self) -> None:
        """With bad_images "skip": decode until the first readable image; none at all is a one-line error."""
        for path, _ in self.samples:
            try:
                load_image(path, self.img_size)
                return
            except BadImageError:
                continue
        raise BadImageError(f"none of the {len(self.samples)} images under {self.root} can be read "
                            f"(first: {self.samples[0][0]})")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            return load_image(path, self.img_size), label
        except BadImageError as e:
            if self.bad_images == "skip":
                log.warning("skipping unreadable image %s", path)
                print(f"warning: skipping unreadable image {path}", flush=True)
                return None
            raise BadImageError(f"{e} (pass --bad-images skip to log and skip unreadable images)") from None


def collate_skip_none(batch):
    """Default collation of (image, label) items, dropping the None of skipped images."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0, dtype=torch.long)
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.long)


class ResumableDistributedSampler(torch.utils.data.DistributedSampler):
    """DistributedSampler (per-epoch shuffle, drop_last) that can start part-way into an epoch.

    ``set_epoch(epoch, start=k)`` skips this rank's first k indices of that epoch's permutation, so a
    resumed run reads exactly the samples an uninterrupted run would have read.
    """

    def __init__(self, dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=True)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        self.start = int(start)

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def to_model_range(u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (on whatever device u8 is)."""
    return u8.float().div_(127.5).sub_(1.0)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image of (B, C, H, W) horizontally with probability 1/2, drawing from ``generator``."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


LAYOUTS = ("nchw", "nhwc")


def to_uint8(x: torch.Tensor, *, layout: str) -> torch.Tensor:
    """Model-range images (B, C, H, W) in [-1, 1] -> uint8 [0, 255] on the CPU, rounded and clipped, laid
    out as ``layout``: "nchw" (as given) or "nhwc" (for PIL / PNG files and ADM-style npz arrays)."""
    check_choice("layout", layout, LAYOUTS)
    u8 = ((x.detach().float() + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
    return (u8.permute(0, 2, 3, 1) if layout == "nhwc" else u8).cpu()
