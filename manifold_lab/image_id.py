"""Intrinsic dimension of real images and of their patches (the tokens a JiT sees).

``measure_images(ImageIdConfig(...))`` reads the images, cuts the points and runs one estimator:

1. images: ``data = "skimage"`` gives the shipped photo crops exactly as the image studies train on them
   (:func:`manifold_lab.data.real_images.make_image_set`, train split of ``n_images`` crops, cut at
   ``max(32, size)`` px and box-downsampled to ``size``); any other value is an image folder, read with the
   project's one scanner and ADM centre crop to ``size`` (:func:`~manifold_lab.data.real_images.load_image_folder`);
2. points: ``patch_size = 0`` takes whole images (3 size^2 dims); ``patch_size = p`` cuts every image on the
   p x p patch grid the JiT tokenises it with (non-overlapping, raster order) into p*p*3-d vectors laid out
   (p, p, C) as :meth:`manifold_lab.nets.jit.JiT.unpatchify` reads a token, pixel values mapped to [-1, 1];
3. ``n`` of those points drawn without replacement (seeded); exact repeats are counted once by the
   estimators (flat patches of a uniform sky repeat);
4. the estimate (TwoNN, or the Levina-Bickel MLE with ``mle_k`` = 20 neighbours and the MacKay-Ghahramani
   average, as Pope et al. 2021 report it; :mod:`manifold_lab.metrics.intrinsic_dim`) on the n points, and
   its spread: the same estimator on ``halves`` random halves of the n points (n // 2 each), reported as
   their mean, standard deviation, minimum and maximum. Halves have half the points, so their mean sits a
   little below the full estimate when the dimension is high (the estimators' negative bias at small n).

Record (the ``id --images`` command's JSON and the study point's metrics.json): estimate, half_mean,
half_std, half_min, half_max, n (points used), n_images, token_dim, size, patch_size, estimator.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from manifold_lab import io
from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.metrics import intrinsic_dim as idim
from manifold_lab.runs.writer import finish_run

ID_ESTIMATORS = ("twonn", "mle")


@dataclass
class ImageIdConfig:
    data: str = "skimage"       # skimage (the shipped photo crops, as the image studies use them) or an image folder
    size: int = 32              # image side in px (ADM centre crop of a folder; box-downsampled shipped crops)
    patch_size: int = 0         # 0: whole images; p: the p x p x 3 patches of the JiT's patch grid
    n: int = 5000               # points measured (at most all images or all patches)
    n_images: int = 20000       # shipped crops read (the image studies' train split); a folder: all its images
    estimator: str = "twonn"    # twonn or mle
    mle_k: int = 20             # neighbours of the MLE (Pope et al. 2021: 20)
    halves: int = 10            # random halves of the n points for the spread (0: none)
    seed: int = 0               # seeds the draw of the points and of the halves

    def __post_init__(self):
        check_choice("intrinsic-dimension estimator", self.estimator, ID_ESTIMATORS)
        for name in ("size", "n", "n_images", "mle_k"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("patch_size", "halves", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.patch_size and self.size % self.patch_size:
            raise ConfigError(f"patch_size {self.patch_size} does not divide the image size {self.size}")

    @property
    def token_dim(self) -> int:
        side = self.patch_size or self.size
        return 3 * side * side


def load_images(cfg: ImageIdConfig) -> np.ndarray:
    """The images of cfg as uint8 (N, 3, size, size) (see the module docstring, step 1)."""
    from manifold_lab.data.real_images import load_image_folder, make_image_set

    if cfg.data == "skimage":
        return make_image_set("skimage", cfg.size, n_train=cfg.n_images, base_size=max(32, cfg.size)).train
    if not Path(cfg.data).is_dir():
        raise FileNotFoundError(f"image folder {cfg.data} does not exist (give a folder of images or 'skimage')")
    return load_image_folder(cfg.data, cfg.size)


def patch_points(images: np.ndarray, patch_size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 points in [-1, 1]: (N, C H W) whole images (patch_size 0, laid out
    (C, H, W)), or (N * (H/p) * (W/p), p*p*C) patches on the p-grid, each laid out (p, p, C)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0)
    n, c, h, w = x.shape
    if not patch_size:
        return x.reshape(n, -1)
    p = patch_size
    if h % p or w % p:
        raise ConfigError(f"patch_size {p} does not divide the image size {h}x{w}")
    x = x.reshape(n, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(-1, p * p * c)


def _estimate(X: torch.Tensor, cfg: ImageIdConfig) -> float:
    kw = {"k": cfg.mle_k} if cfg.estimator == "mle" else {}
    return idim.estimate(X, cfg.estimator, **kw)


def estimate_with_halves(X: torch.Tensor, cfg: ImageIdConfig) -> dict[str, float]:
    """The estimate on X (n, D) and its spread over cfg.halves random halves (module docstring, step 4)."""
    out = {"estimate": _estimate(X, cfg)}
    g = torch.Generator().manual_seed(1_000 + cfg.seed)
    halves = [_estimate(X[torch.randperm(len(X), generator=g)[: len(X) // 2]], cfg) for _ in range(cfg.halves)]
    if halves:
        h = np.asarray(halves)
        out |= {"half_mean": float(h.mean()), "half_std": float(h.std(ddof=1)) if len(h) > 1 else 0.0,
                "half_min": float(h.min()), "half_max": float(h.max())}
    return out


def measure_images(cfg: ImageIdConfig) -> dict:
    """The record of the module docstring for cfg."""
    images = load_images(cfg)
    points = patch_points(images, cfg.patch_size)
    g = torch.Generator().manual_seed(cfg.seed)
    X = points[torch.randperm(len(points), generator=g)[: cfg.n]]
    if len(X) < 2 * (cfg.mle_k + 1):
        raise ConfigError(f"only {len(X)} points: too few for the estimators (use more images or a smaller patch)")
    return {"data": cfg.data, "size": cfg.size, "patch_size": cfg.patch_size, "token_dim": cfg.token_dim,
            "estimator": cfg.estimator, "mle_k": cfg.mle_k if cfg.estimator == "mle" else None,
            "n": len(X), "n_images": len(images), "seed": cfg.seed} | estimate_with_halves(X, cfg)


def describe(rec: dict) -> str:
    """One line: what was measured and the estimate with its spread over the halves."""
    what = f"{rec['patch_size']}x{rec['patch_size']}x3 patches" if rec["patch_size"] else "whole images"
    spread = f" (halves {rec['half_min']:.2f}-{rec['half_max']:.2f})" if "half_min" in rec else ""
    return (f"{rec['estimator']} dimension of {what} ({rec['token_dim']}-d) of {rec['data']} at {rec['size']} px, "
            f"n={rec['n']} from {rec['n_images']} images: {rec['estimate']:.3f}{spread}")


def run_image_id_point(cfg: ImageIdConfig, out_dir: str | Path, *, progress: bool = False) -> dict[str, float]:
    """One study point through the one run-folder writer: config.json (``derived``: the token dimension and
    the points and images actually used), then metrics.json (the estimate and its spread over the halves;
    written last). ``progress`` is accepted for the registry's signature; the point is short."""
    rec = measure_images(cfg)
    derived = {"token_dim": rec["token_dim"], "n_points": rec["n"], "n_images_read": rec["n_images"]}
    metrics = {k: float(v) for k, v in rec.items() if k == "estimate" or k.startswith("half_")}
    return finish_run(out_dir, cfg, metrics, kind="image_id", derived=derived)


