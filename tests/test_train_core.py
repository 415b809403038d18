"""The one training core: parity of the small-run and ImageNet entries, the schedule, the device knob,
deferred loss reads, one spelling per knob."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from imagenet_helpers import TINY_MODEL_ARGS, make_image_folder, tiny_overrides

from manifold_lab.checks import ConfigError
from manifold_lab.config import RENAMED
from manifold_lab.data.imagefolder import (
    ImageFolderDataset,
    ResumableDistributedSampler,
    collate_skip_none,
    random_flip,
    to_model_range,
)
from manifold_lab.denoiser import Denoiser
from manifold_lab.device import resolve_device
from manifold_lab.image_study import ImageConfig
from manifold_lab.nets.mlp import MLP
from manifold_lab.toy import ToyConfig
from manifold_lab.train.build import build_denoiser, build_model
from manifold_lab.train.config import load_config
from manifold_lab.train.core import LRSchedule, NonFiniteLossError, TrainCore
from manifold_lab.train.ema import EMA
from manifold_lab.train.imagenet import read_log
from manifold_lab.train.imagenet import train as train_imagenet
from manifold_lab.train.loop import TrainConfig
from manifold_lab.train.loop import train as train_small


def loader_like_batches(data: Path, img_size: int, batch: int, seed: int):
    """A small-run batch_fn that reads the ImageFolder exactly as the ImageNet trainer's loader does:
    the sampler's per-epoch permutation, drop_last batches, then the flip from the training generator."""
    ds = ImageFolderDataset(data, img_size)
    sampler = ResumableDistributedSampler(ds, num_replicas=1, rank=0, seed=seed)
    order, epoch = [], 0

    def fn(b, g):
        nonlocal order, epoch
        if not order:
            sampler.set_epoch(epoch)
            idx = list(sampler)
            order, epoch = [idx[k:k + b] for k in range(0, len(idx) - b + 1, b)], epoch + 1
        u8, y = collate_skip_none([ds[i] for i in order.pop(0)])
        return random_flip(to_model_range(u8), g), y
    return fn


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_small_run_and_imagenet_entries_take_the_same_steps(tmp_path, schedule):
    data = make_image_folder(tmp_path / "data", classes=3, per_class=4)
    model_args = dict(TINY_MODEL_ARGS, proj_drop=0.2)           # dropout: the global RNG is in step too
    cfg = load_config(None, tiny_overrides(data, tmp_path / "inet", epochs=3, model_args=model_args,
                                           lr_schedule=schedule, min_lr=1e-4))
    big = train_imagenet(cfg)
    log = read_log(tmp_path / "inet" / "log.csv")

    steps_per_epoch = 12 // cfg.batch_size
    torch.manual_seed(cfg.seed)
    net = build_model(cfg)
    torch.manual_seed(cfg.seed)                                 # the ImageNet entry re-seeds per rank
    tcfg = TrainConfig(steps=cfg.epochs * steps_per_epoch, batch_size=cfg.batch_size, lr=cfg.resolved_lr(1),
                       warmup_steps=cfg.warmup_epochs * steps_per_epoch, warmup_from_zero=True,
                       lr_schedule=schedule, min_lr=1e-4, ema_decays=tuple(cfg.ema_decays), seed=cfg.seed,
                       device="cpu", betas=tuple(cfg.betas))
    small = train_small(net, build_denoiser(cfg), loader_like_batches(data, cfg.img_size, cfg.batch_size, cfg.seed),
                        tcfg, progress=False)
    assert len(log) == len(small.curve) == 9
    assert small.curve["lr"].tolist() == log["lr"].tolist()          # one schedule: the same learning rates
    assert small.curve["loss"].tolist() == log["loss"].tolist()      # one step: the same losses, bit for bit
    assert [v for _, v in big["losses"]] == log["loss"].tolist()


def test_lr_schedule_is_one_function_of_the_step():
    paper = LRSchedule(1.0, warmup_steps=4, total_steps=20)
    assert [paper(s) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    cosine = LRSchedule(1.0, 0, 10, "cosine", min_lr=0.5)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.75) and cosine(10) == cosine(99) == 0.5
    with pytest.raises(ConfigError, match="unknown lr schedule 'linear'"):
        LRSchedule(1.0, kind="linear")


