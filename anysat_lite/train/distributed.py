"""Process-group helpers: the same code runs alone or under ``torchrun`` (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UserError

__all__ = [
    "DistInfo",
    "init_distributed",
    "device_for",
    "barrier",
    "cleanup",
    "all_mean",
    "all_max",
    "ranks_where",
    "gather_objects",
]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun) and pick the device.

    ``device``: ``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` (each process its
    ``LOCAL_RANK``'s GPU), ``cuda:N`` (GPU N when alone, ``LOCAL_RANK``'s under torchrun) or ``mps``
    (Apple's GPU; one process only, as torch has no process group for it).
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise UserError(f"train.device={device}: this machine has no CUDA device; use train.device=cpu or auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(
                "train.device=mps: this machine has no MPS (Apple GPU) device; use train.device=cpu or auto"
            )
        if world > 1:
            raise UserError(
                f"train.device=mps runs one process, got WORLD_SIZE={world} (torchrun); run it without torchrun, "
                "or use train.device=cpu for several processes"
            )
        return DistInfo(rank, world, local, torch.device("mps"))
    if use_cuda:
        index = local
        if device.startswith("cuda:") and world == 1:  # one process: the GPU named; under torchrun: LOCAL_RANK's
            index, n = int(device.partition(":")[2]), torch.cuda.device_count()
            if index >= n:
                raise UserError(
                    f"train.device={device}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}; "
                    "choose one of them"
                )
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def device_for(train_device: str) -> str:
    """The device a ``train.device`` names on this machine, without refusing anything (the probes' and the
    benchmark's choice): the CPU when this machine has no GPU of that kind, and the first CUDA GPU when
    ``cuda:N`` names one beyond this machine's count.  :func:`init_distributed` is the strict version."""
    if train_device == "mps":
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if train_device == "cpu" or not torch.cuda.is_available():
        return "cpu"
    index = int(train_device.partition(":")[2] or 0)
    return train_device if train_device != "auto" and index < torch.cuda.device_count() else "cuda"


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over processes (in place; ``values`` itself without a process group)."""
    if _active():
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def all_max(values: list[int], device) -> list[int]:
    """Element-wise maximum of an integer list over processes (the list itself without a process group)."""
    if not _active() or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def ranks_where(flag: bool, device) -> list[int]:
    """The ranks of every process on which ``flag`` is true (all processes must call it, as a collective).

    One small all-reduce: a process that meets a problem (e.g. a non-finite loss) lets every other
    process stop at the same point instead of waiting for it in the next collective.
    """
    if not _active():
        return [0] if flag else []
    flags = torch.zeros(dist.get_world_size(), dtype=torch.int32, device=device)
    flags[dist.get_rank()] = int(flag)
    dist.all_reduce(flags)
    return flags.nonzero().flatten().tolist()


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` without a process group)."""
    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
