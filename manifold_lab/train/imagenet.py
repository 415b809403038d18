"""The full-scale JiT trainer: one code path for the CPU, one GPU and ``torchrun`` (DDP iff ``RANK`` is set).

    python -m manifold_lab train --config configs/jit_b16_in256.yaml --data-path /data/imagenet/train
    torchrun --nproc_per_node=8 -m manifold_lab train --config configs/jit_b16_in256.yaml ...

Every optimiser step is :meth:`manifold_lab.train.core.TrainCore.step`, the step the toy and the image
studies take; epochs convert to steps once (warm-up epochs x steps per epoch). Every random draw of a
training step (flip, t, eps, label drop) comes from one per-rank generator seeded with ``seed + rank``;
dropout uses the global torch RNG; the data order is DistributedSampler's per-epoch permutation plus a
position inside the epoch. All of it goes into each checkpoint, so a run stopped at step k and resumed
gives exactly the losses of an uninterrupted run (bit for bit on the CPU).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from manifold_lab.checks import ConfigError
from manifold_lab.config import add_config_flags, overrides_from_args
from manifold_lab.data.imagefolder import ResumableDistributedSampler, collate_skip_none, random_flip, to_model_range
from manifold_lab.data.shards import open_dataset
from manifold_lab.device import generator
from manifold_lab.io import check_writable_dir, write_json
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train import distributed as dist_mod
from manifold_lab.train.build import build_denoiser, build_model
from manifold_lab.train.config import ImageNetConfig, load_config
from manifold_lab.train.core import LRSchedule, TrainCore
from manifold_lab.train.runlog import RunLog, _fmt_time, read_log  # noqa: F401  (read_log: public here)

# keys that may change between a run and its resumption without a warning
_RUN_ONLY_KEYS = {"resume", "init_from", "init_ema", "stop_at_step", "max_steps", "epochs", "progress", "log_every",
                  "num_workers", "output_dir", "save_every_steps", "save_every_epochs", "keep_every_epochs",
                  "data_path", "log", "device", "save_checkpoints"}


@dataclass
class Position:
    """Where a run stands: optimiser steps done, the epoch, and the steps done inside that epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


def train(cfg: ImageNetConfig) -> dict:
    """Train per ``cfg``; returns {"step", "epoch", "losses": [(step, loss)] of this run, "output_dir",
    "stopped"}."""
    info = dist_mod.setup(cfg.device)
    try:
        return ImageNetRun(cfg, info).run()
    finally:
        dist_mod.cleanup(info)