def test_ema_foreach_update_equals_the_per_parameter_lerp():
    torch.manual_seed(0)
    net = MLP(6, hidden_size=16, depth=3)
    ema = EMA(net, 0.9)
    ref = [p.detach().clone() for p in net.parameters()]
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net)
        ref = [r.lerp(p.detach(), 0.1) for r, p in zip(ref, net.parameters())]
    assert all(torch.equal(a, b) for a, b in zip(ema.model.parameters(), ref))


def test_deferred_flush_names_the_first_bad_step():
    torch.manual_seed(0)
    net = MLP(4, hidden_size=8, depth=2)
    core = TrainCore(net, Denoiser(), schedule=LRSchedule(1e-3), generator=torch.Generator().manual_seed(0))
    good = (torch.randn(8, 4), None)
    for s in range(3):
        core.step(s, lambda: good)
    core.step(3, lambda: (torch.full((8, 4), float("inf")), None))
    core.step(4, lambda: good)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        core.flush()
    assert core.flush() == []                                      # the pending list was consumed


def test_device_knob(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "CPU", ""):
        with pytest.raises(ConfigError, match="unknown device"):
            resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")


def config_dataclasses() -> dict[str, type]:
    """Every dataclass of the package whose name ends in Config, found by importing each module."""
    import importlib
    import pkgutil

    import manifold_lab

    found = {}
    for info in pkgutil.walk_packages(manifold_lab.__path__, "manifold_lab."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.endswith("Config") and dataclasses.is_dataclass(obj) and obj.__module__ == info.name:
                found[name] = obj
    return found


def test_one_spelling_per_knob_across_the_configs():
    from manifold_lab.schedule import TimeSampler

    classes = config_dataclasses()
    assert {"ToyConfig", "ImageConfig", "ImageNetConfig", "TrainConfig", "SamplingConfig", "SweepConfig",
            "ImageNetPointConfig", "IdConfig"} <= set(classes), sorted(classes)    # the walk finds them
    fields = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in classes.items()}
    fields["TimeSampler"] = {f.name for f in dataclasses.fields(TimeSampler)}
    # "ema" (which weights to sample with) is an old spelling only where a config has ema_decays and no ema
    old = set(RENAMED) - {"ema"}
    for name, names in fields.items():
        assert not names & old, (name, names & old)                      # no old spelling survives
        assert not {"ema", "ema_decays"} <= names, name
    shared = ("batch_size", "lr", "p_mean", "p_std", "t_eps", "ema_decays", "seed", "pred", "loss", "precision",
              "device")
    for knob in shared:
        assert knob in fields["ImageNetConfig"] and knob in fields["ToyConfig"] and knob in fields["ImageConfig"], knob
    assert "lr_schedule" in fields["ToyConfig"] & fields["ImageConfig"] & fields["ImageNetConfig"]
    assert {"hidden_size", "depth"} <= fields["ToyConfig"] & fields["ImageConfig"]
    assert {"cfg_scale", "n_samples", "ema", "batch_size"} <= fields["SamplingConfig"]
    assert {"n_samples", "cfg_scales", "emas"} <= fields["ImageNetPointConfig"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_toy_and_image_runs_on_cuda(tmp_path):
    from manifold_lab.image_study import run_image_point
    from manifold_lab.toy import run_toy

    m = run_toy(ToyConfig(D=16, steps=200, n_samples=300, device="cuda"), tmp_path / "toy", progress=False)
    assert m["nn_dist"] < 0.5
    again = run_toy(ToyConfig(D=16, steps=200, n_samples=300, device="cuda"), tmp_path / "toy2", progress=False)
    assert again["nn_dist"] == pytest.approx(m["nn_dist"], rel=1e-3)     # seeded: repeatable on one device
    img = run_image_point(ImageConfig(patch_size=2, hidden_size=16, depth=1, steps=20, batch_size=16, n_train=256,
                                      n_samples=32, sample_steps=2, feat_steps=11, device="cuda"), tmp_path / "img")
    assert img["fd_feat"] < float("inf")
