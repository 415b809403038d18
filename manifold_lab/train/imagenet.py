"""The full-scale JiT trainer: one code path for the CPU, one GPU and ``torchrun`` (DDP iff ``RANK`` is set).

    python -m manifold_lab train --config configs/jit_b16_in256.yaml --data-path /data/imagenet/train
    torchrun --nproc_per_node=8 -m manifold_lab train --config configs/jit_b16_in256.yaml ...

Every random draw of a training step (flip, t, eps, label drop) comes from one per-rank generator seeded
with ``seed + rank``; dropout uses the global torch RNG; the data order is DistributedSampler's per-epoch
permutation plus a position inside the epoch. All of it goes into each checkpoint, so a run stopped at step
k and resumed gives exactly the losses of an uninterrupted run (bit for bit on the CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from manifold_lab.checks import ConfigError
from manifold_lab.data.imagefolder import (ImageFolderDataset, ResumableDistributedSampler, collate_skip_none,
                                           random_flip, to_model_range)
from manifold_lab.denoiser import Denoiser
from manifold_lab.io import write_json
from manifold_lab.schedule import TimeSampler
from manifold_lab.train import checkpoint as ckpt_mod
from manifold_lab.train import distributed as dist_mod
from manifold_lab.train.config import ImageNetConfig, add_config_flags, load_config, overrides_from_args
from manifold_lab.train.ema import EMA
from manifold_lab.train.loop import NonFiniteLossError
from manifold_lab.train.lr_sched import lr_at, set_lr


# ---- builders (shared with sampling) ---------------------------------------------------------------
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
    return Denoiser(pred=cfg.pred, loss=cfg.loss, t_sampler=TimeSampler(cfg.t_sampler, cfg.p_mean, cfg.p_std),
                    t_eps=cfg.t_eps, noise_scale=cfg.resolved_noise_scale,
                    num_classes=None if cfg.unconditional else cfg.num_classes,
                    label_drop=0.0 if cfg.unconditional else cfg.label_drop)


def autocast(cfg_precision: str, device: torch.device):
    """bf16 autocast on CUDA (precision auto/bf16), on the CPU only if asked (bf16); else no autocast."""
    use = cfg_precision == "bf16" or (cfg_precision == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases and 1-D parameters (norms, embeddings' scales) get none."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---- logging ---------------------------------------------------------------------------------------
class RunLog:
    """Rank-0 step log: a CSV (``log.csv``, full-precision losses) and/or TensorBoard, plus console lines."""

    COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s")

    def __init__(self, out_dir: Path, kind: str, *, resume_step: int | None):
        self.csv = out_dir / "log.csv" if kind in ("csv", "both") else None
        self.tb = None
        if kind in ("tensorboard", "both"):
            self.tb = self.check_tensorboard()(str(out_dir / "tb"))
        if self.csv is not None:
            rows = []
            if resume_step is not None and self.csv.exists():   # drop rows a killed run wrote after the ckpt
                lines = self.csv.read_text().splitlines()[1:]
                rows = [ln for ln in lines if ln and int(ln.split(",")[0]) <= resume_step]
            self.csv.write_text(",".join(self.COLUMNS) + "\n" + "".join(r + "\n" for r in rows))

    @staticmethod
    def check_tensorboard():
        """torch's SummaryWriter class, or a ConfigError saying how to get it."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log: tensorboard needs the tensorboard package (pip install tensorboard); "
                              "or use --log csv") from None
        return SummaryWriter

    def write(self, step: int, epoch: float, loss: float, lr: float, ips: float) -> None:
        if self.csv is not None:
            with open(self.csv, "a") as f:
                f.write(f"{step},{epoch!r},{loss!r},{lr!r},{ips:.2f}\n")
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/images_per_s", ips, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(path: str | Path):
    """The CSV step log as a DataFrame."""
    import pandas as pd

    return pd.read_csv(path)


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# keys that may change between a run and its resumption without a warning
_RUN_ONLY_KEYS = {"resume", "stop_at_step", "max_steps", "epochs", "progress", "log_every", "num_workers",
                  "output_dir", "save_every_steps", "save_every_epochs", "keep_every_epochs", "data_path", "log"}


