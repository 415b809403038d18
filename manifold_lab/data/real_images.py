"""Small real-image sets that need no network: photographs shipped inside scikit-image, or a user folder.

**The shipped set.** Six colour photographs that lie on disk inside the scikit-image wheel
(``skimage/data``), all free of copyright restrictions (see :data:`PHOTOS` for each one's licence note,
quoted from scikit-image's docstrings). From them we cut seeded random square crops: a window of side
``s`` (log-uniform between ``min_side`` and ``max_side`` source pixels) at a uniformly random position,
flipped left-right with probability 1/2, and resized to ``img_size`` x ``img_size`` with a box (area) filter.
The crops are made once per (n, img_size, seed, version) and cached as a compressed ``.npz`` under
``$MANIFOLD_LAB_CACHE/real_images`` (default ``~/.cache/manifold_lab/real_images``).

A *low-resolution* copy of the same set is made by :func:`downsample` (box filter), so a study can compare
one set of pictures at two resolutions, as the paper compares ImageNet at 256 and 64 pixels.

**A user folder.** :func:`load_image_folder` reads every image under a path (ImageFolder layout or flat)
with the trainer's scanner and its ADM centre crop (:mod:`manifold_lab.data.imagefolder`), at the study
resolution. The shipped crops keep their own box resize: the committed tables were made with it.

Arrays are uint8 (N, 3, H, W); ``manifold_lab.data.imagefolder.to_model_range`` maps them (as tensors)
to float32 in [-1, 1], the range the denoiser's unit-variance noise is mixed with.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from manifold_lab.checks import ConfigError, check_positive
from manifold_lab.data.imagefolder import list_images, load_image, to_model_range
from manifold_lab.io import cache_dir as io_cache_dir
from manifold_lab.io import cached_npz

# name -> (file inside skimage/data, licence note as scikit-image states it)
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut.png", "NASA; no known copyright restrictions, public domain"),
    "chelsea": ("chelsea.png", "CC0 by the photographer (Stefan van der Walt)"),
    "coffee": ("coffee.png", "CC0 by the photographer (Rachel Michetti)"),
    "rocket": ("rocket.jpg", "SpaceX; released into the public domain"),
    "hubble_deep_field": ("hubble_deep_field.jpg", "NASA; may be freely used, public domain"),
    "immunohistochemistry": ("ihc.png", "CMMI; no known copyright restrictions"),
}
CROP_VERSION = 1  # bump when the crop recipe changes, so old caches are not reused


def cache_dir() -> Path:
    """Where prepared sets live: $MANIFOLD_LAB_CACHE/real_images, default ~/.cache/manifold_lab/real_images."""
    return io_cache_dir("real_images")


def load_photos(names=None) -> dict[str, np.ndarray]:
    """The shipped photographs as uint8 (H, W, 3) arrays, read from scikit-image's data folder on disk."""
    from PIL import Image
    from skimage.data import data_dir

    out = {}
    for name in names or PHOTOS:
        if name not in PHOTOS:
            raise ConfigError(f"unknown photo {name!r}; allowed: {', '.join(PHOTOS)}")
        path = Path(data_dir) / PHOTOS[name][0]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the scikit-image install; reinstall scikit-image")
        with Image.open(path) as im:
            out[name] = np.asarray(im.convert("RGB"))
    return out


def _resize(img: np.ndarray, img_size: int) -> np.ndarray:
    """uint8 (h, w, 3) -> uint8 (img_size, img_size, 3) with a box (area-averaging) filter."""
    from PIL import Image
    return np.asarray(Image.fromarray(img).resize((img_size, img_size), Image.Resampling.BOX))


