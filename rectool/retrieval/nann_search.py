"""NANN search: beam search over an HNSW graph, every visited item scored by any model.

NANN (arXiv 2202.10226) uses the HNSW graph built on item embeddings only to navigate;
the score of a (user, item) pair comes from the full model, through a callback

    scorer(user_index: np.ndarray[int64], item_node: np.ndarray[int64]) -> np.ndarray[float32]

called once per step with the flat list of all pairs of a user batch (``user_index``
indexes the users of this search, 0..n_users-1; ``item_node`` is a graph node, i.e. a
row of ``graph.ids``). Everything else runs in numba kernels (``kernels.py``).

Algorithm, per batch of users (``ef`` and ``rounds`` are given for levels 2, 1, 0)
    1. score all enter points (the nodes on levels >= 2), keep the top ef2;
    2. on level 1, then level 0, run T rounds: the candidates are the nodes of the
       level's top-ef list not expanded yet on this level (all of them: the paper's
       rounds, where the next round expands the nodes that entered the list; or only
       the best ``expand`` of them: HNSW's best-first search, batched), gather their
       neighbours on the level, drop visited nodes (a bitmap per user: nothing is
       scored twice), score the new ones in one batched call and merge them into the
       top-ef list. A level stops early when no node is left to expand.
    3. return the top ``recall_num`` (``exclude`` lists are skipped here, not in the
       navigation) and the number of pairs scored per user.

With ef >= the catalogue and enough rounds, the result equals exact search
(``brute.brute_search`` with the same scorer); ``nann_reference`` is the same algorithm
in plain Python.

Example::

    graph = load_graph("data/graph")
    scorer = dot_scorer(user_emb, item_emb_by_node)
    topk = nann_search(graph, len(user_emb), scorer, recall_num=200)   # TopK of item ids
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rectool import console
from rectool.errors import UserError
from rectool.retrieval import kernels
from rectool.retrieval.formats import IdMap, Ragged, TopK, no_exclusion
from rectool.retrieval.graph import HnswGraph

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]
Positive = Annotated[int, Field(ge=1)]
BITMAP_BUDGET = 256 << 20  # bytes of visited and expanded bitmaps per batch at most


class NannParams(BaseModel):
    """Search widths and rounds for levels (2, 1, 0), the paper's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ef: tuple[Positive, Positive, Positive] = (100, 200, 400)
    rounds: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] = (1, 1, 3)
    recall_num: Positive = 200
    batch_size: Positive = 256
    expand: Positive | None = None  # nodes expanded per user and round; None: every unexpanded one


def dot_scorer(user_emb: np.ndarray, item_emb: np.ndarray) -> Scorer:
    """A scorer of inner products (``item_emb`` rows are graph nodes): for tests and benchmarks."""
    users = np.ascontiguousarray(user_emb, dtype=np.float32)
    items = np.ascontiguousarray(item_emb, dtype=np.float32)

    def score(user_index: np.ndarray, item_node: np.ndarray) -> np.ndarray:
        return kernels.dot_pairs(users, items, user_index, item_node)

    return score


