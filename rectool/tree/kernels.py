"""Numba kernels of the tree package: initial codes, attribute modes, beam search, layer sampling.

Each kernel is checked against a plain NumPy/Python reference in ``tests/test_tree_kernels.py``.
The balanced k-means kernels live in ``rectool.tree.kmeans_kernels``; the running top-k heap of
``merge_topk`` is ``rectool.topk`` (shared with retrieval's exact search).
"""

from __future__ import annotations

import numba
import numpy as np

from rectool.topk import heap_offer, heap_sort


@numba.njit(cache=True)
def init_codes(n_items: int, n_cluster: int) -> np.ndarray:
    """TorchEasyRec's initial-tree codes for items already sorted by (category, item id).

    A range ``[s, e)`` with code ``c`` is cut at ``s + i*m//n`` (m = e - s); part ``i``
    gets code ``n*c + n - i`` (so the first part is the rightmost child); a one-item range
    is a leaf. ``init_codes(5, 2)`` -> ``[6, 5, 4, 8, 7]`` (before pulling leaves down).
    """
    codes = np.zeros(n_items, dtype=np.int64)
    stack_s = np.empty(64 * n_cluster + 64, dtype=np.int64)
    stack_e = np.empty_like(stack_s)
    stack_c = np.empty_like(stack_s)
    stack_s[0], stack_e[0], stack_c[0] = 0, n_items, 0
    top = 1
    while top > 0:
        top -= 1
        s, e, c = stack_s[top], stack_e[top], stack_c[top]
        m = e - s
        if m <= 0:
            continue
        if m == 1:
            codes[s] = c
            continue
        for i in range(n_cluster):
            stack_s[top] = s + (i * m) // n_cluster
            stack_e[top] = s + ((i + 1) * m) // n_cluster
            stack_c[top] = n_cluster * c + n_cluster - i
            top += 1
    return codes


@numba.njit(cache=True)
def segment_modes(values: np.ndarray, rank: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_values: int,
                  first_seen: bool) -> np.ndarray:
    """Most frequent value code in each segment ``values[lo[j]:hi[j]]``.

    Ties go to the smallest code, or with ``first_seen`` to the value whose occurrence
    has the smallest ``rank`` in the segment (the one met first in item order). Codes
    ``< 0`` (nulls that do not count) are skipped; a segment with none gives -1.
    ``segment_modes([2, 1, 1, 2, -1], r, [0, 3], [3, 5], 3, False)`` -> ``[1, 2]``;
    with ``rank = [0, 1, 2, 3, 4]`` and ``first_seen`` -> ``[1, 2]``, with ``[9, 0, 1, 5, 6]`` -> ``[1, 2]``,
    and ``segment_modes([2, 1], [0, 1], [0], [2], 3, True)`` -> ``[2]``.
    """
    counts = np.zeros(n_values, dtype=np.int64)
    first = np.full(n_values, np.iinfo(np.int64).max, dtype=np.int64)
    out = np.empty(lo.size, dtype=np.int64)
    for j in range(lo.size):
        for i in range(lo[j], hi[j]):
            v = values[i]
            if v >= 0:
                counts[v] += 1
                if rank[i] < first[v]:
                    first[v] = rank[i]
        best, best_count, best_key = -1, 0, 0
        for i in range(lo[j], hi[j]):
            v = values[i]
            if v < 0 or counts[v] == 0:
                continue
            key = first[v] if first_seen else v
            if counts[v] > best_count or (counts[v] == best_count and key < best_key):
                best, best_count, best_key = v, counts[v], key
        for i in range(lo[j], hi[j]):
            if values[i] >= 0:
                counts[values[i]] = 0
                first[values[i]] = np.iinfo(np.int64).max
        out[j] = best
    return out


# ----------------------------------------------------------------------------- beam search


@numba.njit(cache=True, inline="always")
def _rank_key(value: float, bits: np.uint32, node: int) -> np.uint64:
    """(score, node) as one uint64 that orders like the rank: a higher score, then a smaller
    node, gives a larger key. ``bits`` are the float32 score's bits; NaN ranks as -inf and
    -0.0 ties with 0.0, as in the heap of ``rectool.topk``. Nodes must lie in [0, 2**32)."""
    if value != value:
        bits = np.uint32(0xFF800000)
    elif value == 0:
        bits = np.uint32(0)
    # negative floats: flip every bit; positive: flip the sign bit -> unsigned order = float order
    flip = ((bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF)) | np.uint32(0x80000000)
    return (np.uint64(bits ^ flip) << np.uint64(32)) | np.uint64(0xFFFFFFFF - node)


