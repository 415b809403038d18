"""Distributed training, opt-in by environment (the nanoGPT pattern).

DDP is on iff ``RANK`` is set (torchrun sets it; multi-node is torchrun's own flags). The backend is NCCL
on CUDA and gloo on the CPU. Without ``RANK`` everything runs as one plain process, no process group.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from manifold_lab.checks import ConfigError
from manifold_lab.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    ddp: bool
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistInfo:
    """Start the process group if torchrun launched us; pick this process's device (a device knob:
    auto, cpu, cuda, cuda:N). Under torchrun a CUDA run uses cuda:LOCAL_RANK."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    dev = resolve_device(device)
    if not ddp:
        return DistInfo(False, 0, 1, 0, dev)
    if dev.type == "cuda" and device.startswith("cuda:"):
        raise ConfigError(f"device {device!r}: under torchrun each process uses cuda:LOCAL_RANK; "
                          "set device to auto or cuda")
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if dev.type == "cuda":
        dev = torch.device(f"cuda:{local}")
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(True, rank, world, local, dev)


def cleanup(info: DistInfo) -> None:
    if info.ddp and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.ddp:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo | None) -> torch.Tensor:
    """Mean of a tensor over processes (a copy; the input is unchanged). info None: one process."""
    if info is None or not info.ddp:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every process's ``obj``, in rank order (a one-element list without DDP)."""
    if not info.ddp:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every process."""
    if not info.ddp:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