def make_crops(photos: dict[str, np.ndarray], n: int, img_size: int, seed: int, *, min_side: int = 48,
               max_side: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """n seeded random crops of the photographs, resized to img_size x img_size.

    Each crop picks a photograph uniformly, a side s log-uniform in [min_side, max_side] (capped by the
    photograph), a uniform position and a left-right flip with probability 1/2.
    Returns (images uint8 (n, 3, img_size, img_size), source index int64 (n,) into the order of ``photos``).
    """
    check_positive("n", n, integer=True)
    check_positive("img_size", img_size, integer=True)
    rng = np.random.default_rng(seed)
    arrays = list(photos.values())
    src = rng.integers(len(arrays), size=n)
    sides = np.exp(rng.uniform(np.log(min_side), np.log(max_side), size=n))
    out = np.empty((n, img_size, img_size, 3), np.uint8)
    for i in range(n):
        img = arrays[src[i]]
        h, w = img.shape[:2]
        s = int(min(sides[i], h, w))
        top, left = rng.integers(h - s + 1), rng.integers(w - s + 1)
        crop = img[top:top + s, left:left + s]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = _resize(np.ascontiguousarray(crop), img_size)
    return out.transpose(0, 3, 1, 2).copy(), src.astype(np.int64)


def shipped_crops(n: int = 20000, img_size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The cached shipped set: (images uint8 (n, 3, img_size, img_size), source index (n,)). Made on first call."""
    path = cache_dir() / f"skimage-photos-v{CROP_VERSION}-n{n}-px{img_size}-seed{seed}.npz"
    arrays = cached_npz(path, lambda: dict(zip(("images", "source"), make_crops(load_photos(), n, img_size, seed))))
    return arrays["images"], arrays["source"]


def load_image_folder(path, img_size: int, *, max_images: int | None = None) -> np.ndarray:
    """Every image under ``path`` (ImageFolder or flat, recursive, sorted), ADM-centre-cropped to img_size x img_size,
    as uint8 (N, 3, img_size, img_size): the same scanner and crop as the ImageNet trainer."""
    files = list_images(path)[:max_images]
    if not files:
        raise FileNotFoundError(f"no images under {path} (max_images={max_images})")
    return torch.stack([load_image(f, img_size) for f in files]).numpy()


def downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter downsampling of uint8 (N, C, H, W) by an integer factor (H, W divisible by it)."""
    n, c, h, w = images.shape
    if h % factor or w % factor:
        raise ConfigError(f"image img_size {h}x{w} is not divisible by the downsampling factor {factor}")
    x = images.reshape(n, c, h // factor, factor, w // factor, factor).astype(np.float32).mean((3, 5))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@dataclass
class ImageSet:
    """A train split and a disjoint reference split (for metrics), both uint8 (N, 3, H, W)."""

    train: np.ndarray
    ref: np.ndarray
    name: str

    @property
    def img_size(self) -> int:
        return int(self.train.shape[-1])

    def batch_fn(self, device=None):
        """A trainer ``batch_fn(batch_size, generator) -> (x in [-1, 1], None)``, drawing with replacement.

        The whole train split is moved to ``device`` once; indices are drawn on the generator's device.
        """
        data = to_model_range(torch.from_numpy(self.train).to(device))

        def fn(batch_size: int, generator: torch.Generator):
            idx = torch.randint(len(data), (batch_size,), generator=generator, device=generator.device)
            return data[idx], None
        return fn

    def fingerprint(self) -> str:
        """A short hash of the train split, to key caches built from it (e.g. the metric's feature net)."""
        return hashlib.sha1(np.ascontiguousarray(self.train).tobytes()).hexdigest()[:12]


MIN_FOLDER_IMAGES = 2    # one to train on, one for the reference split


def make_image_set(source: str, img_size: int, *, n_train: int = 20000, n_ref: int = 2000, base_size: int = 32,
                   seed: int = 0) -> ImageSet:
    """Build a train/reference split at ``img_size`` pixels.

    source "skimage": the shipped crops, cut at ``base_size`` px and box-downsampled to img_size (so every
    resolution shows the same pictures); the first n_train crops train, the next n_ref are the reference.
    Any other source is read as an image-folder path (shuffled with ``seed``; the last n_ref images, at
    most a fifth of the folder, are the reference).
    """
    if source == "skimage":
        if base_size % img_size:
            raise ConfigError(f"img_size {img_size} must divide the crop img_size base_size {base_size}")
        images, _ = shipped_crops(n_train + n_ref, base_size, seed)
        images = downsample(images, base_size // img_size) if img_size != base_size else images
        return ImageSet(images[:n_train], images[n_train:], name=f"skimage-photos-px{img_size}")
    images = load_image_folder(source, img_size)
    if len(images) < MIN_FOLDER_IMAGES:
        raise ConfigError(f"image folder {source} holds {len(images)} image(s); an image run needs at least "
                          f"{MIN_FOLDER_IMAGES} (a training and a reference split)")
    images = images[np.random.default_rng(seed).permutation(len(images))]
    k = min(n_ref, max(1, len(images) // 5))
    return ImageSet(images[:-k], images[-k:], name=f"folder:{Path(source).name}-px{img_size}")
