"""Helpers over CSR lists (``offsets`` int64 n + 1, ``values``): membership, masking, row sorting, duplicates."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def contains_sorted(values: np.ndarray, x: np.int64) -> bool:
    """Binary search in a sorted array: ([1, 4, 9], 4) -> True, ([1, 4, 9], 5) -> False."""
    lo, hi = 0, values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < values.shape[0] and values[lo] == x


@njit(cache=True)
def mask_listed(scores: np.ndarray, rows: np.ndarray, values: np.ndarray, offsets: np.ndarray,
                sorted_values: np.ndarray) -> None:
    """In place: ``scores[i] = -inf`` where ``values[i]`` is in row ``rows[i]`` of the row-sorted CSR lists."""
    for i in range(scores.shape[0]):
        r = rows[i]
        if contains_sorted(sorted_values[offsets[r]:offsets[r + 1]], values[i]):
            scores[i] = -np.inf


@njit(cache=True)
def sort_rows(offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of ``values`` with each row sorted: offsets [0,2,3], values [5,1,4] -> [1,5,4]."""
    out = values.copy()
    for r in range(offsets.shape[0] - 1):
        out[offsets[r]:offsets[r + 1]] = np.sort(values[offsets[r]:offsets[r + 1]])
    return out


@njit(cache=True)
def first_duplicate_in_rows(offsets: np.ndarray, values: np.ndarray) -> int:
    """First row holding a value twice, or -1: offsets [0,2,4], values [1,2,3,3] -> 1."""
    for r in range(offsets.shape[0] - 1):
        row = np.sort(values[offsets[r]:offsets[r + 1]])
        for i in range(1, row.shape[0]):
            if row[i] == row[i - 1]:
                return r
    return -1
