"""Plain-NumPy layer-wise beam search: the reference for tests and for ``bench_tree.py``.

The same search as ``rectool.tree.beam.beam_search`` (same first scored level, same
ranking: score desc, then node index asc, NaN last), written the way one would in
NumPy: candidates of all users in one padded [users, width] matrix per level,
``np.lexsort`` per row for the top k, children expanded by broadcasting.

    res = beam_search_numpy(tree, scorer, n_users=256, recall_num=200)   # -> rectool.tree.beam.Retrieved
"""

from __future__ import annotations

import numpy as np

from rectool.tree.beam import Retrieved, Scorer, first_scored_level
from rectool.tree.structure import Tree

PAD = np.iinfo(np.int64).max


def _top(cand: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    key = np.where(cand >= 0, cand, PAD)  # padding ranks after every real candidate
    order = np.lexsort((key, -scores.astype(np.float64)), axis=-1)[:, :k]
    sel = np.take_along_axis(cand, order, axis=1)
    best = np.take_along_axis(scores, order, axis=1)
    if sel.shape[1] < k:
        pad = k - sel.shape[1]
        sel = np.pad(sel, ((0, 0), (0, pad)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, pad)), constant_values=-np.inf)
    return sel, np.where(sel >= 0, best, -np.inf).astype(np.float32)


def beam_search_numpy(tree: Tree, scorer: Scorer, n_users: int, recall_num: int, beam: int | None = None) -> Retrieved:
    beam = 2 * recall_num if beam is None else beam
    level = first_scored_level(tree, beam)
    a, b = tree.level_offsets[level], tree.level_offsets[level + 1]
    cand = np.tile(np.arange(a, b, dtype=np.int64), (n_users, 1))
    scored = np.zeros(n_users, dtype=np.int64)
    users = np.arange(n_users, dtype=np.int64)
    while True:
        valid = cand >= 0
        scores = np.full(cand.shape, -np.inf, dtype=np.float32)
        u = np.broadcast_to(users[:, None], cand.shape)[valid]
        scores[valid] = scorer(u, tree.node_ids[cand[valid]])
        scores[np.isnan(scores)] = -np.inf
        scored += valid.sum(axis=1)
        if level == tree.num_levels - 1:
            sel, best = _top(cand, scores, recall_num)
            items = np.where(sel >= 0, tree.node_ids[np.maximum(sel, 0)], -1)
            return Retrieved(item_ids=items, scores=best, nodes_scored=scored)
        sel, _ = _top(cand, scores, beam)
        first = np.where(sel >= 0, tree.child_offsets[np.maximum(sel, 0)], 0)
        count = np.where(sel >= 0, tree.child_offsets[np.maximum(sel, 0) + 1] - first, 0)
        width = int(count.max())
        kids = first[:, :, None] + np.arange(width)
        cand = np.where(np.arange(width) < count[:, :, None], kids, -1).reshape(n_users, -1)
        level += 1
