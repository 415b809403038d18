"""Prepared shard sets (manifold_lab.data.shards): bit-identical items, resumable prepare-data, the bad-image
policy, the one-line errors, and the ImageNet trainer on shards (same losses, bit-exact resume).

The trainer tests need ``ImageNetRun._setup_data`` to build its dataset with ``open_dataset``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from imagenet_helpers import TINY_MODEL_ARGS, make_image_folder, tiny_overrides

from manifold_lab.checks import ConfigError
from manifold_lab.data import shards
from manifold_lab.data.imagefolder import BadImageError, ImageFolderDataset
from manifold_lab.data.shards import ShardDataset, open_dataset, prepare_data


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs") / "train", classes=3, per_class=5)


def assert_same_items(a, b):
    assert len(a) == len(b) and a.classes == b.classes and a.num_classes == b.num_classes
    for i in range(len(a)):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert xb.dtype == torch.uint8 and xb.is_contiguous() and torch.equal(xa, xb) and ya == yb


def file_ids(out: Path) -> dict:
    """name -> (inode, mtime_ns) of the shard files: a rewritten file changes both."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.glob("shard_*"))}


def test_prepared_items_equal_imagefolder_items(src, tmp_path):
    m = prepare_data(src, tmp_path / "s", 16, shard_size=4, progress=False)
    assert (m["format"], m["crop"], m["img_size"], m["num_images"], m["layout"]) == \
        ("manifold_lab-shards", "adm", 16, 15, "NCHW uint8")
    assert [s["count"] for s in m["shards"]] == [4, 4, 4, 3] and m["skipped"] == []
    assert m["class_counts"] == {"class_00": 5, "class_01": 5, "class_02": 5} and m["bytes"] == 15 * 3 * 16 * 16
    assert np.load(tmp_path / "s" / "shard_00003.npy", mmap_mode="r").shape == (3, 3, 16, 16)
    ds = open_dataset(tmp_path / "s", 16)
    assert isinstance(ds, ShardDataset)
    assert_same_items(ImageFolderDataset(src, 16), ds)
    assert isinstance(open_dataset(src, 16), ImageFolderDataset)
    prepare_data(src, tmp_path / "p", 16, shard_size=4, workers=2, progress=False)   # a worker pool: same bytes
    for f in ("shard_00000.npy", "shard_00003.npy", "labels.npy"):
        assert (tmp_path / "s" / f).read_bytes() == (tmp_path / "p" / f).read_bytes()
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=15, num_workers=1)))
    assert torch.equal(x[7], ds[7][0]) and y.tolist() == [ds[i][1] for i in range(15)]


