"""The offline real-image sets: shipped photo crops (seeded, cached), image folders, resolution changes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from manifold_lab.checks import ConfigError
from manifold_lab.data import real_images as ri
from manifold_lab.data.imagefolder import load_image, to_model_range, to_uint8


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_every_shipped_photo_is_on_disk_in_colour():
    photos = ri.load_photos()
    assert set(photos) == set(ri.PHOTOS)
    for name, img in photos.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 192, name   # large enough for the largest crop window


def test_crops_are_seeded_and_shaped():
    photos = ri.load_photos(["chelsea", "coffee"])
    a, src_a = ri.make_crops(photos, 20, 16, seed=3)
    b, src_b = ri.make_crops(photos, 20, 16, seed=3)
    c, _ = ri.make_crops(photos, 20, 16, seed=4)
    assert a.shape == (20, 3, 16, 16) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(src_a, src_b)
    assert not np.array_equal(a, c)
    assert set(src_a) <= {0, 1}


def test_shipped_crops_are_cached_once(tmp_cache):
    a, _ = ri.shipped_crops(30, 8, seed=0)
    files = list((tmp_cache / "real_images").glob("*.npz"))
    assert len(files) == 1 and "n30-px8-seed0" in files[0].name
    mtime = files[0].stat().st_mtime_ns
    b, _ = ri.shipped_crops(30, 8, seed=0)
    assert np.array_equal(a, b) and files[0].stat().st_mtime_ns == mtime


def test_downsample_is_a_box_mean():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    y = ri.downsample(x, 2)
    assert y.shape == (2, 3, 2, 2)
    assert y[0, 0, 0, 0] == np.rint(np.mean([0, 1, 4, 5]))
    with pytest.raises(ConfigError, match="not divisible"):
        ri.downsample(x, 3)


def test_low_resolution_set_shows_the_same_pictures():
    hi = ri.make_image_set("skimage", 32, n_train=24, n_ref=8)
    lo = ri.make_image_set("skimage", 8, n_train=24, n_ref=8)
    assert hi.train.shape == (24, 3, 32, 32) and hi.ref.shape == (8, 3, 32, 32)
    assert np.array_equal(lo.train, ri.downsample(hi.train, 4))
    assert lo.img_size == 8 and hi.fingerprint() != lo.fingerprint()
    with pytest.raises(ConfigError, match="must divide"):
        ri.make_image_set("skimage", 12, n_train=4, n_ref=2)


def test_batch_fn_draws_seeded_batches_in_model_range():
    s = ri.make_image_set("skimage", 8, n_train=16, n_ref=4)
    fn = s.batch_fn()
    x1, y = fn(5, torch.Generator().manual_seed(0))
    x2, _ = fn(5, torch.Generator().manual_seed(0))
    assert y is None and x1.shape == (5, 3, 8, 8) and x1.dtype == torch.float32
    assert torch.equal(x1, x2) and x1.min() >= -1 and x1.max() <= 1


def test_model_range_round_trip():
    u = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 5), dtype=np.uint8)
    assert np.array_equal(to_uint8(to_model_range(torch.from_numpy(u)), layout="nchw").numpy(), u)
    assert np.array_equal(to_uint8(to_model_range(torch.from_numpy(u)), layout="nhwc").numpy(), u.transpose(0, 2, 3, 1))
    assert to_uint8(torch.tensor([-3.0, 3.0, float("inf")]).view(1, 3, 1, 1), layout="nchw").flatten().tolist() == [0, 255, 255]
    with pytest.raises(ConfigError, match="unknown layout 'chw'"):
        to_uint8(torch.zeros(1, 3, 1, 1), layout="chw")


def test_image_folder_is_read_with_the_trainers_scanner_and_adm_crop(tmp_path):
    root = tmp_path / "imgs"
    (root / "class_a").mkdir(parents=True)
    (root / "class_b").mkdir()
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255                      # the centre square is white, the sides black
    Image.fromarray(wide).save(root / "class_a" / "wide.png")
    Image.fromarray(np.full((30, 30), 7, np.uint8)).save(root / "class_b" / "grey.jpg")   # greyscale -> RGB
    (root / "notes.txt").write_text("not an image")
    x = ri.load_image_folder(root, 8)
    assert x.shape == (2, 3, 8, 8) and x.dtype == np.uint8
    assert np.array_equal(x[0], load_image(str(root / "class_a" / "wide.png"), 8).numpy())   # the trainer's crop
    assert (x[0][:, :, 1:-1] == 255).all() and x[0].min() >= 240   # the centre; bicubic rings at the edges
    assert np.abs(x[1].astype(int) - 7).max() <= 2
    s = ri.make_image_set(str(root), 8, n_ref=1)
    assert len(s.train) + len(s.ref) == 2 and len(s.ref) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ri.load_image_folder(tmp_path / "missing", 8)
    with pytest.raises(FileNotFoundError, match="no images"):
        ri.load_image_folder(root / "class_b" / "..", 8, max_images=0)
