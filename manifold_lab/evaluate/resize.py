"""Resize generated images before measuring them: the paper's cross-resolution evaluation (Table 12), e.g.
JiT-G/32 samples at 512 px downsampled to 256 px and scored against the 256 px reference, or G/16 samples
upsampled to 512 px.

The filter is PIL's bicubic (``Image.Resampling.BICUBIC``, a = -0.5) applied to uint8 RGB. PIL widens the
kernel by the scale factor when downsampling, so a downsample is antialiased (a pixel checkerboard becomes
flat grey, not aliased stripes); an upsample is plain bicubic interpolation. Output is rounded and clipped to
uint8, as a PNG written at the new size would be. The paper does not name its filter; this is ours.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from manifold_lab.checks import check_positive

RESIZE_FILTER = "PIL bicubic, antialiased when downsampling"


def resize_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 through PIL bicubic (see the module docstring)."""
    check_positive("resize", size, integer=True)
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))


class ResizedImages(torch.utils.data.Dataset):
    """The generated images of a folder of PNGs or a samples npz (arr_0: (N, H, W, 3) uint8), each resized
    to (3, size, size) uint8: what torch-fidelity's feature extraction reads."""

    def __init__(self, source, size: int):
        check_positive("resize", size, integer=True)
        self.size, source = size, Path(source)
        if source.suffix == ".npz":
            with np.load(source) as z:
                self.arr, self.files = z["arr_0"], None
        else:
            self.arr, self.files = None, sorted(source.glob("*.png"))

    def __len__(self):
        return len(self.files) if self.files is not None else len(self.arr)

    def __getitem__(self, i):
        img = self.arr[i] if self.files is None else np.asarray(Image.open(self.files[i]).convert("RGB"))
        return torch.from_numpy(resize_uint8(img, self.size).copy()).permute(2, 0, 1).contiguous()
