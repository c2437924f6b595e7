"""Numba kernels of balanced recursive k-means (``rectool.tree.kmeans`` drives them).

One call of ``split_segments`` builds whole sub-trees: rows ``X[s:e]`` of a segment are
split into ``n`` children of ``m//n`` or ``m//n + 1`` rows (the first ``m % n`` children
get one more), the rows and ``perm`` are reordered in place so that each child is a
contiguous segment, and children are pushed on a stack (depth first, so deep levels work
in cache) until segments hold one item. Child ``i`` of code ``c`` has code ``n*c + i + 1``.

A split: k-means++ seeding, then Lloyd iterations with a *balanced* assignment, on at most
``sample_cap`` rows drawn from the segment; the final assignment covers every row.
For ``n == 2`` the balanced assignment is exact and cheap: with centres ``c0, c1`` a row's
``d(x,c0) - d(x,c1) = 2 x.(c1 - c0) + const``, so the ``ceil(m/2)`` rows of smallest
projection on ``c1 - c0`` go left (a quickselect). For ``n > 2`` rows are assigned greedily,
(row, centre) pairs by increasing distance, to centres with room left.
Randomness is seeded per split from ``(seed, code)``: results do not depend on the order
in which segments are processed, nor on how many worker processes share them.

``split_segments(X, perm, codes, [0], [N], [0], 2, 0, 20, 65536, 1, 64)`` on 4 rows of two
tight pairs gives the pairs codes 3,4 and 5,6 (one pair per child of the root).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _split_seed(seed: int, code: int) -> None:
    z = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(code) + np.uint64(0x632BE59BD9B4E019)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    np.random.seed(np.uint32(z & np.uint64(0xFFFFFFFF)))


@numba.njit(cache=True, fastmath=True)
def _sq_dist(a: np.ndarray, b: np.ndarray) -> float:
    acc = np.float32(0.0)
    for j in range(a.size):
        t = a[j] - b[j]
        acc += t * t
    return acc


@numba.njit(cache=True)
def _kmeanspp(Y: np.ndarray, n: int) -> np.ndarray:
    """k-means++ seeding of ``n`` centres from the rows of ``Y``."""
    r, d = Y.shape
    centers = np.empty((n, d), dtype=np.float32)
    centers[0] = Y[np.random.randint(r)]
    best = np.empty(r, dtype=np.float64)
    for i in range(r):
        best[i] = _sq_dist(Y[i], centers[0])
    for c in range(1, n):
        total = best.sum()
        pick = r - 1
        if total > 0:
            target = np.random.random() * total
            acc = 0.0
            for i in range(r):
                acc += best[i]
                if acc >= target:
                    pick = i
                    break
        else:
            pick = np.random.randint(r)
        centers[c] = Y[pick]
        for i in range(r):
            dd = _sq_dist(Y[i], centers[c])
            if dd < best[i]:
                best[i] = dd
    return centers


@numba.njit(cache=True, fastmath=True)
def _assign_two(Y: np.ndarray, centers: np.ndarray, size0: int, labels: np.ndarray) -> int:
    """Balanced 2-way assignment: the ``size0`` rows of smallest projection on c1 - c0 get 0."""
    r, d = Y.shape
    w = centers[1] - centers[0]
    proj = np.empty(r, dtype=np.float32)
    for i in range(r):
        acc = np.float32(0.0)
        for j in range(d):
            acc += Y[i, j] * w[j]
        proj[i] = acc
    kth = np.partition(proj, size0 - 1)[size0 - 1]
    below = 0
    for i in range(r):
        if proj[i] < kth:
            below += 1
    ties_left = size0 - below  # rows equal to the threshold that still go left
    changed = 0
    for i in range(r):
        lab = 1
        if proj[i] < kth:
            lab = 0
        elif proj[i] == kth and ties_left > 0:
            lab = 0
            ties_left -= 1
        if labels[i] != lab:
            changed += 1
            labels[i] = lab
    return changed


@numba.njit(cache=True)
def _assign_greedy(Y: np.ndarray, centers: np.ndarray, sizes: np.ndarray, labels: np.ndarray) -> int:
    """Balanced n-way assignment: (row, centre) pairs by increasing distance, centres with room."""
    r = Y.shape[0]
    n = centers.shape[0]
    dist = np.empty(r * n, dtype=np.float32)
    for i in range(r):
        for c in range(n):
            dist[i * n + c] = _sq_dist(Y[i], centers[c])
    order = np.argsort(dist, kind="mergesort")
    room = sizes.copy()
    new = np.full(r, -1, dtype=np.int64)
    left = r
    for p in order:
        i, c = p // n, p % n
        if new[i] < 0 and room[c] > 0:
            new[i] = c
            room[c] -= 1
            left -= 1
            if left == 0:
                break
    changed = 0
    for i in range(r):
        if labels[i] != new[i]:
            changed += 1
            labels[i] = new[i]
    return changed


@numba.njit(cache=True, fastmath=True)
def _update_centers(Y: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> None:
    n, d = centers.shape
    sums = np.zeros((n, d), dtype=np.float64)
    cnt = np.zeros(n, dtype=np.int64)
    for i in range(Y.shape[0]):
        c = labels[i]
        cnt[c] += 1
        for j in range(d):
            sums[c, j] += Y[i, j]
    for c in range(n):
        if cnt[c] > 0:
            for j in range(d):
                centers[c, j] = sums[c, j] / cnt[c]


@numba.njit(cache=True)
def _child_sizes(m: int, n: int) -> np.ndarray:
    sizes = np.full(n, m // n, dtype=np.int64)
    sizes[: m % n] += 1
    return sizes


@numba.njit(cache=True)
def _assign(Y: np.ndarray, centers: np.ndarray, sizes: np.ndarray, labels: np.ndarray) -> int:
    if centers.shape[0] == 2:
        return _assign_two(Y, centers, sizes[0], labels)
    return _assign_greedy(Y, centers, sizes, labels)


@numba.njit(cache=True)
def _fit_split(X: np.ndarray, s: int, e: int, n: int, iters: int, sample_cap: int) -> np.ndarray:
    """Labels (0..n-1, balanced) of rows ``X[s:e]``."""
    m = e - s
    if m > sample_cap:
        Y = np.empty((sample_cap, X.shape[1]), dtype=np.float32)
        for i in range(sample_cap):
            Y[i] = X[s + np.random.randint(m)]
    else:
        Y = X[s:e]
    r = Y.shape[0]
    centers = _kmeanspp(Y, n)
    sizes = _child_sizes(r, n)
    labels = np.full(r, -1, dtype=np.int64)
    converged = False
    for _ in range(iters):
        if _assign(Y, centers, sizes, labels) == 0:
            converged = True
            break
        _update_centers(Y, labels, centers)
    if m > sample_cap:  # the centres were fitted on a sample: assign every row
        labels = np.full(m, -1, dtype=np.int64)
        _assign(X[s:e], centers, _child_sizes(m, n), labels)
    elif not converged:  # the last update moved the centres: assign once more
        _assign(Y, centers, sizes, labels)
    return labels


@numba.njit(cache=True)
def _reorder(X: np.ndarray, perm: np.ndarray, s: int, labels: np.ndarray, n: int) -> None:
    """Make each label's rows of ``X[s:s+m]`` (and ``perm``) contiguous, label 0 first."""
    m = labels.size
    if n == 2:  # in place, two pointers
        i, j = 0, m - 1
        while True:
            while i < j and labels[i] == 0:
                i += 1
            while i < j and labels[j] == 1:
                j -= 1
            if i >= j:
                return
            for t in range(X.shape[1]):
                X[s + i, t], X[s + j, t] = X[s + j, t], X[s + i, t]
            perm[s + i], perm[s + j] = perm[s + j], perm[s + i]
            labels[i], labels[j] = 0, 1
    order = np.argsort(labels, kind="mergesort")
    rows = X[s:s + m].copy()
    ids = perm[s:s + m].copy()
    for t in range(m):
        X[s + t] = rows[order[t]]
        perm[s + t] = ids[order[t]]


