"""Optimisers: a dense one for the network, a sparse one for the embedding tables, and the lr schedule.

Sparse choices (``optimizer.sparse.type``), applied to sparse row gradients:

* ``sparse_adam``: lazy Adam (only rows seen in a batch move), ``torch.optim.SparseAdam``'s
  update; on the CPU its row bookkeeping runs in numba kernels (``rectool.train.sparse_kernels``),
  several times faster than torch's sort-based ``coalesce`` and sparse adds;
* ``adamw``: the same lazy Adam with AdamW's decoupled weight decay (``weight_decay``, default
  0.01), applied like the moments to the rows a batch touched only: w_r <- (1 - lr·wd)·w_r,
  then the Adam step. A row no batch touches keeps its value, so a rare id is not decayed
  towards zero by steps that never saw it. Under several processes the decay applies to the rows
  any rank touched (``distributed.average_row_grads`` gives every rank that union), so all ranks
  stay equal;
* ``adagrad``: ``torch.optim.Adagrad`` (element-wise accumulators);
* ``rowwise_adagrad``: one accumulator per row (the mean of its squared gradient), as in
  FBGEMM / TorchRec: a D-times smaller state for large tables;
* ``dense``: the tables get dense gradients and join the dense optimiser.

Schedule: linear warm-up over ``warmup_steps``, then ``constant``, ``linear`` or
``cosine`` decay to ``min_lr_ratio`` at the last step, or ``exponential``
(``decay_rate`` per ``decay_steps``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rectool.train.config import OptimizerConfig
from rectool.train.sparse_kernels import coalesce_rows, lazy_adam_rows


class _RowScratch:
    """Per-table ``slot`` arrays for ``coalesce_rows`` (all -1 between calls; not optimiser state)."""

    def __init__(self) -> None:
        self.slots: dict[int, np.ndarray] = {}

    def row_grad(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unique rows, summed row gradients) of ``p``'s sparse or dense gradient."""
        grad = p.grad
        if not grad.is_sparse:
            rows = torch.nonzero(grad.abs().sum(1), as_tuple=True)[0]
            return rows, grad[rows]
        if grad.device.type != "cpu" or grad.dtype != torch.float32:
            grad = grad.coalesce()
            return grad.indices()[0], grad.values()
        slot = self.slots.get(id(p))
        if slot is None or slot.shape[0] != p.shape[0]:
            slot = self.slots[id(p)] = np.full(p.shape[0], -1, dtype=np.int32)
        rows, summed = coalesce_rows(grad._indices()[0].contiguous().numpy(),
                                     grad._values().contiguous().numpy(), slot)
        return torch.from_numpy(rows), torch.from_numpy(summed)


class LazyAdam(torch.optim.SparseAdam):
    """``torch.optim.SparseAdam`` with the CPU path in numba kernels; same state, same update.

    A param group's ``weight_decay`` (``LazyAdamW``; absent or 0 here) is AdamW's decoupled decay
    of the touched rows.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        self.scratch = _RowScratch()

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        fallback = any(p.grad is not None and (p.device.type != "cpu" or p.dtype != torch.float32
                                               or not p.is_contiguous())
                       for g in self.param_groups for p in g["params"])
        if fallback:
            self._decay_touched_rows()
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                rows, summed = self.scratch.row_grad(p)
                if rows.numel() == 0:
                    continue
                step = state["step"]
                step_size = float(group["lr"]) * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                lazy_adam_rows(p.detach().numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy(),
                               rows.numpy(), summed.numpy(), beta1, beta2, group["eps"], step_size, _keep(group))
        return loss

    def _decay_touched_rows(self) -> None:
        """torch's path (GPU, other dtypes): the decoupled decay of the rows in each sparse gradient, before
        ``SparseAdam``'s step (the order of ``torch.optim.AdamW``; the Adam step does not read the weights)."""
        for group in self.param_groups:
            keep = _keep(group)
            if keep == 1.0:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows = p.grad.coalesce().indices()[0] if p.grad.is_sparse else \
                    torch.nonzero(p.grad.abs().sum(1), as_tuple=True)[0]
                p.index_copy_(0, rows, p.index_select(0, rows) * keep)


def _keep(group: dict) -> float:
    """1 - lr·weight_decay: the factor AdamW's decoupled decay multiplies a weight by (1.0: no decay)."""
    return 1.0 - float(group["lr"]) * float(group.get("weight_decay", 0.0))


class LazyAdamW(LazyAdam):
    """Lazy AdamW: ``LazyAdam`` plus decoupled weight decay of the touched rows (``weight_decay``)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        self.defaults["weight_decay"] = weight_decay
        for group in self.param_groups:
            group.setdefault("weight_decay", weight_decay)


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per embedding row: s_r += mean(g_r²); w_r -= lr·g_r/(√s_r + eps)."""

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-8, initial_accumulator_value: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "eps": eps, "initial_accumulator_value": initial_accumulator_value})
        self.scratch = _RowScratch()

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.full((p.shape[0],), group["initial_accumulator_value"],
                                              dtype=p.dtype, device=p.device)
                rows, values = self.scratch.row_grad(p)
                state["sum"].index_add_(0, rows, values.pow(2).mean(1))
                std = state["sum"][rows].sqrt_().add_(group["eps"]).unsqueeze(1)
                p.index_add_(0, rows, -group["lr"] * values / std)
        return None


def build_optimizers(model: nn.Module, embedding_params: list[nn.Parameter], cfg: OptimizerConfig,
                     fused: bool) -> list[torch.optim.Optimizer]:
    # the sparse gradients come from embedding lookups and are valid by construction: skip torch's checks
    torch.sparse.check_sparse_tensor_invariants.disable()
    sparse_ids = {id(p) for p in embedding_params} if cfg.sparse.type != "dense" else set()
    dense = [p for p in model.parameters() if id(p) not in sparse_ids and p.requires_grad]
    d = cfg.dense
    if d.type == "sgd":
        opts: list[torch.optim.Optimizer] = [torch.optim.SGD(dense, lr=d.lr, momentum=d.momentum,
                                                             weight_decay=d.weight_decay)]
    else:
        cls = torch.optim.Adam if d.type == "adam" else torch.optim.AdamW
        opts = [cls(dense, lr=d.lr, betas=d.betas, weight_decay=d.weight_decay, fused=fused or None)]
    tables = [p for p in embedding_params if id(p) in sparse_ids]
    s = cfg.sparse
    if tables:
        if s.type == "sparse_adam":
            opts.append(LazyAdam(tables, lr=s.lr, eps=s.eps))
        elif s.type == "adamw":
            opts.append(LazyAdamW(tables, lr=s.lr, eps=s.eps, weight_decay=s.decay))
        elif s.type == "adagrad":
            opts.append(torch.optim.Adagrad(tables, lr=s.lr, eps=s.eps,
                                            initial_accumulator_value=s.initial_accumulator_value))
        else:
            opts.append(RowWiseAdagrad(tables, lr=s.lr, eps=s.eps,
                                       initial_accumulator_value=s.initial_accumulator_value))
    return opts


def lr_factor(step: int, total_steps: int, cfg: OptimizerConfig) -> float:
    """Multiplier of the base learning rates at ``step`` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "exponential":
        return cfg.decay_rate ** ((step - cfg.warmup_steps) / cfg.decay_steps)
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    shape = 1.0 - progress if cfg.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def build_schedulers(opts: list[torch.optim.Optimizer], total_steps: int, cfg: OptimizerConfig) -> list:
    return [torch.optim.lr_scheduler.LambdaLR(o, lambda step: lr_factor(step, total_steps, cfg)) for o in opts]