class ImageNetRun:
    """One run of the trainer, in pieces: data, the training core, resume, the epoch loop, checkpoints."""

    def __init__(self, cfg: ImageNetConfig, info: dist_mod.DistInfo):
        self.cfg, self.info, self.device = cfg, info, info.device
        self.out_dir = Path(cfg.output_dir)
        self.say = print if info.is_main else (lambda *a, **k: None)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if cfg.log in ("tensorboard", "both"):            # fail on every rank, before any collective
            RunLog.check_tensorboard()
        self._setup_data()                                # a bad folder fails before a big model is built
        self.core = self._setup_core()
        self.pos = self._resume() if cfg.resume else self._init_from() if cfg.init_from else self._fresh()
        self.core.model = self._wrap(self.core.net)
        self.losses: list[tuple[int, float]] = []
        self.stopped = False

    # ---- set-up ----------------------------------------------------------------------------------------
    def _setup_data(self) -> None:
        cfg, info = self.cfg, self.info
        self.dataset = open_dataset(cfg.data_path, cfg.img_size, bad_images=cfg.bad_images)   # folder or shards
        if not cfg.unconditional and self.dataset.num_classes > cfg.num_classes:
            raise ConfigError(f"{cfg.data_path} has {self.dataset.num_classes} class folders but num_classes is "
                              f"{cfg.num_classes}; raise num_classes or set unconditional: true")
        self.sampler = ResumableDistributedSampler(self.dataset, num_replicas=info.world_size, rank=info.rank,
                                                   seed=cfg.seed)
        self.steps_per_epoch = self.sampler.num_samples // cfg.batch_size // cfg.accum_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(f"{len(self.dataset)} images are fewer than one global batch "
                              f"({cfg.global_batch(info.world_size)}); lower batch_size or accum_steps")
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers,
            drop_last=True, pin_memory=self.device.type == "cuda", collate_fn=collate_skip_none,
            generator=torch.Generator().manual_seed(cfg.seed),   # keeps the global RNG untouched by iter()
            persistent_workers=False)
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps is not None else total

    def _setup_core(self) -> TrainCore:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)                       # identical initial weights on every rank
        net = build_model(cfg).to(self.device)
        seed = cfg.seed + info.rank                       # per-rank stream of every training draw
        gen = generator(self.device, seed)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        self.lr = cfg.resolved_lr(info.world_size)
        schedule = LRSchedule(self.lr, cfg.warmup_epochs * self.steps_per_epoch, cfg.epochs * self.steps_per_epoch,
                              cfg.lr_schedule, cfg.min_lr, warmup_from_zero=True)
        return TrainCore(net, build_denoiser(cfg), schedule=schedule, generator=gen, ema_decays=cfg.ema_decays,
                         weight_decay=cfg.weight_decay, betas=cfg.betas, precision=cfg.precision,
                         accum_steps=cfg.accum_steps, grad_clip=cfg.grad_clip, dist=info)

    def _wrap(self, net: nn.Module) -> nn.Module:
        """What the forward runs through: compiled (custom nets; JiT compiles its own blocks) and/or DDP."""
        model = torch.compile(net) if self.cfg.compile and ":" in self.cfg.model else net
        if self.info.ddp:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return model

    def _fresh(self) -> Position:
        if (self.out_dir / ckpt_mod.LAST).exists():
            raise ConfigError(f"{self.out_dir} already holds {ckpt_mod.LAST}; pass --resume {self.out_dir} to "
                              "continue that run, or choose another --output-dir")
        return Position()

    def _init_from(self) -> Position:
        """A new run whose network starts from the chosen weights of a checkpoint (ours or official):
        fresh optimiser, step 0, every EMA a copy of those weights."""
        pos = self._fresh()
        state, path = ckpt_mod.load_checkpoint(self.cfg.init_from)
        ckpt_mod.load_weights(self.core.net, ckpt_mod.weights_from_checkpoint(state, self.cfg.init_ema), path)
        for ema in self.core.emas.values():
            ema.load_state_dict(self.core.net.state_dict())
        for note in state["meta"]["notes"]:
            self.say(f"note: {note}")
        self.say(f"initialised with {ckpt_mod.describe(state, self.cfg.init_ema, path)}; fresh optimiser, "
                 f"step 0, every EMA starts from these weights", flush=True)
        return pos

    def _resume(self) -> Position:
        if self.cfg.init_from:
            self.say(f"note: resuming, so init_from ({self.cfg.init_from}) is not read", flush=True)
        state, path, warnings = ckpt_mod.load_for_resume(self.cfg.resume)
        for w in warnings:
            self.say(w, flush=True)
        changed = sorted(k for k, v in state["config"].items() if k not in _RUN_ONLY_KEYS
                         and self.cfg.to_dict().get(k) != v)
        if changed:
            self.say(f"warning: the config differs from the checkpoint's in {', '.join(changed)}", flush=True)
        self.core.load_state_dict(state)
        pos = Position(state["step"], state["epoch"], state["step_in_epoch"])
        if len(state["rng"]) == self.info.world_size:
            ckpt_mod.set_rng_state(state["rng"][self.info.rank], self.core.generator)
        else:
            self.say(f"warning: checkpoint was written by {len(state['rng'])} process(es), this run has "
                     f"{self.info.world_size}; the random streams restart (training continues, not bit-exactly)")
        self.say(f"resumed from {path} (step {pos.step}, epoch {pos.epoch}, step {pos.step_in_epoch} of the epoch)",
                 flush=True)
        return pos

    # ---- the loop --------------------------------------------------------------------------------------
    def run(self) -> dict:
        self._start_log()
        while self.pos.step < self.total_steps and not self.stopped:
            self._train_epoch()
            if not self.stopped:
                self._end_of_epoch()
        self._flush()
        if self.bar is not None:
            self.bar.close()
        if self.runlog is not None:
            self.runlog.close()
        return {"step": self.pos.step, "epoch": self.pos.epoch, "losses": self.losses,
                "output_dir": str(self.out_dir), "stopped": self.stopped}

    def _train_epoch(self) -> None:
        cfg, pos = self.cfg, self.pos
        self.sampler.set_epoch(pos.epoch, start=pos.step_in_epoch * cfg.accum_steps * cfg.batch_size)
        batches = iter(self.loader)
        while pos.step_in_epoch < self.steps_per_epoch and pos.step < self.total_steps:
            self.core.step(pos.step, lambda: self._batch(batches))
            pos.step += 1
            pos.step_in_epoch += 1
            self._epochs.append(pos.epoch + pos.step_in_epoch / self.steps_per_epoch)
            if self.bar is not None:
                self.bar.update(1)
            if pos.step % cfg.log_every == 0 or pos.step == self.total_steps:
                self._flush()
            if cfg.save_every_steps and pos.step % cfg.save_every_steps == 0:
                self.save(ckpt_mod.LAST)
            if cfg.stop_at_step is not None and pos.step >= cfg.stop_at_step:
                self.save(ckpt_mod.LAST)
                self.say(f"stopped at step {pos.step} as asked (stop_at_step); resume with --resume {self.out_dir}",
                         flush=True)
                self.stopped = True
                return

    def _batch(self, batches):
        """The next micro-batch on the device: uint8 -> [-1, 1], flipped with the training generator."""
        u8, y = next(batches)
        x = random_flip(to_model_range(u8.to(self.device, non_blocking=True)), self.core.generator)
        return x, None if self.cfg.unconditional else y.to(self.device, non_blocking=True)

    def _end_of_epoch(self) -> None:
        """The checkpoint cadence: last every save_every_epochs (and at the end), a kept copy every
        keep_every_epochs; a max_steps stop inside an epoch saves last too."""
        cfg, pos = self.cfg, self.pos
        if pos.step_in_epoch < self.steps_per_epoch:      # max_steps reached inside an epoch
            self.save(ckpt_mod.LAST)
            return
        pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
        if pos.epoch % cfg.keep_every_epochs == 0:
            self.save(f"checkpoint-{pos.epoch:04d}.pth")
        if pos.epoch % cfg.save_every_epochs == 0 or pos.epoch == cfg.epochs or pos.step >= self.total_steps:
            self.save(ckpt_mod.LAST)

    def save(self, name: str) -> None:
        self._flush()                                     # a NaN loss stops the run before it is saved
        if not self.cfg.save_checkpoints:                 # benchmarks: the losses are flushed, nothing written
            return
        rng = dist_mod.all_gather_objects(ckpt_mod.rng_state(self.core.generator), self.info)  # every rank's
        if self.info.is_main:
            ckpt_mod.save_checkpoint(self.out_dir / name, state=self.core.state_dict(), step=self.pos.step,
                                     epoch=self.pos.epoch, step_in_epoch=self.pos.step_in_epoch, rng=rng,
                                     config=self.cfg.to_dict())
        dist_mod.barrier(self.info)

    # ---- logging ---------------------------------------------------------------------------------------
    def _start_log(self) -> None:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.out_dir / "config.json", {**cfg.to_dict(), "world_size": info.world_size, "lr_resolved":
                                                      self.lr, "global_batch": cfg.global_batch(info.world_size)})
        self.runlog = RunLog(self.out_dir, cfg.log, resume_step=self.pos.step if cfg.resume else None) \
            if info.is_main else None
        n_params = sum(p.numel() for p in self.core.net.parameters() if p.requires_grad)
        self.say(f"{cfg.model}: {n_params / 1e6:.2f}M params | {len(self.dataset)} images, "
                 f"{self.dataset.num_classes} classes | {info.world_size} process(es) on {self.device.type} | "
                 f"global batch {cfg.global_batch(info.world_size)} | lr {self.lr:.3g} | "
                 f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps", flush=True)
        self.bar = None
        if info.is_main and cfg.progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total_steps, initial=self.pos.step, desc="train", dynamic_ncols=True,
                            mininterval=1.0)
        self.t_start, self.step_start = time.perf_counter(), self.pos.step
        self.t_flush, self._epochs = self.t_start, []

    def _flush(self) -> None:
        """Read the losses of the steps since the last flush (one device sync; NaN -> NonFiniteLossError),
        log each of them (images/s: the mean over those steps) and print a console line."""
        rows, epochs = self.core.flush(), self._epochs
        self._epochs = []
        if not rows:
            return
        now = time.perf_counter()
        ips = len(rows) * self.cfg.global_batch(self.info.world_size) / max(now - self.t_flush, 1e-9)
        self.t_flush = now
        for (s, value, lr), ep in zip(rows, epochs):
            self.losses.append((s + 1, value))
            if self.runlog is not None:
                self.runlog.write(s + 1, ep, value, lr, ips)
        if not self.info.is_main:
            return
        step, ep, (_, value, lr) = rows[-1][0] + 1, epochs[-1], rows[-1]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.1f}", refresh=False)
        per_step = (now - self.t_start) / max(step - self.step_start, 1)
        msg = (f"step {step}/{self.total_steps} epoch {ep:.2f} loss {value:.4f} lr {lr:.3e} {ips:.1f} img/s "
               f"eta {_fmt_time(per_step * (self.total_steps - step))}")
        (self.bar.write(msg) if self.bar is not None else print(msg, flush=True))


# ---- command line ----------------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a JiT on an ImageFolder (CPU, one GPU, or under torchrun)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
    p.add_argument("--config", default=None, help="YAML file of defaults (flags override it)")
    add_config_flags(p, ImageNetConfig, title="config fields (override the YAML)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides_from_args(args, ImageNetConfig))
    if args.threads is not None and args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if not args.print_config:
        check_writable_dir(cfg.output_dir, "output_dir")   # before any data is read or a step is taken
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    result = train(cfg)
    if result["stopped"]:
        return 0
    print(f"done: {result['step']} steps, checkpoints in {result['output_dir']}", file=sys.stderr)
    return 0
