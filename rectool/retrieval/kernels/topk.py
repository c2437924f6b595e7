"""Exact top-K: per-row min-heaps (``rectool.topk``) fed block by block, and exclusion filters."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from rectool.retrieval.kernels.lists import contains_sorted
from rectool.topk import admits, heap_offer, heap_sort


@njit(cache=True, parallel=True)
def topk_update(scores: np.ndarray, col_offset: int, heap_s: np.ndarray, heap_i: np.ndarray, heap_n: np.ndarray,
                excl_offsets: np.ndarray, excl_sorted: np.ndarray) -> None:
    """Fold a block of scores (rows = users, columns = items ``col_offset + j``) into
    per-row min-heaps of size k (``rectool.topk``), skipping each row's excluded columns.

    The exact top-k under (score desc, column asc), whatever the blocking; a NaN score ranks
    as -inf (``rectool.topk``'s NaN rule). Finish with ``heap_sorted``. Scores [[.2, .9, .5]],
    k 2, nothing excluded -> after ``heap_sorted`` columns [[1, 2]], scores [[.9, .5]].
    """
    k = heap_s.shape[1]
    for r in prange(scores.shape[0]):
        excl = excl_sorted[excl_offsets[r]:excl_offsets[r + 1]]
        n = heap_n[r]
        hs = heap_s[r]
        hi = heap_i[r]
        for j in range(scores.shape[1]):
            s = scores[r, j]
            col = col_offset + j
            if not admits(hs, hi, n, k, s, col):
                continue
            if excl.shape[0] > 0 and contains_sorted(excl, col):
                continue
            n = heap_offer(hs, hi, n, k, s, col)
        heap_n[r] = n


@njit(cache=True)
def heap_sorted(heap_s: np.ndarray, heap_i: np.ndarray, heap_n: np.ndarray) -> None:
    """Sort each row's heap in place, best first (score desc, then column asc): ``rectool.topk.heap_sort``.
    (It used two argsorts: loaded from numba's cache in some processes, that version returned
    garbage indices; the heap is already half the work.)"""
    for r in range(heap_s.shape[0]):
        heap_sort(heap_s[r], heap_i[r], heap_n[r])


@njit(cache=True)
def first_k_kept(labels: np.ndarray, scores: np.ndarray, length: int, k: int, excl: np.ndarray,
                 out_l: np.ndarray, out_s: np.ndarray) -> int:
    """One row: copy the first ``k`` of ``labels[:length]`` not in ``excl`` (sorted) to ``out_l``/``out_s``;
    a negative label ends the row. Returns how many were copied. Labels [3, 1, 2], k 2, excl [1] -> [3, 2], 2."""
    o = 0
    for j in range(length):
        if o >= k or labels[j] < 0:
            break
        if excl.shape[0] > 0 and contains_sorted(excl, labels[j]):
            continue
        out_l[o] = labels[j]
        out_s[o] = scores[j]
        o += 1
    return o


@njit(cache=True)
def filter_rows(labels: np.ndarray, scores: np.ndarray, k: int, excl_offsets: np.ndarray,
                excl_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``k`` labels per row that are not excluded (negative labels end a row).
    Labels [[3, 1, 2]], k 2, exclude [[1]] -> [[3, 2]]."""
    n = labels.shape[0]
    out_l = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    for r in range(n):
        lengths[r] = first_k_kept(labels[r], scores[r], labels.shape[1], k,
                                  excl_sorted[excl_offsets[r]:excl_offsets[r + 1]], out_l[r], out_s[r])
    return out_l, out_s, lengths


@njit(cache=True, parallel=True)
def union_rows(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: ids (negative = padding) de-duplicated keeping each id's best score, the
    best ``k`` by score desc (ties: first seen first). Ids [[4, 2, 4]], scores [[1, 5, 7]],
    k 2 -> [[4, 2]], [[7, 5]]."""
    n, m = ids.shape
    out_i = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    for r in prange(n):
        order = np.argsort(-scores[r], kind="mergesort")
        seen = np.empty(m, dtype=np.int64)
        n_seen = 0
        o = 0
        for j in range(m):
            if o >= k:
                break
            item = ids[r, order[j]]
            if item < 0:
                continue
            dup = False
            for t in range(n_seen):
                if seen[t] == item:
                    dup = True
                    break
            if dup:
                continue
            seen[n_seen] = item
            n_seen += 1
            out_i[r, o] = item
            out_s[r, o] = scores[r, order[j]]
            o += 1
        lengths[r] = o
    return out_i, out_s, lengths
