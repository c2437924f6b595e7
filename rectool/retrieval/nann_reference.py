"""NANN search in plain Python: the reference for tests and the benchmark's baseline.

The same algorithm as ``nann_search.nann_search`` written as directly as possible: one
user at a time, a Python set of visited nodes, lists sorted with ``sorted``, one scorer
call per user and step. It must return the same items, in the same order, with the same
counts of scored pairs (ties: a node already in the list stays ahead of a new one; new
nodes keep their gather order).

Example::

    topk = nann_search_reference(graph, n_users, scorer, recall_num=50, ef=(50, 100, 200))
"""

from __future__ import annotations

import numpy as np

from rectool.retrieval.formats import Ragged, TopK
from rectool.retrieval.graph import HnswGraph
from rectool.retrieval.nann_search import Scorer


def _merge(top: list[tuple[float, int]], new: list[tuple[float, int]], ef: int) -> list[tuple[float, int]]:
    """Top-``ef`` of the union (score desc; old before new; new in gather order)."""
    ranked = sorted([(-s, 0, i, node) for i, (s, node) in enumerate(top)]
                    + [(-s, 1, i, node) for i, (s, node) in enumerate(new) if s == s])
    return [(-neg, node) for neg, _, _, node in ranked[:ef]]


def nann_search_reference(graph: HnswGraph, n_users: int, scorer: Scorer, recall_num: int = 200,
                          ef: tuple[int, int, int] = (100, 200, 400), rounds: tuple[int, int, int] = (1, 1, 3),
                          expand: int | None = None, exclude: Ragged | None = None) -> TopK:
    """Plain-Python NANN search; ``exclude`` holds item ids per user."""
    ids = np.asarray(graph.ids)
    row_of = {int(item): node for node, item in enumerate(ids)}
    enter = [int(x) for x in graph.enter_points()]
    out_ids = np.full((n_users, recall_num), -1, dtype=np.int64)
    out_scores = np.full((n_users, recall_num), -np.inf, dtype=np.float32)
    lengths = np.zeros(n_users, dtype=np.int64)
    n_scored = np.zeros(n_users, dtype=np.int64)

    for user in range(n_users):
        def score(nodes: list[int], user: int = user) -> list[tuple[float, int]]:
            values = scorer(np.full(len(nodes), user, dtype=np.int64), np.array(nodes, dtype=np.int64))
            return [(float(s), node) for s, node in zip(values, nodes, strict=True)]

        visited = set(enter)
        top = _merge([], score(enter), ef[0])
        n_scored[user] = len(enter)
        for level, ef_level, n_rounds in ((1, ef[1], rounds[1]), (0, ef[2], rounds[2])):
            top = top[:ef_level]
            expanded: set[int] = set()
            for _ in range(n_rounds):
                candidates = [node for _, node in top if node not in expanded][:expand or ef_level]
                if not candidates:
                    break
                expanded.update(candidates)
                new: list[int] = []
                for node in candidates:
                    for neighbour in graph.neighbours(level, node):
                        neighbour = int(neighbour)
                        if neighbour not in visited:
                            visited.add(neighbour)
                            new.append(neighbour)
                if new:
                    n_scored[user] += len(new)
                    top = _merge(top, score(new), ef_level)
        excluded = set() if exclude is None else {row_of[int(i)] for i in exclude.row(user) if int(i) in row_of}
        kept = [(s, node) for s, node in top if node not in excluded][:recall_num]
        for rank, (s, node) in enumerate(kept):
            out_ids[user, rank] = ids[node]
            out_scores[user, rank] = s
        lengths[user] = len(kept)
    return TopK(out_ids, out_scores, lengths, n_scored)