# ---- the `id --images` command ---------------------------------------------------------------------
_SHARED = ("n", "estimator", "mle_k", "seed")   # IdConfig flags that also apply to images


def add_image_flags(p) -> None:
    """The image flags of the ``id`` command (the toy flags --n, --estimator, --mle-k, --seed are shared)."""
    g = p.add_argument_group("images (id --images FOLDER: whole images or JiT patches)")
    g.add_argument("--images", default=None, metavar="FOLDER",
                   help="measure an image folder (ADM centre crop to --size) or 'skimage' (the shipped photo crops)")
    g.add_argument("--size", type=int, default=32, help="image side in px (default: 32)")
    g.add_argument("--patch-size", type=int, default=0, help="p: measure the p x p x 3 patches (default 0: whole images)")
    g.add_argument("--n-images", type=int, default=20000, help="shipped crops read (default: 20000)")
    g.add_argument("--halves", type=int, default=10, help="random halves for the spread (default: 10)")


def main_images(args, toy_overrides: dict) -> int:
    """``id --images``: measure, print one line, write --out FILE (JSON)."""
    stray = sorted(set(toy_overrides) - set(_SHARED))
    if stray:
        raise ConfigError(f"--images measures images; the toy flags {', '.join('--' + s.replace('_', '-') for s in stray)}"
                          f" do not apply (allowed with it: --n, --estimator, --mle-k, --seed)")
    cfg = ImageIdConfig(data=args.images, size=args.size, patch_size=args.patch_size, n_images=args.n_images,
                        halves=args.halves, **toy_overrides)
    rec = measure_images(cfg)
    print(describe(rec))
    if args.out:
        io.write_json(args.out, rec)
    return 0
