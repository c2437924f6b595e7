"""Layer-wise beam search over a TDM tree for a batch of users, scorer-agnostic.

The scorer is any callable ``scorer(user_index, node_id) -> scores``: two int64 arrays of
the same length (the flat list of (user, candidate node) pairs; ``user_index`` indexes
the caller's batch, ``node_id`` is the tree node id: the item id for a leaf) returning
float32 scores of that length, higher is better. The search calls it once per scored level
(all users at once); the arrays it passes are reused buffers, valid only during the call.

``beam_search``
    Levels above the first level holding at least ``beam`` nodes are expanded without
    scoring; all nodes of that level are scored. Then at each level the ``beam`` best
    nodes of every user are kept, their children are expanded and scored, down to the
    leaves, where the ``recall_num`` best items are returned. Ranking is by score, ties
    by smaller node index; NaN scores rank last. With ``beam`` at least the number of
    leaves this scores every leaf, exactly as ``brute_force``.
``brute_force``
    Scores every leaf for every user (in chunks of leaves) and keeps the ``recall_num`` best.
``search(..., method="beam" | "brute")`` picks one of the two.

Expansion, top-k and bookkeeping are numba kernels (``rectool.tree.kernels``); the scorer
call is the only other work. Output (``Retrieved``), for B users::

    item_ids      int64   [B, recall_num]  best first; -1 where fewer leaves were reached
    scores        float32 [B, recall_num]  -inf where padded
    nodes_scored  int64   [B]              (user, node) pairs scored for each user

Example::

    tree = load_tree("tree/")
    res = beam_search(tree, lambda u, n: model_scores(u, n), n_users=256, recall_num=200)
    res.item_ids[0][:10]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rectool.tree.kernels import expand_children, merge_topk, topk_segments
from rectool.tree.structure import Tree

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Retrieved:
    """Top items per user (layout in the module docstring)."""

    item_ids: np.ndarray
    scores: np.ndarray
    nodes_scored: np.ndarray


def _call(scorer: Scorer, user_index: np.ndarray, node_id: np.ndarray) -> np.ndarray:
    scores = np.asarray(scorer(user_index, node_id))
    if scores.shape != user_index.shape:
        raise ValueError(f"the scorer returned shape {scores.shape} for {user_index.size} (user, node) pairs; "
                         "it must return one score per pair")
    return scores.astype(np.float32, copy=False)


def first_scored_level(tree: Tree, beam: int) -> int:
    """The first level holding at least ``beam`` nodes (the leaf level if none does)."""
    big = np.flatnonzero(tree.level_sizes >= beam)
    return int(big[0]) if big.size else tree.num_levels - 1


def _result(tree: Tree, nodes: np.ndarray, scores: np.ndarray, scored: np.ndarray) -> Retrieved:
    items = np.where(nodes >= 0, tree.node_ids[np.maximum(nodes, 0)], -1)
    return Retrieved(item_ids=items, scores=scores, nodes_scored=scored)


def beam_search(tree: Tree, scorer: Scorer, n_users: int, recall_num: int, beam: int | None = None) -> Retrieved:
    """Top ``recall_num`` items for users ``0 .. n_users-1`` by layer-wise beam search (``beam`` = 2 x recall_num)."""
    beam = 2 * recall_num if beam is None else beam
    if recall_num < 1 or beam < 1 or n_users < 0:
        raise ValueError(f"recall_num ({recall_num}) and beam ({beam}) must be at least 1")
    if tree.num_nodes >= 1 << 32:  # topk_segments packs a node row into 32 bits
        raise ValueError(f"a tree of {tree.num_nodes} nodes: beam search handles up to 2**32")
    level = first_scored_level(tree, beam)
    a, b = int(tree.level_offsets[level]), int(tree.level_offsets[level + 1])
    width = b - a
    user_index = np.repeat(np.arange(n_users, dtype=np.int64), width)
    node_index = np.tile(np.arange(a, b, dtype=np.int64), n_users)
    offsets = np.arange(n_users + 1, dtype=np.int64) * width
    node_id = tree.node_ids[node_index]
    scored = np.full(n_users, width, dtype=np.int64)
    leaf_level = tree.num_levels - 1
    buf = None
    while True:
        scores = _call(scorer, user_index, node_id)
        if level == leaf_level:
            nodes, best = topk_segments(scores, node_index, offsets, recall_num, True)
            return _result(tree, nodes, best, scored)
        kept, _ = topk_segments(scores, node_index, offsets, beam, False)
        if buf is None:  # one buffer for every level: no page faults on fresh arrays
            buf = np.empty((3, n_users * beam * int(np.diff(tree.child_offsets).max())), dtype=np.int64)
        offsets = expand_children(kept, tree.child_offsets, tree.node_ids, buf)
        user_index, node_index, node_id = buf[0, :offsets[-1]], buf[1, :offsets[-1]], buf[2, :offsets[-1]]
        scored += np.diff(offsets)
        level += 1


def brute_force(tree: Tree, scorer: Scorer, n_users: int, recall_num: int, max_pairs: int = 1 << 22) -> Retrieved:
    """Top ``recall_num`` items for each user by scoring every leaf (``max_pairs`` pairs per scorer call)."""
    leaf_nodes = np.arange(tree.leaf_start, tree.num_nodes, dtype=np.int64)
    best_n = np.full((n_users, recall_num), -1, dtype=np.int64)
    best_s = np.full((n_users, recall_num), -np.inf, dtype=np.float32)
    chunk = max(1, max_pairs // max(n_users, 1))
    for a in range(0, leaf_nodes.size, chunk):
        nodes = leaf_nodes[a:a + chunk]
        user_index = np.repeat(np.arange(n_users, dtype=np.int64), nodes.size)
        scores = _call(scorer, user_index, np.tile(tree.node_ids[nodes], n_users)).reshape(n_users, nodes.size)
        merge_topk(best_n, best_s, nodes, scores)
    return _result(tree, best_n, best_s, np.full(n_users, leaf_nodes.size, dtype=np.int64))


def search(tree: Tree, scorer: Scorer, n_users: int, recall_num: int, beam: int | None = None,
           method: Literal["beam", "brute"] = "beam") -> Retrieved:
    """``beam_search`` or ``brute_force`` by name (``retrieve --method``)."""
    if method == "brute":
        return brute_force(tree, scorer, n_users, recall_num)
    if method == "beam":
        return beam_search(tree, scorer, n_users, recall_num, beam)
    raise ValueError(f"method {method!r}: choose beam or brute")