def _score(scorer: Scorer, users: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    scores = np.asarray(scorer(users, nodes.astype(np.int64, copy=False)))
    if scores.shape != (len(nodes),):
        raise ValueError(f"the scorer returned shape {scores.shape} for {len(nodes)} pairs")
    return scores.astype(np.float32, copy=False)


class _Batch:
    """The state of one user batch: top lists, visited bitmaps, counters."""

    def __init__(self, start: int, size: int, width: int, visited: np.ndarray, expanded: np.ndarray) -> None:
        self.start, self.size = start, size
        self.top_nodes = np.full((size, width), -1, dtype=np.int32)
        self.top_scores = np.full((size, width), -np.inf, dtype=np.float32)
        self.top_len = np.zeros(size, dtype=np.int64)
        self.n_scored = np.zeros(size, dtype=np.int64)
        self.visited = visited[:size]
        self.visited[:] = 0
        self.expanded = expanded[:size]  # nodes expanded on the current level

    def score_and_merge(self, scorer: Scorer, offsets: np.ndarray, nodes: np.ndarray, ef: int) -> None:
        """Score new nodes (CSR over the batch) and merge them into the top lists."""
        counts = np.diff(offsets)
        users = np.repeat(np.arange(self.start, self.start + self.size, dtype=np.int64), counts)
        scores = _score(scorer, users, nodes)
        self.n_scored += counts
        kernels.merge_into_top(self.top_nodes, self.top_scores, self.top_len, ef, offsets, nodes, scores)

    def search_level(self, scorer: Scorer, indptr: np.ndarray, indices: np.ndarray, ef: int, rounds: int,
                     expand: int | None) -> None:
        np.minimum(self.top_len, ef, out=self.top_len)
        self.expanded[:] = 0
        for _ in range(rounds):
            candidates = Ragged(*kernels.pick_unexpanded(self.top_nodes, self.top_len, self.expanded, expand or ef))
            if len(candidates.values) == 0:
                break
            new_offsets, new_nodes = _gather(self, candidates, indptr, indices)
            if len(new_nodes):
                self.score_and_merge(scorer, new_offsets, new_nodes, ef)


def _gather(batch: _Batch, candidates: Ragged, indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    upper = kernels.neighbour_counts(candidates.offsets, candidates.values, indptr)
    slots = np.zeros(len(upper) + 1, dtype=np.int64)
    np.cumsum(upper, out=slots[1:])
    buffer = np.empty(slots[-1], dtype=np.int32)
    counts = kernels.gather_unvisited(candidates.offsets, candidates.values, indptr, indices, batch.visited,
                                      slots, buffer)
    return kernels.compact(buffer, slots, counts)


def nann_search(graph: HnswGraph, n_users: int, scorer: Scorer, recall_num: int = 200,
                ef: tuple[int, int, int] = (100, 200, 400), rounds: tuple[int, int, int] = (1, 1, 3), *,
                expand: int | None = None, exclude: Ragged | None = None, batch_size: int = 256,
                progress: bool = True) -> TopK:
    """Top ``recall_num`` item ids per user by NANN beam search (see the module docstring).

    ``expand``: nodes expanded per user and round (None: all unexpanded nodes of the top list).
    ``exclude[u]`` are item ids never returned for user u (e.g. the user's history).
    ``TopK.n_scored`` counts the pairs scored per user.
    """
    params = NannParams(ef=ef, rounds=rounds, recall_num=recall_num, batch_size=batch_size, expand=expand)
    for level in (0, 1):
        if level not in graph.indptr:
            raise UserError(f"the graph lacks level {level}; extract it with rectool hnsw graph --levels 0,1")
    if params.recall_num > params.ef[2]:
        raise UserError(f"recall_num {recall_num} exceeds ef on level 0 ({params.ef[2]}); raise the level-0 ef")
    n_nodes = graph.n_nodes
    excl = IdMap(graph.ids).rows_ragged(exclude) if exclude is not None else None
    if excl is not None and len(excl) != n_users:
        raise ValueError(f"{len(excl)} exclusion lists for {n_users} users")
    enter = np.ascontiguousarray(graph.enter_points(), dtype=np.int32)
    levels = {lv: (np.asarray(graph.indptr[lv]), np.asarray(graph.indices[lv])) for lv in (1, 0)}
    width = max(params.ef)
    row_bytes = (n_nodes + 7) // 8
    size = max(1, min(params.batch_size, BITMAP_BUDGET // max(2 * row_bytes, 1), max(n_users, 1)))
    visited, expanded = np.zeros((size, row_bytes), dtype=np.uint8), np.zeros((size, row_bytes), dtype=np.uint8)

    item_ids = np.full((n_users, params.recall_num), -1, dtype=np.int64)
    scores = np.full((n_users, params.recall_num), -np.inf, dtype=np.float32)
    lengths = np.zeros(n_users, dtype=np.int64)
    n_scored = np.zeros(n_users, dtype=np.int64)
    node_ids = np.asarray(graph.ids)
    with maybe_progress(progress, "nann search", n_users) as bar:
        for start in range(0, n_users, size):
            stop = min(n_users, start + size)
            batch = _Batch(start, stop - start, width, visited, expanded)
            # level >= 2: every enter point
            offsets = np.arange(batch.size + 1, dtype=np.int64) * len(enter)
            nodes = np.tile(enter, batch.size)
            kernels.mark_visited(batch.visited, offsets, nodes)
            batch.score_and_merge(scorer, offsets, nodes, params.ef[0])
            for level, ef_level, n_rounds in ((1, params.ef[1], params.rounds[1]), (0, params.ef[2], params.rounds[2])):
                batch.search_level(scorer, *levels[level], ef_level, n_rounds, params.expand)
            sub = excl.slice(start, stop) if excl is not None else no_exclusion(batch.size)
            nodes_k, scores_k, lens = kernels.take_top(batch.top_nodes, batch.top_scores, batch.top_len,
                                                       params.recall_num, sub.offsets, sub.values)
            valid = nodes_k >= 0
            item_ids[start:stop] = np.where(valid, node_ids[np.maximum(nodes_k, 0)], -1)
            scores[start:stop] = scores_k
            lengths[start:stop] = lens
            n_scored[start:stop] = batch.n_scored
            bar.advance(batch.size)
    return TopK(item_ids, scores, lengths, n_scored)


class _NoBar:
    """Stands in for a progress bar when the caller shows its own."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def advance(self, amount: float = 1) -> None:
        pass


def maybe_progress(show: bool, description: str, total: int) -> Any:
    """``console.progress`` when ``show``, else a silent stand-in (the caller has its own bar)."""
    return console.progress(description, total=total) if show else _NoBar()
