"""Numba kernels of retrieval: NANN beam-search steps, top-K selection, exclusion, dot scores.

Lists are CSR (``offsets`` int64 of length n + 1, ``values``); per-user work runs in
parallel over users (``prange``). Each kernel's docstring shows a tiny input and output;
``tests/test_retrieval_kernels.py`` checks each against plain NumPy/Python.

Visited sets are bitmaps, one row of ``ceil(n_items / 8)`` bytes per user of a batch:
item v is visited by user u when ``visited[u, v >> 3] & (1 << (v & 7))``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _contains_sorted(values: np.ndarray, x: np.int64) -> bool:
    lo, hi = 0, values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < values.shape[0] and values[lo] == x


@njit(cache=True, parallel=True)
def sort_rows(offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of ``values`` with each row sorted: offsets [0,2,3], values [5,1,4] -> [1,5,4]."""
    out = values.copy()
    for r in prange(offsets.shape[0] - 1):
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


# ----------------------------------------------------------------------------- NANN steps


@njit(cache=True)
def mark_visited(visited: np.ndarray, offsets: np.ndarray, nodes: np.ndarray) -> None:
    """Set the bits of ``nodes`` row by row: offsets [0,1], nodes [9] -> visited[0, 1] |= 2."""
    for u in range(offsets.shape[0] - 1):
        for p in range(offsets[u], offsets[u + 1]):
            v = nodes[p]
            visited[u, v >> 3] |= np.uint8(1 << (v & 7))


