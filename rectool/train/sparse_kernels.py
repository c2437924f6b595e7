"""Numba kernels for sparse (row) gradients of embedding tables on the CPU.

An embedding lookup's gradient is a list of (row, gradient) pairs with repeated rows.
torch sorts them (``coalesce``) and applies the update with several sparse-dense adds,
which costs more than the whole forward pass of a DeepFM step. These kernels do it in
two linear passes, with a per-table scratch array (``slot``: -1, or a row's place in this
step's unique rows) instead of a sort:

    rows, summed = coalesce_rows(indices, values, slot)   # unique rows, first-seen order
    lazy_adam_rows(weight, exp_avg, exp_avg_sq, rows, summed, beta1, beta2, eps, step_size, keep)

``lazy_adam_rows`` is ``torch.optim.SparseAdam``'s update (moments and weights move only
on the rows of this step); ``keep`` = 1 - lr·weight_decay makes it AdamW's (decoupled decay,
also only on those rows; 1.0 for Adam). Checked against torch in ``tests/test_optim.py`` and
``tests/test_training_parity.py``.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def coalesce_rows(indices: np.ndarray, values: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``values`` [N, D] of repeated ``indices`` [N]: (unique rows [U], sums [U, D]).

    ``slot`` (int32, one entry per table row) must be all -1 and is left so.
    """
    n, dim = values.shape
    rows = np.empty(n, dtype=np.int64)
    place = np.empty(n, dtype=np.int64)
    u = 0
    for i in range(n):
        r = indices[i]
        s = slot[r]
        if s < 0:
            s = u
            slot[r] = u
            rows[u] = r
            u += 1
        place[i] = s
    summed = np.zeros((u, dim), dtype=values.dtype)
    for i in range(n):
        s = place[i]
        for d in range(dim):
            summed[s, d] += values[i, d]
    for j in range(u):
        slot[rows[j]] = -1
    return rows[:u], summed


@numba.njit(cache=True, error_model="numpy")  # no zero-division branch: the loop vectorises
def lazy_adam_rows(weight: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray, rows: np.ndarray,
                   grads: np.ndarray, beta1: float, beta2: float, eps: float, step_size: float,
                   keep: float) -> None:
    """Adam(W) on ``rows`` only, in place: m += (1-β1)(g-m); v += (1-β2)(g²-v); w = keep·w - step_size·m/(√v+ε).

    ``keep`` is 1 - lr·weight_decay (AdamW's decoupled decay) or 1.0 (Adam: w·1.0 is w, bit for bit).
    """
    dim = grads.shape[1]
    for j in range(rows.shape[0]):
        r = rows[j]
        for d in range(dim):
            g = grads[j, d]
            m = exp_avg[r, d] + (g - exp_avg[r, d]) * (1.0 - beta1)
            v = exp_avg_sq[r, d] + (g * g - exp_avg_sq[r, d]) * (1.0 - beta2)
            exp_avg[r, d] = m
            exp_avg_sq[r, d] = v
            weight[r, d] = weight[r, d] * keep - step_size * m / (math.sqrt(v) + eps)
