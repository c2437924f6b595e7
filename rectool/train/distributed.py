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

from rectool.programs.device import resolve_device


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


def gather_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate each named array over ranks (rank order), on every rank; a rank may hold none."""
    if not dist.is_initialized():
        return arrays
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, arrays)
    names = sorted({k for p in parts for k in p})
    return {k: np.concatenate([p[k] for p in parts if k in p]) for k in names}


def average_row_grads(params: list[torch.nn.Parameter]) -> None:
    """Mean over ranks of the embedding tables' sparse row gradients, with dense collectives only.

    The touched row ids are gathered from every rank, each rank scatters its rows into a dense
    [union, dim] block, and one all-reduce sums the blocks: the same code under gloo and nccl
    (which has no sparse all-reduce), moving only rows some rank touched.
    """
    world = dist.get_world_size()
    for p in params:
        local = p.grad.coalesce() if p.grad is not None else None
        ids = local.indices()[0] if local is not None else torch.empty(0, dtype=torch.int64, device=p.device)
        union = torch.unique(torch.cat(_all_gather_varlen(ids)))
        block = torch.zeros((union.numel(), *p.shape[1:]), dtype=p.dtype, device=p.device)
        if local is not None and ids.numel():
            block[torch.searchsorted(union, ids)] = local.values()
        dist.all_reduce(block)
        p.grad = torch.sparse_coo_tensor(union.unsqueeze(0), block / world, p.shape, is_coalesced=True)


def _all_gather_varlen(values: torch.Tensor) -> list[torch.Tensor]:
    """``all_gather`` of 1-D tensors whose lengths differ by rank (padded to the longest)."""
    world = dist.get_world_size()
    size = torch.tensor([values.numel()], dtype=torch.int64, device=values.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=values.dtype, device=values.device)
    padded[:values.numel()] = values
    out = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return [o[:int(s.item())] for o, s in zip(out, sizes)]
