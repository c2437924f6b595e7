"""torch.distributed plumbing: set-up from the launcher's environment, gathers, rank-0 gating.

``rectool train --nproc N`` re-launches itself under ``torch.distributed.run``; a user's
own ``torchrun --nproc-per-node N -m rectool train ...`` works the same: both set RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT, which ``setup`` reads. gloo on CPU, nccl
on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(choice: str, local_rank: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device(choice)


def setup(device_choice: str = "auto") -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_array(values: np.ndarray) -> np.ndarray:
    """Concatenate a 1-D/2-D array from every rank (same dtype, any length), on every rank."""
    if not dist.is_initialized():
        return values
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)


def mean_scalar(value: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (a decision all ranks must share)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def broadcast_object(obj):  # noqa: ANN001, ANN201
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def average_sparse_grads(params: list[torch.nn.Parameter]) -> None:
    """Mean of the sparse row gradients over ranks (gloo all-reduces sparse tensors)."""
    world = dist.get_world_size()
    for p in params:
        if p.grad is None:  # this rank did not touch the table: contribute an empty gradient
            p.grad = torch.sparse_coo_tensor(torch.empty(1, 0, dtype=torch.int64), torch.empty(0, *p.shape[1:]),
                                             p.shape)
        grad = p.grad.coalesce()
        dist.all_reduce(grad)
        p.grad = grad.coalesce() / world