@numba.njit(cache=True)
def split_segments(X: np.ndarray, perm: np.ndarray, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   seg_codes: np.ndarray, n: int, seed: int, iters: int, sample_cap: int, leaf_size: int,
                   max_depth: int) -> tuple:
    """Split the given segments recursively; leaf codes go to ``codes[position]``.

    Segments more than ``max_depth`` splits below their start are not split but returned
    as pending ``(starts, ends, codes)`` (for the driver to hand to worker processes).
    A segment of at most ``leaf_size`` rows becomes one leaf group (all its rows get its
    code; ``leaf_size = 1`` builds the full tree).
    """
    cap = 64 * n + starts.size + 64
    st_s = np.empty(cap, dtype=np.int64)
    st_e = np.empty(cap, dtype=np.int64)
    st_c = np.empty(cap, dtype=np.int64)
    st_d = np.empty(cap, dtype=np.int64)
    top = 0
    for i in range(starts.size):
        st_s[top], st_e[top], st_c[top], st_d[top] = starts[i], ends[i], seg_codes[i], 0
        top += 1
    pending = np.empty((16, 3), dtype=np.int64)
    n_pending = 0
    while top > 0:
        top -= 1
        s, e, c, depth = st_s[top], st_e[top], st_c[top], st_d[top]
        m = e - s
        if m <= leaf_size:
            codes[s:e] = c
            continue
        if m <= n:
            for i in range(m):
                codes[s + i] = n * c + i + 1
            continue
        if depth >= max_depth:
            if n_pending == pending.shape[0]:
                grown = np.empty((2 * n_pending, 3), dtype=np.int64)
                grown[:n_pending] = pending
                pending = grown
            pending[n_pending, 0], pending[n_pending, 1], pending[n_pending, 2] = s, e, c
            n_pending += 1
            continue
        _split_seed(seed, c)
        labels = _fit_split(X, s, e, n, iters, sample_cap)
        _reorder(X, perm, s, labels, n)
        sizes = _child_sizes(m, n)
        lo = s
        for i in range(n):
            st_s[top], st_e[top], st_c[top], st_d[top] = lo, lo + sizes[i], n * c + i + 1, depth + 1
            lo += sizes[i]
            top += 1
    return pending[:n_pending, 0].copy(), pending[:n_pending, 1].copy(), pending[:n_pending, 2].copy()
