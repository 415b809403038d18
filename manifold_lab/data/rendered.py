"""Rendered image families whose intrinsic dimension is known by construction (checks of the estimators).

:func:`render_blobs` draws n images of one smooth anisotropic Gaussian blob on a flat background, each
image a smooth injective function of k continuous parameters drawn uniformly, so the family is a k-dim
manifold in R^(3 size^2)::

    k = 2: centre (cx, cy)
    k = 4: centre, one radius (sx = sy), blob brightness (grey)
    k = 8: centre, two radii (sx, sy), blob colour (r, g, b), background grey level

Centres are U(0.3, 0.7) of the side, radii U(0.08, 0.16) of the side, colours U(0.4, 1), background
U(0, 0.3). Images are uint8 (n, 3, size, size) (quantised like any image read from disk).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from manifold_lab.checks import ConfigError, check_positive

BLOB_DIMS = (2, 4, 8)


def blob_parameters(n: int, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The k free parameters of n blobs (the others fixed): cx, cy, sx, sy, r, g, b, bg, each (n,)."""
    if k not in BLOB_DIMS:
        raise ConfigError(f"k must be one of {', '.join(map(str, BLOB_DIMS))} (free blob parameters), got {k!r}")
    check_positive("n", n, integer=True)
    rng = np.random.default_rng(seed)

    def u(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, n)

    p = {"cx": u(0.3, 0.7), "cy": u(0.3, 0.7)}
    full = np.full(n, 1.0)
    if k == 2:
        return p | {"sx": 0.12 * full, "sy": 0.12 * full, "r": 0.8 * full, "g": 0.8 * full, "b": 0.8 * full,
                    "bg": 0.1 * full}
    if k == 4:
        s, c = u(0.08, 0.16), u(0.4, 1.0)
        return p | {"sx": s, "sy": s, "r": c, "g": c, "b": c, "bg": 0.1 * full}
    return p | {"sx": u(0.08, 0.16), "sy": u(0.08, 0.16), "r": u(0.4, 1.0), "g": u(0.4, 1.0), "b": u(0.4, 1.0),
                "bg": u(0.0, 0.3)}


def render_blobs(n: int, k: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """n images of a Gaussian blob with k free parameters (see the module docstring): uint8 (n, 3, size, size)."""
    check_positive("size", size, integer=True)
    p = blob_parameters(n, k, seed)
    grid = (np.arange(size) + 0.5) / size
    gx = np.exp(-0.5 * ((grid[None, :] - p["cx"][:, None]) / p["sx"][:, None]) ** 2)  # (n, W)
    gy = np.exp(-0.5 * ((grid[None, :] - p["cy"][:, None]) / p["sy"][:, None]) ** 2)  # (n, H)
    blob = gy[:, :, None] * gx[:, None, :]                                            # (n, H, W)
    colour = np.stack([p["r"], p["g"], p["b"]], 1)                                     # (n, 3)
    bg = p["bg"][:, None, None, None]
    img = bg + (colour[:, :, None, None] - bg) * blob[:, None]
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def write_image_folder(images: np.ndarray, folder: str | Path) -> Path:
    """Write uint8 (n, 3, H, W) images as PNG files folder/img_00000.png, ... (flat layout); returns folder."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(folder / f"img_{i:05d}.png")
    return folder
