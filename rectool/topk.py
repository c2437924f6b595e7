"""The one heap top-k kernel: a min-heap of the best ``k`` (score, index) pairs, in numba.

Retrieval's exact search (``rectool.retrieval.kernels.topk``: items scored block by block)
and the tree's beam search (``rectool.tree.kernels.merge_topk``: leaves scored chunk by
chunk) both keep their running top-k with it. It sits below both (it imports nothing of
rectool), so neither has to import the other.

Rank: score descending, then index ascending (on equal scores the smaller index wins),
so the result is the exact top-k whatever order the candidates come in.

NaN rule: a NaN score ranks as -inf. It is kept (a row still fills up to ``k``), stored and
returned as -inf, and tied with -inf by index; so it never comes ahead of a finite score.
(``rectool.tree.kernels.topk_segments`` ranks NaN the same way.) -0.0 ties with 0.0.

The heap lives in two arrays the caller owns, ``hs`` (scores) and ``hi`` (indices), with
``n`` entries used; the worst kept pair is at the root ``[0]``::

    hs, hi, n = np.empty(2), np.empty(2, np.int64), 0
    for idx, s in enumerate([0.5, nan, 0.9, 0.5]):
        n = heap_offer(hs, hi, n, 2, s, idx)
    heap_sort(hs, hi, n)        # hs [0.9, 0.5], hi [2, 0]

With scores [nan, -1.0] and k 2 the result is [-1.0, -inf], indices [1, 0].
``tests/test_topk.py`` checks it against a plain sort.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def rank_score(s: float) -> float:
    """The score a candidate ranks (and is kept) by: NaN -> -inf, anything else unchanged."""
    return -np.inf if s != s else s


@njit(cache=True, inline="always")
def worse(sa: float, ia: int, sb: float, ib: int) -> bool:
    """Whether (sa, ia) ranks below (sb, ib): a lower score, or an equal score and a larger index."""
    return sa < sb or (sa == sb and ia > ib)


@njit(cache=True)
def sift_down(hs: np.ndarray, hi: np.ndarray, n: int, pos: int) -> None:
    """Restore the min-heap (the worst pair nearest the root) below ``pos``."""
    while True:
        left = 2 * pos + 1
        if left >= n:
            return
        child = left
        right = left + 1
        if right < n and worse(hs[right], hi[right], hs[left], hi[left]):
            child = right
        if not worse(hs[child], hi[child], hs[pos], hi[pos]):
            return
        hs[child], hs[pos] = hs[pos], hs[child]
        hi[child], hi[pos] = hi[pos], hi[child]
        pos = child


@njit(cache=True, inline="always")
def admits(hs: np.ndarray, hi: np.ndarray, n: int, k: int, s: float, idx: int) -> bool:
    """Whether ``heap_offer`` would keep (s, idx): the heap is not full, or it beats the root.
    A cheap test to run before a costlier one (an exclusion lookup)."""
    return n < k or (k > 0 and worse(hs[0], hi[0], rank_score(s), idx))


@njit(cache=True)
def heap_offer(hs: np.ndarray, hi: np.ndarray, n: int, k: int, s: float, idx: int) -> int:
    """Offer (s, idx) to a heap of ``n`` entries that keeps the best ``k``; returns the new ``n``."""
    s = rank_score(s)
    if n < k:  # sift up
        pos = n
        hs[pos], hi[pos] = s, idx
        while pos > 0:
            parent = (pos - 1) >> 1
            if not worse(hs[pos], hi[pos], hs[parent], hi[parent]):
                break
            hs[pos], hs[parent] = hs[parent], hs[pos]
            hi[pos], hi[parent] = hi[parent], hi[pos]
            pos = parent
        return n + 1
    if k > 0 and worse(hs[0], hi[0], s, idx):
        hs[0], hi[0] = s, idx
        sift_down(hs, hi, n, 0)
    return n


@njit(cache=True)
def heap_sort(hs: np.ndarray, hi: np.ndarray, n: int) -> None:
    """Sort the heap's ``n`` entries in place, best first: heapsort, the worst moved to the end each step."""
    end = n
    while end > 1:
        end -= 1
        hs[0], hs[end] = hs[end], hs[0]
        hi[0], hi[end] = hi[end], hi[0]
        sift_down(hs, hi, end, 0)