@numba.njit(cache=True, inline="always")
def _key_score_bits(key: np.uint64) -> np.uint32:
    high = np.uint32(key >> np.uint64(32))
    return high & np.uint32(0x7FFFFFFF) if high >> np.uint32(31) else ~high


@numba.njit(cache=True)
def _select_largest(keys: np.ndarray, m: int, k: int) -> None:
    """Quickselect: move the ``k`` largest of the distinct ``keys[:m]`` to the front, unordered."""
    lo, hi = 0, m - 1
    while hi > lo:
        if hi - lo == 1:  # two left: order them (the median of three needs three slots)
            if keys[lo] < keys[hi]:
                keys[lo], keys[hi] = keys[hi], keys[lo]
            return
        mid = (lo + hi) // 2
        a, b, c = keys[lo], keys[mid], keys[hi]  # median of three as the pivot, moved to hi
        if a < b:
            a, b = b, a
        if b < c:
            b, c = c, b
            if a < b:
                a, b = b, a
        keys[lo], keys[mid], keys[hi] = a, c, b
        store = lo
        for i in range(lo, hi):  # branch-free Lomuto partition: larger than the pivot goes first
            x = keys[i]
            keys[i] = keys[store]
            keys[store] = x
            store += x > b
        keys[hi] = keys[store]
        keys[store] = b
        if store == k - 1 or store == k:
            return
        if store > k:
            hi = store - 1
        else:
            lo = store + 1


def topk_segments(scores: np.ndarray, nodes: np.ndarray, offsets: np.ndarray, k: int, ordered: bool) -> tuple:
    """Best ``k`` (score desc, node asc; NaN ranks as -inf, ``rectool.topk``'s rule) of each user's segment
    ``offsets[b]:offsets[b+1]``.

    Nodes must be distinct within a segment and lie in [0, 2**32) (tree rows). ``ordered``
    sorts the k best, best first; otherwise they come in no particular order (enough to
    expand a beam).
    ``topk_segments([.1, .9, .5], [7, 8, 9], [0, 3], 2, True)`` -> nodes ``[[8, 9]]``, scores ``[[.9, .5]]``.
    Rows with fewer than ``k`` candidates are padded with node -1 and score -inf. Users in parallel.
    """
    return _topk_segments(np.ascontiguousarray(scores, dtype=np.float32), np.asarray(nodes, dtype=np.int64),
                          np.asarray(offsets, dtype=np.int64), k, ordered)


@numba.njit(cache=True, parallel=True)
def _topk_segments(scores: np.ndarray, nodes: np.ndarray, offsets: np.ndarray, k: int, ordered: bool) -> tuple:
    # each candidate becomes one sortable uint64 (score bits, then the node): the selection
    # compares and moves one word instead of a (float, int) pair -- 1.6x faster than that
    users = offsets.size - 1
    out_n = np.full((users, k), -1, dtype=np.int64)
    out_s = np.full((users, k), -np.inf, dtype=np.float32)
    out_bits = out_s.view(np.uint32)
    score_bits = scores.view(np.uint32)
    for b in numba.prange(users):
        start = offsets[b]
        m = offsets[b + 1] - start
        keys = np.empty(max(m, 1), dtype=np.uint64)
        for j in range(m):
            keys[j] = _rank_key(scores[start + j], score_bits[start + j], nodes[start + j])
        take = min(k, m)
        if m > k:
            _select_largest(keys, m, k)
        if ordered:
            keys[:take] = np.sort(keys[:take])[::-1]
        for j in range(take):
            out_bits[b, j] = _key_score_bits(keys[j])
            out_n[b, j] = 0xFFFFFFFF - np.int64(keys[j] & np.uint64(0xFFFFFFFF))
    return out_n, out_s


