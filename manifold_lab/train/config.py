"""The full-scale trainer's configuration: one typed dataclass, YAML as defaults, flags on top.

``load_config(yaml_path, overrides)`` reads the YAML (an unknown key is an error), then applies the
command-line overrides (also checked), then validates. Every field is also a ``--flag`` of ``train``
(``lr_schedule`` -> ``--lr-schedule``, through :mod:`manifold_lab.config`, the helper every config uses);
dict and list fields take JSON or YAML (``--model-args '{"depth": 2}'``).
The resolved config is written into every run folder and checkpoint.

Recipe defaults are the paper's (JiT §2): AdamW (0.9, 0.95), no weight decay, lr = blr * global batch /
256 with blr 5e-5, 5 warm-up epochs then constant, logit-normal t (-0.8, 0.8), label drop 0.1,
EMAs 0.9999 and 0.9996, bf16 autocast on GPU, x-prediction with the v-loss, t_eps 0.05.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from manifold_lab.checks import ConfigError, check_choice, check_positive
from manifold_lab.config import check_numbers, config_from_values
from manifold_lab.config import load_config as _load_config
from manifold_lab.device import PRECISIONS, check_device
from manifold_lab.param import PREDS, TARGETS
from manifold_lab.train.core import LR_SCHEDULES

LOGGERS = ("csv", "tensorboard", "both", "none")
BAD_IMAGE_POLICIES = ("error", "skip")


@dataclass
class ImageNetConfig:
    # ---- model ----
    model: str = "JiT-B/16"          # a JiT_models name, or "package.module:factory" for a custom net
    model_args: dict = field(default_factory=dict)  # overrides passed to the factory (e.g. proj_drop)
    img_size: int = 256
    num_classes: int = 1000          # null class index = num_classes
    unconditional: bool = False      # train without labels (the net gets num_classes=None)
    # ---- objective (manifold_lab.denoiser.Denoiser) ----
    pred: str = "x"
    loss: str = "v"
    t_sampler: str = "logit_normal"
    p_mean: float = -0.8
    p_std: float = 0.8
    t_eps: float = 0.05
    noise_scale: float | None = None  # None: img_size / 256
    label_drop: float = 0.1
    # ---- optimisation ----
    epochs: int = 600
    warmup_epochs: float = 5.0
    batch_size: int = 128            # per process and micro-step
    accum_steps: int = 1             # gradient accumulation: global batch = batch_size * world * accum_steps
    blr: float = 5e-5                # lr = blr * global batch / 256 (unless lr is set)
    lr: float | None = None
    min_lr: float = 0.0              # floor of the cosine schedule
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    ema_decays: list = field(default_factory=lambda: [0.9999, 0.9996])
    grad_clip: float | None = None   # the paper uses none
    precision: str = "auto"          # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"             # auto (CUDA when present), cpu, cuda (under torchrun: cuda:LOCAL_RANK)
    compile: bool = False
    seed: int = 0                    # per-process seed = seed + rank
    max_steps: int | None = None     # stop after this many optimiser steps (the schedule still uses epochs)
    stop_at_step: int | None = None  # checkpoint and exit at this step, as if killed (tests, preemptible jobs)
    # ---- data ----
    data_path: str = ""              # ImageFolder root (class sub-folders), e.g. /data/imagenet/train
    num_workers: int = 8
    bad_images: str = "error"        # error: stop with the path; skip: log the path and drop the image
    # ---- output ----
    output_dir: str = "runs/jit"
    resume: str | None = None        # a checkpoint file or a folder holding checkpoint-last.pth
    init_from: str | None = None     # start a new run (fine-tuning) from these weights: ours or an official JiT file
    init_ema: str = "ema1"           # which weights init_from loads: ema1, ema2, model, or a decay
    save_every_epochs: int = 5       # checkpoint-last.pth
    keep_every_epochs: int = 100     # checkpoint-{epoch:04d}.pth kept for good
    save_every_steps: int | None = None  # also refresh checkpoint-last.pth every N steps
    save_checkpoints: bool = True    # false: write no checkpoint file at all (benchmarks; the run cannot resume)
    log: str = "csv"
    log_every: int = 50              # console line every N steps (the progress bar updates each step)
    progress: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        check_numbers(self)
        for name in ("img_size", "num_classes", "epochs", "batch_size", "accum_steps", "save_every_epochs",
                     "keep_every_epochs", "log_every"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("blr", self.blr)
        for name in ("lr", "noise_scale"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        check_choice("prediction target (pred)", self.pred, PREDS)
        check_choice("loss space (loss)", self.loss, TARGETS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("log", self.log, LOGGERS)
        check_choice("bad_images", self.bad_images, BAD_IMAGE_POLICIES)
        check_device(self.device)
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if not 0 <= self.label_drop < 1:
            raise ConfigError(f"label_drop must be in [0, 1), got {self.label_drop!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers, got {self.betas!r}")
        if not all(0 <= d < 1 for d in self.ema_decays):
            raise ConfigError(f"every EMA decay must be in [0, 1), got {self.ema_decays!r}")
        if not isinstance(self.model_args, dict):
            raise ConfigError(f"model_args must be a mapping, got {self.model_args!r}")
        for name in ("max_steps", "stop_at_step", "save_every_steps"):
            v = getattr(self, name)
            if v is not None:
                check_positive(name, v, integer=True)
        if not self.save_checkpoints and self.stop_at_step is not None:
            raise ConfigError("stop_at_step needs a checkpoint to resume from; drop it or set save_checkpoints: true")

    # ---- derived values ----
    @property
    def resolved_noise_scale(self) -> float:
        return float(self.noise_scale) if self.noise_scale is not None else self.img_size / 256

    def global_batch(self, world_size: int) -> int:
        return self.batch_size * world_size * self.accum_steps

    def resolved_lr(self, world_size: int) -> float:
        return float(self.lr) if self.lr is not None else self.blr * self.global_batch(world_size) / 256

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(yaml_path: str | Path | None = None, overrides: dict | None = None) -> ImageNetConfig:
    """An ImageNetConfig from YAML defaults and overrides (unknown or renamed keys raise ConfigError)."""
    return _load_config(ImageNetConfig, yaml_path, overrides)


def config_from_dict(d: dict) -> ImageNetConfig:
    """The config stored in a checkpoint."""
    return config_from_values(ImageNetConfig, d, "checkpoint config")
