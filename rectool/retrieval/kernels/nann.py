"""NANN beam-search steps: visited bitmaps, neighbour gathering, merging into top-ef lists.

Visited sets are bitmaps, one row of ``ceil(n_items / 8)`` bytes per user of a batch:
item v is visited by user u when ``visited[u, v >> 3] & (1 << (v & 7))``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from rectool.retrieval.kernels.topk import first_k_kept


@njit(cache=True)
def mark_visited(visited: np.ndarray, offsets: np.ndarray, nodes: np.ndarray) -> None:
    """Set the bits of ``nodes`` row by row: offsets [0,1], nodes [9] -> visited[0, 1] |= 2."""
    for u in range(offsets.shape[0] - 1):
        for p in range(offsets[u], offsets[u + 1]):
            v = nodes[p]
            visited[u, v >> 3] |= np.uint8(1 << (v & 7))


@njit(cache=True)
def neighbour_counts(cand_offsets: np.ndarray, cand_nodes: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Sum of the degrees of each user's candidates (an upper bound of what a gather yields).

    indptr [0,2,3] (node 0 has 2 neighbours, node 1 has 1), candidates [[0,1]] -> [3].
    """
    n = cand_offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.int64)
    for u in range(n):
        total = 0
        for c in range(cand_offsets[u], cand_offsets[u + 1]):
            node = cand_nodes[c]
            total += indptr[node + 1] - indptr[node]
        out[u] = total
    return out


@njit(cache=True, parallel=True)
def gather_unvisited(cand_offsets: np.ndarray, cand_nodes: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                     visited: np.ndarray, slot_offsets: np.ndarray, out_nodes: np.ndarray) -> np.ndarray:
    """Neighbours of each user's candidates not visited yet, each once, marked visited now.

    User u's new nodes go to ``out_nodes[slot_offsets[u]:]`` in order (candidate order, then
    neighbour-list order); returns how many per user. Graph 0->[1,2], 1->[2]; candidates
    [[0,1]], nothing visited -> out [1, 2], counts [2] (2 is found once).
    """
    n = cand_offsets.shape[0] - 1
    counts = np.zeros(n, dtype=np.int64)
    for u in prange(n):
        pos = slot_offsets[u]
        for c in range(cand_offsets[u], cand_offsets[u + 1]):
            node = cand_nodes[c]
            for e in range(indptr[node], indptr[node + 1]):
                v = indices[e]
                byte = v >> 3
                bit = np.uint8(1 << (v & 7))
                if visited[u, byte] & bit == 0:
                    visited[u, byte] |= bit
                    out_nodes[pos] = v
                    pos += 1
        counts[u] = pos - slot_offsets[u]
    return counts