@numba.njit(cache=True)
def merge_topk(best_n: np.ndarray, best_s: np.ndarray, chunk_nodes: np.ndarray, chunk_scores: np.ndarray) -> None:
    """Fold a [users, C] block of scores for ``chunk_nodes`` into each user's running top-k, in place.

    ``best_n``/``best_s`` hold each user's best so far, best first (node -1 / -inf after); the
    heap is ``rectool.topk``'s, so the rank and the NaN rule are those of ``topk_segments``.
    Best [[7 (.5), -1]], chunk nodes [8, 9] scored [[.9, nan]] -> [[8 (.9), 7 (.5)]].
    """
    users, k = best_n.shape
    hs = np.empty(k, dtype=np.float64)
    hn = np.empty(k, dtype=np.int64)
    for b in range(users):
        size = 0
        for j in range(k):
            if best_n[b, j] >= 0:
                size = heap_offer(hs, hn, size, k, best_s[b, j], best_n[b, j])
        for j in range(chunk_nodes.size):
            size = heap_offer(hs, hn, size, k, chunk_scores[b, j], chunk_nodes[j])
        heap_sort(hs, hn, size)
        for j in range(k):
            best_s[b, j] = hs[j] if j < size else -np.inf
            best_n[b, j] = hn[j] if j < size else -1


@numba.njit(cache=True, parallel=True)
def expand_children(selected: np.ndarray, child_offsets: np.ndarray, node_ids: np.ndarray,
                    out: np.ndarray) -> np.ndarray:
    """Children of every kept node, flat, written to ``out[0]`` user index, ``out[1]`` node index,
    ``out[2]`` node id; returns the per-user offsets into them (``out`` must be large enough).

    ``selected`` is [users, k] node indices (-1 = empty slot). With children of node 1 at
    3:5, ``expand_children([[1, -1]], co, ids, out)`` -> ``[0, 2]`` and ``out[:, :2]`` =
    ``[[0, 0], [3, 4], [ids[3], ids[4]]]``. Users in parallel.
    """
    users, k = selected.shape
    # passes of independent loads (many cache misses in flight) rather than one loop whose
    # stores wait on each parent's child count: 2x faster on big trees
    first = np.zeros(users * k, dtype=np.int64)
    count = np.zeros(users * k, dtype=np.int64)
    per_user = np.zeros(users, dtype=np.int64)
    for b in numba.prange(users):
        total = 0
        for j in range(k):
            v = selected[b, j]
            if v >= 0:
                first[b * k + j] = child_offsets[v]
                count[b * k + j] = child_offsets[v + 1] - child_offsets[v]
                total += count[b * k + j]
        per_user[b] = total
    offsets = np.zeros(users + 1, dtype=np.int64)
    for b in range(users):
        offsets[b + 1] = offsets[b] + per_user[b]
    for b in numba.prange(users):
        pos = offsets[b]
        for t in range(b * k, (b + 1) * k):
            for c in range(first[t], first[t] + count[t]):
                out[0, pos] = b
                out[1, pos] = c
                out[2, pos] = node_ids[c]
                pos += 1
    return offsets


# ----------------------------------------------------------------------------- layer sampler


@numba.njit(cache=True)
def draw_excluding(positive: np.ndarray, sizes: np.ndarray, counts: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row and level, ``counts[l]`` distinct values of ``range(sizes[l])`` other than ``positive[b, l]``.

    Robert Floyd's sampling of a k-subset of the ``sizes[l] - 1`` other values, driven by
    the uniforms ``u[b, :]`` (one per draw), then shifted past the positive. Returns
    [rows, sum(counts)], grouped by level. ``draw_excluding([[1]], [3], [2], u)`` -> a
    permutation of ``[0, 2]``.
    """
    rows, n_levels = positive.shape
    total = 0
    kmax = 1
    for level in range(n_levels):
        total += counts[level]
        kmax = max(kmax, counts[level])
    tsize = 1
    while tsize < 2 * kmax:
        tsize *= 2
    mask = tsize - 1
    table = np.empty(tsize, dtype=np.int64)
    out = np.empty((rows, total), dtype=np.int64)
    for b in range(rows):
        col = 0
        for level in range(n_levels):
            k = counts[level]
            if k == 0:
                continue
            span = sizes[level] - 1
            table[:] = -1
            for j in range(span - k, span):
                t = np.int64(u[b, col] * (j + 1))
                if t > j:
                    t = j
                # t already drawn -> take j (never drawn: earlier draws are all < j)
                h = (t * 0x9E3779B1) & mask
                while table[h] >= 0 and table[h] != t:
                    h = (h + 1) & mask
                x = j if table[h] == t else t
                h = (x * 0x9E3779B1) & mask
                while table[h] >= 0:
                    h = (h + 1) & mask
                table[h] = x
                out[b, col] = x + 1 if x >= positive[b, level] else x
                col += 1
    return out