@njit(cache=True, parallel=True)
def neighbour_counts(cand_offsets: np.ndarray, cand_nodes: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Sum of the degrees of each user's candidates (an upper bound of what a gather yields).

    indptr [0,2,3] (node 0 has 2 neighbours, node 1 has 1), candidates [[0,1]] -> [3].
    """
    n = cand_offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.int64)
    for u in prange(n):
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
                   new_offsets: np.ndarray, new_nodes: np.ndarray, new_scores: np.ndarray,
                   entered: np.ndarray) -> np.ndarray:
    """Merge each user's newly scored nodes into their top-``ef`` list (kept sorted, best first).

    Returns how many new nodes entered per user; they are written, best first, to
    ``entered[new_offsets[u]:]``. On equal scores the node already in the list stays
    ahead, and new nodes keep their gather order. NaN scores never enter.
    Top [[5 (0.9)]], ef 2, new [[6 (0.5), 7 (0.95)]] -> top [[7, 5]], entered [7], counts [1].
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
                entered[a + j] = new_nodes[picked[j]]
                j += 1
            o += 1
        top_nodes[u, :o] = out_nodes[:o]
        top_scores[u, :o] = out_scores[:o]
        top_len[u] = o
        counts[u] = j
    return counts


@njit(cache=True, parallel=True)
def take_top(top_nodes: np.ndarray, top_scores: np.ndarray, top_len: np.ndarray, k: int,
             excl_offsets: np.ndarray, excl_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``k`` entries of each sorted list, skipping the user's excluded nodes
    (``excl_sorted`` rows sorted). Top [[4, 2, 9]], k 2, exclude [[2]] -> [[4, 9]]."""
    n = top_len.shape[0]
    nodes = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    for u in prange(n):
        excl = excl_sorted[excl_offsets[u]:excl_offsets[u + 1]]
        o = 0
        for i in range(top_len[u]):
            if o >= k:
                break
            node = top_nodes[u, i]
            if excl.shape[0] > 0 and _contains_sorted(excl, node):
                continue
            nodes[u, o] = node
            scores[u, o] = top_scores[u, i]
            o += 1
        lengths[u] = o
    return nodes, scores, lengths


@njit(cache=True, parallel=True)
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


# ----------------------------------------------------------------------------- exact top-K


@njit(cache=True)
def _sift_down(heap_s: np.ndarray, heap_i: np.ndarray, n: int, pos: int) -> None:
    """Restore the min-heap (by score; on ties the larger index is nearer the root) below ``pos``."""
    while True:
        left = 2 * pos + 1
        if left >= n:
            return
        child = left
        right = left + 1
        if right < n and (heap_s[right] < heap_s[left] or
                          (heap_s[right] == heap_s[left] and heap_i[right] > heap_i[left])):
            child = right
        if heap_s[child] < heap_s[pos] or (heap_s[child] == heap_s[pos] and heap_i[child] > heap_i[pos]):
            heap_s[child], heap_s[pos] = heap_s[pos], heap_s[child]
            heap_i[child], heap_i[pos] = heap_i[pos], heap_i[child]
            pos = child
        else:
            return


@njit(cache=True, parallel=True)
def topk_update(scores: np.ndarray, col_offset: int, heap_s: np.ndarray, heap_i: np.ndarray, heap_n: np.ndarray,
                excl_offsets: np.ndarray, excl_sorted: np.ndarray) -> None:
    """Fold a block of scores (rows = users, columns = items ``col_offset + j``) into
    per-row min-heaps of size k, skipping each row's excluded columns and NaN.

    On equal scores the smaller column wins, so the result is the exact top-k under
    (score desc, column asc), whatever the blocking. Finish with ``heap_sorted``.
    """
    k = heap_s.shape[1]
    for r in prange(scores.shape[0]):
        excl = excl_sorted[excl_offsets[r]:excl_offsets[r + 1]]
        n = heap_n[r]
        hs = heap_s[r]
        hi = heap_i[r]
        for j in range(scores.shape[1]):
            s = scores[r, j]
            if n == k and s <= hs[0]:
                continue
            if s != s:  # NaN passes the test above and never enters
                continue
            col = col_offset + j
            if excl.shape[0] > 0 and _contains_sorted(excl, col):
                continue
            if n < k:  # sift up
                pos = n
                hs[pos] = s
                hi[pos] = col
                n += 1
                while pos > 0:
                    parent = (pos - 1) >> 1
                    if hs[pos] < hs[parent] or (hs[pos] == hs[parent] and hi[pos] > hi[parent]):
                        hs[pos], hs[parent] = hs[parent], hs[pos]
                        hi[pos], hi[parent] = hi[parent], hi[pos]
                        pos = parent
                    else:
                        break
            else:
                hs[0] = s
                hi[0] = col
                _sift_down(hs, hi, n, 0)
        heap_n[r] = n


@njit(cache=True, parallel=True)
def heap_sorted(heap_s: np.ndarray, heap_i: np.ndarray, heap_n: np.ndarray) -> None:
    """Sort each row's heap in place, best first (score desc, then column asc)."""
    for r in prange(heap_s.shape[0]):
        n = heap_n[r]
        order = np.argsort(heap_i[r, :n])
        s = heap_s[r, :n][order]
        i = heap_i[r, :n][order]
        order = np.argsort(-s, kind="mergesort")
        heap_s[r, :n] = s[order]
        heap_i[r, :n] = i[order]


@njit(cache=True, parallel=True)
def filter_rows(labels: np.ndarray, scores: np.ndarray, k: int, excl_offsets: np.ndarray,
                excl_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``k`` labels per row that are not excluded (negative labels end a row).
    Labels [[3, 1, 2]], k 2, exclude [[1]] -> [[3, 2]]."""
    n = labels.shape[0]
    out_l = np.full((n, k), -1, dtype=np.int64)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    for r in prange(n):
        excl = excl_sorted[excl_offsets[r]:excl_offsets[r + 1]]
        o = 0
        for j in range(labels.shape[1]):
            if o >= k or labels[r, j] < 0:
                break
            if excl.shape[0] > 0 and _contains_sorted(excl, labels[r, j]):
                continue
            out_l[r, o] = labels[r, j]
            out_s[r, o] = scores[r, j]
            o += 1
        lengths[r] = o
    return out_l, out_s, lengths


# ----------------------------------------------------------------------------- hnswlib file decoding


@njit(cache=True)
def _u32(buf: np.ndarray, pos: np.int64) -> np.int64:
    return (np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8) | (np.int64(buf[pos + 2]) << 16)
            | (np.int64(buf[pos + 3]) << 24))


@njit(cache=True)
def scan_link_lists(buf: np.ndarray, start: np.int64, n: np.int64,
                    size_links: np.int64) -> tuple[np.ndarray, np.ndarray, np.int64]:
    """Walk the upper-level section of an hnswlib file (per node: u32 size, then size bytes):
    byte offset of each node's level-1 block (-1 if none), its top level, and where the
    section ends (the file size for a sound file). Sizes [0, 8] with 8-byte blocks ->
    blocks [-1, start + 8], levels [0, 1]."""
    block = np.full(n, -1, dtype=np.int64)
    level = np.zeros(n, dtype=np.int8)
    pos = start
    for i in range(n):
        if pos + 4 > buf.shape[0]:
            return block, level, np.int64(-1)
        size = _u32(buf, pos)
        pos += 4
        if size > 0:
            block[i] = pos
            level[i] = size // size_links
            pos += size
    return block, level, pos


@njit(cache=True, parallel=True)
def level_csr(buf: np.ndarray, list_pos: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """CSR in label order from hnswlib neighbour lists ([u16 count, 2 bytes, u32 ids...])
    at byte offsets ``list_pos`` (-1: not on this level), internal ids mapped through
    ``labels``. Returns (indptr, indices, first out-of-range neighbour or -1).
    Lists 0:[1], 1:[0] with labels [1, 0] -> indptr [0, 1, 2], indices [1, 0]."""
    n = list_pos.shape[0]
    counts = np.zeros(n, dtype=np.int64)
    for i in prange(n):
        if list_pos[i] >= 0:
            counts[labels[i]] = np.int64(buf[list_pos[i]]) | (np.int64(buf[list_pos[i] + 1]) << 8)
    indptr = np.zeros(n + 1, dtype=np.int64)
    for v in range(n):
        indptr[v + 1] = indptr[v] + counts[v]
    indices = np.empty(indptr[n], dtype=np.int32)
    bad = np.full(n, -1, dtype=np.int64)
    for i in prange(n):
        if list_pos[i] < 0:
            continue
        row = labels[i]
        base = list_pos[i] + 4
        for t in range(indptr[row + 1] - indptr[row]):
            nb = _u32(buf, base + 4 * t)
            if nb >= n:
                bad[i] = nb
                nb = 0
            indices[indptr[row] + t] = labels[nb]
    worst = -1
    for i in range(n):
        if bad[i] >= 0:
            worst = bad[i]
            break
    return indptr, indices, worst


# ----------------------------------------------------------------------------- top-K metrics


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
            if truth.shape[0] > 0 and _contains_sorted(truth, items[rank]):
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


# ----------------------------------------------------------------------------- baselines


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
                if excl.shape[0] == 0 or not _contains_sorted(excl, j):
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


@njit(cache=True, parallel=True)
def popular_topk(ranked: np.ndarray, counts: np.ndarray, excl_ptr: np.ndarray, excl_sorted: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``k`` items of the popularity ranking not excluded for each user.
    Ranked [4, 2, 7] (counts [9, 5, 1]), exclude [[2]], k 2 -> [[4, 7]], scores [[9, 1]]."""
    n_users = excl_ptr.shape[0] - 1
    out = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    lengths = np.zeros(n_users, dtype=np.int64)
    for u in prange(n_users):
        excl = excl_sorted[excl_ptr[u]:excl_ptr[u + 1]]
        o = 0
        for r in range(ranked.shape[0]):
            if o >= k:
                break
            if excl.shape[0] > 0 and _contains_sorted(excl, ranked[r]):
                continue
            out[u, o] = ranked[r]
            scores[u, o] = counts[r]
            o += 1
        lengths[u] = o
    return out, scores, lengths


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