# ---- training --------------------------------------------------------------------------------------
def train(cfg: ImageNetConfig) -> dict:
    """Train per ``cfg``; returns {"step", "epoch", "losses": [(step, loss)] of this run, "output_dir"}."""
    info = dist_mod.setup()
    try:
        return _train(cfg, info)
    finally:
        dist_mod.cleanup(info)


def _train(cfg: ImageNetConfig, info: dist_mod.DistInfo) -> dict:
    device = info.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out_dir = Path(cfg.output_dir)
    say = print if info.is_main else (lambda *a, **k: None)

    if cfg.log in ("tensorboard", "both"):            # fail on every rank, before any collective
        RunLog.check_tensorboard()
    # data first: a bad folder should fail before a big model is built
    dataset = ImageFolderDataset(cfg.data_path, cfg.img_size, bad_images=cfg.bad_images)
    if not cfg.unconditional and dataset.num_classes > cfg.num_classes:
        raise ConfigError(f"{cfg.data_path} has {dataset.num_classes} class folders but num_classes is "
                          f"{cfg.num_classes}; raise num_classes or set unconditional: true")
    sampler = ResumableDistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=cfg.seed)
    micro_per_epoch = sampler.num_samples // cfg.batch_size
    steps_per_epoch = micro_per_epoch // cfg.accum_steps
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(dataset)} images are fewer than one global batch "
                          f"({cfg.global_batch(info.world_size)}); lower batch_size or accum_steps")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=True,
        pin_memory=device.type == "cuda", collate_fn=collate_skip_none,
        generator=torch.Generator().manual_seed(cfg.seed),   # keeps the global RNG untouched by iter()
        persistent_workers=False)

    torch.manual_seed(cfg.seed)                       # identical initial weights on every rank
    net = build_model(cfg).to(device)
    emas = {d: EMA(net, d) for d in cfg.ema_decays}
    denoiser = build_denoiser(cfg)
    lr = cfg.resolved_lr(info.world_size)
    opt = torch.optim.AdamW(param_groups(net, cfg.weight_decay), lr=lr, betas=tuple(cfg.betas))

    seed = cfg.seed + info.rank                       # per-rank stream of every training draw
    gen = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    step, epoch, step_in_epoch = 0, 0, 0
    if cfg.resume:
        state, path = ckpt_mod.load_checkpoint(cfg.resume, map_location="cpu")
        if list(state["ema"]) != [str(d) for d in emas]:
            raise ConfigError(f"{path} holds EMAs {list(state['ema'])}, the config asks for "
                              f"{list(cfg.ema_decays)}; set ema_decays to match")
        changed = sorted(k for k, v in state["config"].items() if k not in _RUN_ONLY_KEYS
                         and cfg.to_dict().get(k) != v)
        if changed:
            say(f"warning: the config differs from the checkpoint's in {', '.join(changed)}", flush=True)
        net.load_state_dict(state["model"])
        for e, sd in zip(emas.values(), state["ema"].values()):
            e.load_state_dict(sd)
        opt.load_state_dict(state["optimizer"])
        step, epoch, step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        if len(state["rng"]) == info.world_size:
            ckpt_mod.set_rng_state(state["rng"][info.rank], gen)
        else:
            say(f"warning: checkpoint was written by {len(state['rng'])} process(es), this run has "
                f"{info.world_size}; the random streams restart (training continues, not bit-exactly)")
        say(f"resumed from {path} (step {step}, epoch {epoch}, step {step_in_epoch} of the epoch)", flush=True)
    elif (out_dir / ckpt_mod.LAST).exists():
        raise ConfigError(f"{out_dir} already holds {ckpt_mod.LAST}; pass --resume {out_dir} to continue "
                          "that run, or choose another --output-dir")

    model: nn.Module = net
    if cfg.compile and ":" in cfg.model:
        model = torch.compile(net)
    if info.ddp:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                    else None)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", {**cfg.to_dict(), "world_size": info.world_size, "lr_resolved": lr,
                                             "global_batch": cfg.global_batch(info.world_size)})
    runlog = RunLog(out_dir, cfg.log, resume_step=step if cfg.resume else None) if info.is_main else None
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    say(f"{cfg.model}: {n_params / 1e6:.2f}M params | {len(dataset)} images, {dataset.num_classes} classes | "
        f"{info.world_size} process(es) on {device.type} | global batch {cfg.global_batch(info.world_size)} | "
        f"lr {lr:.3g} | {steps_per_epoch} steps/epoch, {total_steps} steps", flush=True)

    def save(name: str) -> None:
        rng = dist_mod.all_gather_objects(ckpt_mod.rng_state(gen), info)   # every rank's streams
        if info.is_main:
            ckpt_mod.save_checkpoint(out_dir / name, model=net, emas=emas, optimizer=opt, step=step, epoch=epoch,
                                     step_in_epoch=step_in_epoch, rng=rng, config=cfg.to_dict())
        dist_mod.barrier(info)

    bar = None
    if info.is_main and cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True, mininterval=1.0)
    losses: list[tuple[int, float]] = []
    model.train()
    t_start, step_start = time.perf_counter(), step
    stopped = False
    while step < total_steps and not stopped:
        sampler.set_epoch(epoch, start=step_in_epoch * cfg.accum_steps * cfg.batch_size)
        batches = iter(loader)
        while step_in_epoch < steps_per_epoch and step < total_steps:
            t0 = time.perf_counter()
            cur_lr = lr_at(epoch + step_in_epoch / steps_per_epoch, lr=lr, warmup_epochs=cfg.warmup_epochs,
                           epochs=cfg.epochs, schedule=cfg.lr_schedule, min_lr=cfg.min_lr)
            set_lr(opt, cur_lr)
            loss_sum = torch.zeros((), device=device)
            for micro in range(cfg.accum_steps):
                u8, y = next(batches)
                x = random_flip(to_model_range(u8.to(device, non_blocking=True)), gen)
                y = None if cfg.unconditional else y.to(device, non_blocking=True)
                sync = micro == cfg.accum_steps - 1
                ctx = model.no_sync() if info.ddp and not sync else contextlib.nullcontext()
                with ctx:
                    with autocast(cfg.precision, device):
                        loss = denoiser.loss_per_sample(model, x, y, generator=gen).float().mean()
                    (loss / cfg.accum_steps).backward()
                loss_sum += loss.detach()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            for e in emas.values():
                e.update(net)
            step += 1
            step_in_epoch += 1
            value = dist_mod.all_reduce_mean(loss_sum / cfg.accum_steps, info).item()
            if not math.isfinite(value):
                raise NonFiniteLossError(f"loss is {value} at step {step}; lower the lr (now {cur_lr:g}) "
                                         "or check the data")
            losses.append((step, value))
            ips = cfg.global_batch(info.world_size) / max(time.perf_counter() - t0, 1e-9)
            if info.is_main:
                ep = epoch + step_in_epoch / steps_per_epoch
                runlog.write(step, ep, value, cur_lr, ips)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4f}", lr=f"{cur_lr:.2e}", img_s=f"{ips:.1f}", refresh=False)
                if step % cfg.log_every == 0 or step == total_steps:
                    per_step = (time.perf_counter() - t_start) / (step - step_start)
                    msg = (f"step {step}/{total_steps} epoch {ep:.2f} loss {value:.4f} lr {cur_lr:.3e} "
                           f"{ips:.1f} img/s eta {_fmt_time(per_step * (total_steps - step))}")
                    (bar.write(msg) if bar is not None else print(msg, flush=True))
            if cfg.save_every_steps and step % cfg.save_every_steps == 0:
                save(ckpt_mod.LAST)
            if cfg.stop_at_step is not None and step >= cfg.stop_at_step:
                save(ckpt_mod.LAST)
                say(f"stopped at step {step} as asked (stop_at_step); resume with --resume {out_dir}", flush=True)
                stopped = True
                break
        if stopped:
            break
        if step_in_epoch >= steps_per_epoch:   # epoch finished
            epoch, step_in_epoch = epoch + 1, 0
            if epoch % cfg.keep_every_epochs == 0:
                save(f"checkpoint-{epoch:04d}.pth")
            if epoch % cfg.save_every_epochs == 0 or epoch == cfg.epochs or step >= total_steps:
                save(ckpt_mod.LAST)
        elif step >= total_steps:              # max_steps reached inside an epoch
            save(ckpt_mod.LAST)
    if bar is not None:
        bar.close()
    if runlog is not None:
        runlog.close()
    return {"step": step, "epoch": epoch, "losses": losses, "output_dir": str(out_dir), "stopped": stopped}


# ---- command line ----------------------------------------------------------------------------------
def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a JiT on an ImageFolder (CPU, one GPU, or under torchrun)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU runs)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, overrides_from_args(args))
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