def test_prepare_resumes_after_a_kill(src, tmp_path, monkeypatch):
    out = tmp_path / "s"
    real, calls = shards._write_shard, []

    def dies_on_third(job):
        calls.append(job[1])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(job)
    monkeypatch.setattr(shards, "_write_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(src, out, 16, shard_size=4, progress=False)
    assert sorted(p.name for p in out.glob("shard_*.json")) == ["shard_00000.json", "shard_00001.json"]
    for opener in (ShardDataset, open_dataset):
        with pytest.raises(ConfigError, match="prepare-data has not finished"):
            opener(out, 16)
    kept = file_ids(out)
    (out / ".shard_00002.npy.x1.tmp").write_bytes(b"half")              # a temporary left by a SIGKILL
    (out / "shard_00002.npy").write_bytes(b"half-written, no marker")   # data without its marker
    monkeypatch.setattr(shards, "_write_shard", real)
    prepare_data(src, out, 16, shard_size=4, progress=False)
    after = file_ids(out)
    assert all(after[k] == v for k, v in kept.items())                  # finished shards were not rewritten
    assert not list(out.glob(".*.tmp"))
    assert_same_items(ImageFolderDataset(src, 16), ShardDataset(out, 16))
    for f in ("manifest.json", "labels.npy", "shard_00001.npy", "shard_00001.json"):   # a later kill
        (out / f).unlink()
    prepare_data(src, out, 16, shard_size=4, progress=False)
    assert all(after[k] == v for k, v in file_ids(out).items() if not k.startswith("shard_00001"))
    assert_same_items(ImageFolderDataset(src, 16), ShardDataset(out, 16))
    done = file_ids(out)
    prepare_data(src, out, 16, shard_size=4, progress=False)            # a finished set is left as it is
    assert file_ids(out) == done


def test_another_plan_or_folder_is_refused(src, tmp_path):
    prepare_data(src, tmp_path / "s", 16, shard_size=4, progress=False)
    with pytest.raises(ConfigError, match="another plan.*img_size"):
        prepare_data(src, tmp_path / "s", 24, shard_size=4, progress=False)
    with pytest.raises(ConfigError, match="another plan.*shard_size"):
        prepare_data(src, tmp_path / "s", 16, shard_size=5, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        prepare_data(src, tmp_path / "busy", 16, progress=False)
    with pytest.raises(ConfigError, match="inside the source"):
        prepare_data(src, src / "class_00" / "out", 16, progress=False)


def test_bad_image_policy(tmp_path, capsys):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=4)
    (root / "class_00" / "img_001b.png").write_bytes(b"not an image")   # the 3rd image of the scan
    with pytest.raises(BadImageError, match="img_001b.png.*--bad-images skip"):
        prepare_data(root, tmp_path / "e", 16, shard_size=4, progress=False)
    m = prepare_data(root, tmp_path / "s", 16, shard_size=4, bad_images="skip", progress=False)
    assert m["num_images"] == 8 and [s["count"] for s in m["shards"]] == [3, 4, 1]
    assert m["skipped"] == [str(root / "class_00" / "img_001b.png")]
    folder = ImageFolderDataset(root, 16, bad_images="skip")
    good = [folder[i] for i in range(len(folder)) if folder[i] is not None]
    ds = ShardDataset(tmp_path / "s", 16)
    assert len(ds) == len(good) == 8
    assert all(torch.equal(ds[i][0], good[i][0]) and ds[i][1] == good[i][1] for i in range(8))
    assert ds[-1][1] == 1 and ds[8 - 1][1] == 1
    with pytest.raises(IndexError):
        ds[8]


def test_size_and_not_a_shard_set_errors(src, tmp_path):
    prepare_data(src, tmp_path / "s", 16, shard_size=8, progress=False)
    with pytest.raises(ConfigError, match=r"holds 16 px images but img_size is 32.*--img-size 32"):
        ShardDataset(tmp_path / "s", 32)
    with pytest.raises(ConfigError, match="is no shard set.*prepare-data"):
        ShardDataset(src, 16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ShardDataset(tmp_path / "missing", 16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(tmp_path / "missing", 16)


def test_prepare_data_command(src, tmp_path, capsys):
    p = argparse.ArgumentParser()
    shards.register(p.add_subparsers())
    args = p.parse_args(["prepare-data", "--data-path", str(src), "--img-size", "16", "--out", str(tmp_path / "s"),
                         "--shard-size", "6", "--workers", "0", "--no-progress"])
    assert args.func(args) == 0
    assert "15 images, 3 classes, 3 shards" in capsys.readouterr().out
    with pytest.raises(SystemExit):                                      # allow_abbrev=False
        p.parse_args(["prepare-data", "--data-path", "x", "--img", "16", "--out", "y"])
    with pytest.raises(ConfigError, match="shard_size"):
        prepare_data(src, tmp_path / "z", 16, shard_size=0)


# ---- the trainer on shards (needs ImageNetRun._setup_data -> open_dataset) ----------------------------
def test_trainer_reads_shards_loss_for_loss_and_resumes_bit_exactly(src, tmp_path, capsys):
    from manifold_lab.train import imagenet
    from manifold_lab.train.config import load_config
    assert hasattr(imagenet, "open_dataset"), "wire ImageNetRun._setup_data to shards.open_dataset"
    prepare_data(src, tmp_path / "shards", 16, shard_size=4, progress=False)
    extra = dict(epochs=3, model_args=dict(TINY_MODEL_ARGS, proj_drop=0.2, attn_drop=0.1))

    def run(data, out, **kw):
        return imagenet.train(load_config(None, tiny_overrides(data, tmp_path / out, **extra, **kw)))
    folder = run(src, "folder")
    full = run(tmp_path / "shards", "full", num_workers=1)
    assert "15 images, 3 classes" in capsys.readouterr().out and full["step"] == 9
    assert [v for _, v in full["losses"]] == [v for _, v in folder["losses"]]
    part = run(tmp_path / "shards", "part", stop_at_step=4)             # "killed" inside epoch 2
    rest = run(tmp_path / "shards", "part", resume=str(tmp_path / "part"))
    assert part["stopped"] and [v for _, v in part["losses"] + rest["losses"]] == [v for _, v in full["losses"]]
    a = imagenet.read_log(tmp_path / "full" / "log.csv")
    b = imagenet.read_log(tmp_path / "part" / "log.csv")
    assert a.loss.tolist() == b.loss.tolist() and a.lr.tolist() == b.lr.tolist()
    sa, sb = (torch.load(tmp_path / r / "checkpoint-last.pth", weights_only=True) for r in ("full", "part"))
    assert all(torch.equal(sa["model"][k], sb["model"][k]) and torch.equal(sa["ema"]["0.5"][k], sb["ema"]["0.5"][k])
               for k in sa["model"])
