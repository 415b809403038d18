"""ImageFolder, the ADM centre crop, the resumable sampler and the data error cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from imagenet_helpers import make_image_folder, tiny_overrides
from PIL import Image

from manifold_lab.data.imagefolder import (
    BadImageError,
    ImageFolderDataset,
    ResumableDistributedSampler,
    center_crop_arr,
    collate_skip_none,
    random_flip,
    to_model_range,
    to_uint8,
)


def test_center_crop_arr_box_halving_then_bicubic():
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (300, 700, 3), dtype=np.uint8))   # W 700, H 300
    out = center_crop_arr(im, 64)
    assert out.size == (64, 64)
    # by hand: 700x300 -> BOX 350x150 (150 >= 128) -> 175x75 (75 < 128 stops) -> BICUBIC to 149x64 -> centre
    ref = im.resize((350, 150), Image.BOX).resize((175, 75), Image.BOX).resize((149, 64), Image.BICUBIC)
    assert np.array_equal(np.asarray(out), np.asarray(ref)[:, 42:106])
    uniform = Image.new("RGB", (40, 90), (10, 200, 30))
    assert (np.asarray(center_crop_arr(uniform, 16)) == (10, 200, 30)).all()


def test_dataset_items_and_device_side_maps(tmp_path):
    ds = ImageFolderDataset(make_image_folder(tmp_path / "d", classes=2, per_class=3), 16)
    assert len(ds) == 6 and ds.classes == ["class_00", "class_01"] and ds.num_classes == 2
    x, y = ds[4]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and y == 1
    f = to_model_range(torch.tensor([0, 255], dtype=torch.uint8))
    assert f.tolist() == [-1.0, 1.0]
    imgs = to_model_range(torch.stack([ds[i][0] for i in range(6)]))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = random_flip(imgs, g1), random_flip(imgs, g2)
    assert torch.equal(a, b)
    flipped = [not torch.equal(a[i], imgs[i]) for i in range(6)]
    assert all(torch.equal(a[i], imgs[i].flip(-1)) for i in range(6) if flipped[i]) and any(flipped)
    assert torch.equal(to_uint8(imgs, layout="nhwc"), torch.stack([ds[i][0] for i in range(6)]).permute(0, 2, 3, 1))


def test_sampler_shuffles_per_epoch_partitions_ranks_and_resumes_mid_epoch():
    data = list(range(20))
    s = ResumableDistributedSampler(data, num_replicas=2, rank=0, seed=5)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and len(e0) == 10
    other = ResumableDistributedSampler(data, num_replicas=2, rank=1, seed=5)
    other.set_epoch(1)
    assert sorted(e1 + list(other)) == data
    s.set_epoch(1, start=4)
    assert list(s) == e1[4:] and len(s) == 6


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing", 16)
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "flat", 16)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path / "empty", 16)


def test_corrupt_image_error_or_logged_skip(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=4)
    bad = root / "class_01" / "img_zzz.png"
    bad.write_bytes(b"not an image")
    ds = ImageFolderDataset(root, 16)
    with pytest.raises(BadImageError, match="img_zzz.png.*--bad-images skip"):
        ds[len(ds) - 1]
    ds = ImageFolderDataset(root, 16, bad_images="skip")
    assert ds[len(ds) - 1] is None and "img_zzz.png" in capsys.readouterr().out
    x, y = collate_skip_none([ds[0], ds[len(ds) - 1], ds[1]])
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [0, 0]
    from manifold_lab.train.config import load_config
    from manifold_lab.train.imagenet import train
    torch.set_num_threads(1)
    res = train(load_config(None, tiny_overrides(root, tmp_path / "run", num_classes=2, bad_images="skip",
                                                 epochs=2, batch_size=3)))
    assert res["step"] == 6 and "skipping unreadable image" in capsys.readouterr().out
    with pytest.raises(BadImageError, match="img_zzz"):
        train(load_config(None, tiny_overrides(root, tmp_path / "run2", num_classes=2, epochs=2, batch_size=3)))