@njit(cache=True)
def compact(values: np.ndarray, slot_offsets: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pack the first ``counts[u]`` values of each slot: slots [0,3,5], counts [1,2],
    values [7,0,0,8,9] -> offsets [0,1,3], values [7,8,9]."""
    n = counts.shape[0]
    offsets = np.zeros(n + 1, dtype=np.int64)
    for u in range(n):
        offsets[u + 1] = offsets[u] + counts[u]
    out = np.empty(offsets[n], dtype=values.dtype)
    for u in range(n):
        out[offsets[u]:offsets[u + 1]] = values[slot_offsets[u]:slot_offsets[u] + counts[u]]
    return offsets, out


@njit(cache=True, parallel=True)
def merge_into_top(top_nodes: np.ndarray, top_scores: np.ndarray, top_len: np.ndarray, ef: int,
                   new_offsets: np.ndarray, new_nodes: np.ndarray, new_scores: np.ndarray) -> np.ndarray:
    """Merge each user's newly scored nodes into their top-``ef`` list (kept sorted, best first).

    Returns how many new nodes entered per user. On equal scores the node already in the
    list stays ahead, and new nodes keep their gather order. NaN scores never enter.
    Top [[5 (0.9)]], ef 2, new [[6 (0.5), 7 (0.95)]] -> top [[7, 5]], counts [1].
    """
    n = top_len.shape[0]
    counts = np.zeros(n, dtype=np.int64)
    for u in prange(n):
        a, b = new_offsets[u], new_offsets[u + 1]
        length = top_len[u]
        full = length >= ef
        threshold = top_scores[u, length - 1] if full and length > 0 else -np.inf
        picked = np.empty(b - a, dtype=np.int64)
        m = 0
        for p in range(a, b):
            s = new_scores[p]
            if s == s and (not full or s > threshold):
                picked[m] = p
                m += 1
        if m == 0:
            continue
        picked = picked[:m]
        if m > ef:  # at most ef new nodes can enter: keep those >= the ef-th best (ties kept), sort only them
            cutoff = -np.partition(-new_scores[picked], ef - 1)[ef - 1]
            m = 0
            for q in range(picked.shape[0]):
                if new_scores[picked[q]] >= cutoff:
                    picked[m] = picked[q]
                    m += 1
            picked = picked[:m]
        picked = picked[np.argsort(-new_scores[picked], kind="mergesort")]
        out_nodes = np.empty(ef, dtype=top_nodes.dtype)
        out_scores = np.empty(ef, dtype=top_scores.dtype)
        i = j = o = 0
        while o < ef and (i < length or j < m):
            if j >= m or (i < length and top_scores[u, i] >= new_scores[picked[j]]):
                out_nodes[o] = top_nodes[u, i]
                out_scores[o] = top_scores[u, i]
                i += 1
            else:
                out_nodes[o] = new_nodes[picked[j]]
                out_scores[o] = new_scores[picked[j]]
                j += 1
            o += 1
        top_nodes[u, :o] = out_nodes[:o]
        top_scores[u, :o] = out_scores[:o]
        top_len[u] = o
        counts[u] = j
    return counts


@njit(cache=True)
def pick_unexpanded(top_nodes: np.ndarray, top_len: np.ndarray, expanded: np.ndarray,
                    limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's best ``limit`` nodes of its top list not expanded yet (bitmap ``expanded``), now marked.

    Top [[4, 2, 9]], 2 expanded, limit 1 -> offsets [0, 1], nodes [4]; the next call -> [9].
    """
    n = top_len.shape[0]
    picked = np.empty((n, max(limit, 1)), dtype=np.int32)
    counts = np.zeros(n, dtype=np.int64)
    for u in range(n):
        c = 0
        for i in range(top_len[u]):
            if c >= limit:
                break
            v = top_nodes[u, i]
            bit = np.uint8(1 << (v & 7))
            if expanded[u, v >> 3] & bit == 0:
                expanded[u, v >> 3] |= bit
                picked[u, c] = v
                c += 1
        counts[u] = c
    slots = np.arange(n + 1, dtype=np.int64) * picked.shape[1]
    return compact(picked.reshape(-1), slots, counts)


@njit(cache=True)
def take_top(top_nodes: np.ndarray, top_scores: np.ndarray, top_len: np.ndarray, k: int,
             excl_offsets: np.ndarray, excl_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``k`` entries of each sorted list, skipping the user's excluded nodes
    (``excl_sorted`` rows sorted). Top [[4, 2, 9]], k 2, exclude [[2]] -> [[4, 9]]."""
    n = top_len.shape[0]
    nodes = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    for u in range(n):
        lengths[u] = first_k_kept(top_nodes[u], top_scores[u], top_len[u], k,
                                  excl_sorted[excl_offsets[u]:excl_offsets[u + 1]], nodes[u], scores[u])
    return nodes, scores, lengths


@njit(cache=True, parallel=True, fastmath=True)
def dot_pairs(user_emb: np.ndarray, item_emb: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Inner products of (user, item) pairs: U [[1,2]], I [[3,4],[5,6]], pairs (0,1) -> [17]."""
    out = np.empty(users.shape[0], dtype=np.float32)
    d = user_emb.shape[1]
    for p in prange(users.shape[0]):
        u, i = users[p], items[p]
        acc = np.float32(0.0)
        for j in range(d):
            acc += user_emb[u, j] * item_emb[i, j]
        out[p] = acc
    return out
