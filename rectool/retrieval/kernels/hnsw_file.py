"""Decoding hnswlib's saved index file (layout in ``rectool.retrieval.graph``)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


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
