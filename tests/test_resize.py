"""Cross-resolution evaluation (Table 12): the resize filter on known images, and `fid --resize`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from imagenet_helpers import make_image_folder
from PIL import Image

from manifold_lab.checks import ConfigError
from manifold_lab.cli import main
from manifold_lab.data.imagefolder import load_image
from manifold_lab.evaluate.resize import ResizedImages, resize_uint8


def test_constant_image_stays_constant_both_ways():
    img = np.full((16, 16, 3), 137, np.uint8)
    assert (resize_uint8(img, 8) == 137).all() and (resize_uint8(img, 32) == 137).all()
    assert resize_uint8(img, 16) is img


def test_downsampling_is_antialiased():
    """A one-pixel checkerboard halved: flat grey (antialiased), not the black or white of point sampling."""
    board = ((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)
    small = resize_uint8(np.repeat(board[..., None], 3, axis=2), 16)
    assert small.shape == (16, 16, 3)
    assert np.abs(small[2:-2, 2:-2].astype(int) - 128).max() <= 2


def test_upsampling_is_bicubic_and_keeps_a_ramp():
    ramp = np.repeat(np.repeat(np.arange(0, 256, 32).astype(np.uint8)[None, :, None], 8, 0), 3, 2)
    big = resize_uint8(ramp, 16).astype(int)
    assert big.shape == (16, 16, 3) and (np.diff(big[8, :, 0]) >= 0).all()           # still monotone
    expect = np.interp((np.arange(16) + 0.5) / 2 - 0.5, np.arange(8), ramp[0, :, 0])  # the ramp, centre-aligned
    assert np.abs(big[8, 3:-3, 0] - expect[3:-3]).max() <= 1                          # bicubic is exact on lines
    back = resize_uint8(big.astype(np.uint8), 8).astype(int)
    assert np.abs(back[:, 1:-1] - ramp[:, 1:-1].astype(int)).max() <= 2               # and nearly reversible


def test_resized_images_reads_pngs_and_npz(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    for i, a in enumerate(arr):
        Image.fromarray(a).save(tmp_path / f"{i:06d}.png")
    np.savez(tmp_path / "s.npz", arr_0=arr)
    a, b = ResizedImages(tmp_path, 8), ResizedImages(tmp_path / "s.npz", 8)
    assert len(a) == len(b) == 3 and a[1].shape == (3, 8, 8)
    assert (a[2].numpy() == b[2].numpy()).all()
    with pytest.raises(ConfigError, match="resize"):
        ResizedImages(tmp_path, 0)


def test_fid_resize_measures_at_the_reference_resolution(tmp_path):
    data = make_image_folder(tmp_path / "train", classes=2, per_class=6)
    big = tmp_path / "big"                                     # the reference images at 32 px, as "samples"
    big.mkdir()
    for i, p in enumerate(sorted(data.rglob("*.*"))):
        Image.fromarray(load_image(str(p), 32).permute(1, 2, 0).numpy()).save(big / f"{i:04d}.png")
    assert main(["prepare-ref", "--data-path", str(data), "--img-size", "16", "--out", str(tmp_path / "ref16.npz"),
                 "--feature-extractor", "tiny"]) == 0
    for flag, out in ((["--resize", "16"], "down.json"), ([], "native.json")):
        assert main(["fid", str(big), "--ref", str(tmp_path / "ref16.npz"), "--feature-extractor", "tiny",
                     "--out", str(tmp_path / out), *flag]) == 0
    down = json.loads((tmp_path / "down.json").read_text())
    native = json.loads((tmp_path / "native.json").read_text())
    assert down["num_samples"] == 12 and down["fid"] < native["fid"]   # 32 -> 16 px is closer to the 16 px reference
