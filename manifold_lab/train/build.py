"""What a full-scale config builds: the network and the denoiser. Training, sampling and evaluation all
build through here, so a checkpoint is always read back into the network it was trained as."""
from __future__ import annotations

import importlib

from torch import nn

from manifold_lab.denoiser import Denoiser
from manifold_lab.schedule import TimeSampler
from manifold_lab.train.config import ImageNetConfig


def build_model(cfg: ImageNetConfig) -> nn.Module:
    """The network of a config: a JiT_models name, or "package.module:factory" (a custom net)."""
    num_classes = None if cfg.unconditional else cfg.num_classes
    if ":" in cfg.model:
        mod, fn = cfg.model.split(":", 1)
        return getattr(importlib.import_module(mod), fn)(img_size=cfg.img_size, num_classes=num_classes,
                                                         **cfg.model_args)
    from manifold_lab.nets.jit import build_jit

    args = dict(cfg.model_args)
    if cfg.compile:
        args.setdefault("compile", True)   # JiT compiles its blocks and final layer, as the paper's code
    return build_jit(cfg.model, img_size=cfg.img_size, num_classes=num_classes, **args)


def build_denoiser(cfg: ImageNetConfig) -> Denoiser:
    """Target, loss space and noise process of a config (label drop only for conditional models)."""
    return Denoiser(pred=cfg.pred, loss=cfg.loss, t_sampler=TimeSampler(cfg.t_sampler, cfg.p_mean, cfg.p_std),
                    t_eps=cfg.t_eps, noise_scale=cfg.resolved_noise_scale,
                    num_classes=None if cfg.unconditional else cfg.num_classes,
                    label_drop=0.0 if cfg.unconditional else cfg.label_drop)
