"""Sparse optimisers: the numba row kernels against torch's own sparse Adam and a plain row-wise Adagrad."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rectool.train.optim import LazyAdam, RowWiseAdagrad
from rectool.train.sparse_kernels import coalesce_rows


def _lookup_grads(table: torch.nn.Parameter, ids: torch.Tensor, seed: int) -> None:
    """A sparse gradient with repeated rows, as an embedding lookup makes it."""
    torch.manual_seed(seed)
    out = F.embedding(ids, table, sparse=True)
    (out * torch.randn_like(out)).sum().backward()


def test_coalesce_rows_sums_repeats_and_leaves_slots_clean():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 50, size=400).astype(np.int64)
    vals = rng.standard_normal((400, 3)).astype(np.float32)
    slot = np.full(50, -1, dtype=np.int32)
    rows, summed = coalesce_rows(idx, vals, slot)
    assert (slot == -1).all()
    assert sorted(rows.tolist()) == sorted(set(idx.tolist()))
    for r, s in zip(rows, summed):
        np.testing.assert_allclose(s, vals[idx == r].sum(0), rtol=1e-5, atol=1e-5)


def test_lazy_adam_equals_torch_sparse_adam():
    torch.manual_seed(0)
    init = torch.randn(40, 4)
    ours, ref = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    opt_ours, opt_ref = LazyAdam([ours], lr=0.05), torch.optim.SparseAdam([ref], lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        ids = torch.randint(0, 25, (3, 30), generator=gen)  # rows 25..39 never move
        for p, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            _lookup_grads(p, ids, seed=step)
            opt.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.detach()[25:], init[25:])
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt_ours.state[ours][key], opt_ref.state[ref][key], rtol=1e-5, atol=1e-7)
    assert opt_ours.state[ours]["step"] == 6


def test_lazy_adam_state_loads_into_torch_sparse_adam():
    p = torch.nn.Parameter(torch.randn(10, 2))
    opt = LazyAdam([p], lr=0.1)
    _lookup_grads(p, torch.tensor([1, 1, 3]), seed=0)
    opt.step()
    ref = torch.optim.SparseAdam([p], lr=0.1)
    ref.load_state_dict(opt.state_dict())  # same state layout: checkpoints stay interchangeable
    assert ref.state[p]["step"] == 1


def test_rowwise_adagrad_matches_a_plain_loop():
    torch.manual_seed(0)
    init = torch.randn(12, 3)
    p = torch.nn.Parameter(init.clone())
    opt = RowWiseAdagrad([p], lr=0.1, eps=1e-8)
    ids = torch.tensor([2, 5, 2, 7])
    _lookup_grads(p, ids, seed=3)
    grad = p.grad.to_dense()
    opt.step()
    expected = init.clone()
    for r in (2, 5, 7):
        s = grad[r].pow(2).mean()
        expected[r] -= 0.1 * grad[r] / (s.sqrt() + 1e-8)
    torch.testing.assert_close(p.detach(), expected)
