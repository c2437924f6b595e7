"""Baseline kernels: item-kNN neighbours and scores, popularity with exclusions."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from rectool.retrieval.kernels.lists import contains_sorted
from rectool.retrieval.kernels.topk import first_k_kept


@njit(cache=True, parallel=True)
def item_neighbours(item_ptr: np.ndarray, item_users: np.ndarray, user_ptr: np.ndarray, user_items: np.ndarray,
                    n_neighbours: int, cosine: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n_neighbours`` most similar items of each item, from a binary user x item
    matrix given both ways (item -> users, user -> items; dense indices).

    Similarity: co-occurrence count c_ij (users with both), or cosine c_ij / sqrt(n_i n_j).
    Users [[0, 1], [0, 1, 2]], co-occurrence -> item 0: [1 (2), 2 (1)].
    """
    n_items = item_ptr.shape[0] - 1
    nbr = np.full((n_items, n_neighbours), -1, dtype=np.int32)
    sim = np.zeros((n_items, n_neighbours), dtype=np.float32)
    lengths = np.zeros(n_items, dtype=np.int64)
    n_chunks = min(n_items, 256)
    for c in prange(n_chunks):
        acc = np.zeros(n_items, dtype=np.float32)
        touched = np.empty(n_items, dtype=np.int64)
        for i in range(c * n_items // n_chunks, (c + 1) * n_items // n_chunks):
            nt = 0
            for p in range(item_ptr[i], item_ptr[i + 1]):
                u = item_users[p]
                for q in range(user_ptr[u], user_ptr[u + 1]):
                    j = user_items[q]
                    if j == i:
                        continue
                    if acc[j] == 0:
                        touched[nt] = j
                        nt += 1
                    acc[j] += 1
            sims = np.empty(nt, dtype=np.float32)
            n_i = item_ptr[i + 1] - item_ptr[i]
            for t in range(nt):
                j = touched[t]
                s = acc[j]
                if cosine:
                    s = s / np.sqrt(np.float32(n_i) * np.float32(item_ptr[j + 1] - item_ptr[j]))
                sims[t] = s
                acc[j] = 0
            order = np.argsort(-sims, kind="mergesort")[:n_neighbours]
            for t in range(order.shape[0]):
                nbr[i, t] = touched[order[t]]
                sim[i, t] = sims[order[t]]
            lengths[i] = order.shape[0]
    return nbr, sim, lengths


@njit(cache=True, parallel=True)
def score_by_neighbours(hist_ptr: np.ndarray, hist_items: np.ndarray, nbr: np.ndarray, sim: np.ndarray,
                        nbr_len: np.ndarray, excl_ptr: np.ndarray, excl_sorted: np.ndarray,
                        k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item-CF scores: item j gets Σ over the user's history items i of sim(i, j) (j among
    i's neighbours); the top ``k`` not excluded, best first (ties: first reached first).
    History [[0]], neighbours 0: [1 (0.5), 2 (0.9)] -> [[2, 1]]."""
    n_users = hist_ptr.shape[0] - 1
    n_items = nbr.shape[0]
    out = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(n_users, dtype=np.int64)
    n_chunks = max(1, min(n_users, 256))
    for c in prange(n_chunks):
        acc = np.zeros(n_items, dtype=np.float32)
        seen = np.zeros(n_items, dtype=np.bool_)
        touched = np.empty(n_items, dtype=np.int64)
        for u in range(c * n_users // n_chunks, (c + 1) * n_users // n_chunks):
            nt = 0
            for p in range(hist_ptr[u], hist_ptr[u + 1]):
                i = hist_items[p]
                for t in range(nbr_len[i]):
                    j = nbr[i, t]
                    if not seen[j]:
                        seen[j] = True
                        touched[nt] = j
                        nt += 1
                    acc[j] += sim[i, t]
            excl = excl_sorted[excl_ptr[u]:excl_ptr[u + 1]]
            cand = np.empty(nt, dtype=np.int64)
            vals = np.empty(nt, dtype=np.float32)
            m = 0
            for t in range(nt):
                j = touched[t]
                if excl.shape[0] == 0 or not contains_sorted(excl, j):
                    cand[m] = j
                    vals[m] = acc[j]
                    m += 1
                acc[j] = 0
                seen[j] = False
            order = np.argsort(-vals[:m], kind="mergesort")[:k]
            for t in range(order.shape[0]):
                out[u, t] = cand[order[t]]
                scores[u, t] = vals[order[t]]
            lengths[u] = order.shape[0]
    return out, scores, lengths


@njit(cache=True)
def popular_topk(ranked: np.ndarray, counts: np.ndarray, excl_ptr: np.ndarray, excl_sorted: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``k`` items of the popularity ranking not excluded for each user.
    Ranked [4, 2, 7] (counts [9, 5, 1]), exclude [[2]], k 2 -> [[4, 7]], scores [[9, 1]]."""
    n_users = excl_ptr.shape[0] - 1
    out = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(n_users, dtype=np.int64)
    for u in range(n_users):
        lengths[u] = first_k_kept(ranked, counts, ranked.shape[0], k, excl_sorted[excl_ptr[u]:excl_ptr[u + 1]],
                                  out[u], scores[u])
    return out, scores, lengths
