"""Top-K metric kernels: hits / DCG / reciprocal rank per cut-off, overlaps, distinct items."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from rectool.retrieval.kernels.lists import contains_sorted


@njit(cache=True, parallel=True)
def rank_metrics(rec_offsets: np.ndarray, rec_items: np.ndarray, rec_rows: np.ndarray, truth_offsets: np.ndarray,
                 truth_sorted: np.ndarray, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per evaluated user t and cut-off ``ks[j]`` (ascending): hits, DCG (binary relevance,
    gain 1 / log2(rank + 2) for 0-based rank) and reciprocal rank of the first hit.

    User t's list is row ``rec_rows[t]`` of the recalls (-1: no list, all zero) and its
    truth row t (sorted). List [7, 3, 9], truth [3, 9], ks [1, 3] -> hits [0, 2],
    DCG [0, 1/log2(3) + 1/log2(4)], RR [0, 0.5].
    """
    n = rec_rows.shape[0]
    nk = ks.shape[0]
    hits = np.zeros((n, nk), dtype=np.int64)
    dcg = np.zeros((n, nk), dtype=np.float64)
    rr = np.zeros((n, nk), dtype=np.float64)
    kmax = ks[nk - 1]
    for t in prange(n):
        r = rec_rows[t]
        if r < 0:
            continue
        truth = truth_sorted[truth_offsets[t]:truth_offsets[t + 1]]
        items = rec_items[rec_offsets[r]:rec_offsets[r + 1]]
        h = 0
        d = 0.0
        first = -1
        j = 0
        for rank in range(min(items.shape[0], kmax)):
            while j < nk and rank >= ks[j]:
                hits[t, j], dcg[t, j] = h, d
                rr[t, j] = 1.0 / (first + 1) if first >= 0 else 0.0
                j += 1
            if truth.shape[0] > 0 and contains_sorted(truth, items[rank]):
                h += 1
                d += 1.0 / np.log2(rank + 2.0)
                if first < 0:
                    first = rank
        while j < nk:
            hits[t, j], dcg[t, j] = h, d
            rr[t, j] = 1.0 / (first + 1) if first >= 0 else 0.0
            j += 1
    return hits, dcg, rr


@njit(cache=True, parallel=True)
def overlap_at_k(a_offsets: np.ndarray, a_items: np.ndarray, a_rows: np.ndarray, b_offsets: np.ndarray,
                 b_items: np.ndarray, b_rows: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """|top-K of list a ∩ top-K of list b| per user and cut-off (ks ascending).

    a [1, 2, 3], b [3, 1, 5], ks [1, 2, 3] -> [0, 1, 2] (1 is in both top-2, 3 joins at K=3).
    """
    n = a_rows.shape[0]
    nk = ks.shape[0]
    kmax = ks[nk - 1]
    out = np.zeros((n, nk), dtype=np.int64)
    for t in prange(n):
        if a_rows[t] < 0 or b_rows[t] < 0:
            continue
        a = a_items[a_offsets[a_rows[t]]:a_offsets[a_rows[t] + 1]][:kmax]
        b = b_items[b_offsets[b_rows[t]]:b_offsets[b_rows[t] + 1]][:kmax]
        order = np.argsort(b)
        b_sorted = b[order]
        for ra in range(a.shape[0]):
            pos = np.searchsorted(b_sorted, a[ra])
            if pos < b_sorted.shape[0] and b_sorted[pos] == a[ra]:
                last = max(ra, order[pos])
                for j in range(nk):
                    if last < ks[j]:
                        out[t, j] += 1
    return out


@njit(cache=True)
def first_rank_counts(values: np.ndarray, ranks: np.ndarray, kmax: int) -> np.ndarray:
    """How many distinct values first appear at each rank (0..kmax-1) over all lists, so
    that ``cumsum(out)[K - 1]`` is the number of distinct items in all top-K lists.
    An open-addressing hash table of the values keeps it linear (ids may be 64-bit hashes).
    Values [5, 6, 5, 7], ranks [0, 1, 0, 1], kmax 2 -> [1, 2]."""
    size = 1
    while size < 2 * values.shape[0] + 2:
        size <<= 1
    mask = np.uint64(size - 1)
    keys = np.empty(size, dtype=np.int64)
    best = np.full(size, -1, dtype=np.int64)  # -1: empty slot
    for p in range(values.shape[0]):
        r = ranks[p]
        if r >= kmax:
            continue
        v = values[p]
        slot = (np.uint64(v) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20) & mask
        while best[slot] >= 0 and keys[slot] != v:
            slot = (slot + np.uint64(1)) & mask
        if best[slot] < 0:
            keys[slot] = v
            best[slot] = r
        elif r < best[slot]:
            best[slot] = r
    out = np.zeros(kmax, dtype=np.int64)
    for s in range(size):
        if best[s] >= 0:
            out[best[s]] += 1
    return out
