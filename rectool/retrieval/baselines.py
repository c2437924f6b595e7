"""Retrieval baselines: popularity and item-CF, writing the recall format.

Every retrieval model gets a floor measured by the same evaluator (``eval-topk``).

Inputs (tables in list form ``user_id, item_ids`` or long form ``user_id, item_id``)
    ``train``    the interactions the baseline learns from (popularity counts, item
                 co-occurrences); each user's items count once.
    ``history``  each query user's items: what item-CF scores from, and what is excluded
                 by default; defaults to ``train`` (the given-split protocol). Under the
                 TDM user split, the test users' input halves.
    ``users``    the users to recommend for (a table with ``user_id``, e.g. the truth
                 table); defaults to every user of ``history``.
    ``exclude``  ``"history"`` (default: never recommend an item of the user's history),
                 ``"none"``, or a table path: per-user items to exclude (e.g. only the
                 user's buys on taobao, where the history also holds carts).

Methods
    ``popularity``  items ranked by the number of training users who have them; score =
                    that count.
    ``item-cf``     item-kNN: c_ij = users with both i and j; similarity ``cosine``
                    c_ij / sqrt(n_i n_j) or ``cooccurrence`` c_ij; each item keeps its
                    ``neighbours`` most similar items; a user's score of j is the sum of
                    sim(i, j) over the history items i that have j as a neighbour.
    Sparse throughout (numba over CSR; no dense item x item matrix): memory is the
    neighbour table (items x neighbours x 8 bytes) plus one dense accumulator per thread.
    ``item-knn``, ``ease``, ``als``  the classical models of ``rectool.retrieval.classical``
                    (BARS' normalised item-kNN, EASE, implicit's ALS): every item scored
                    from the user's history row, exact top-k.

Output: the recall format (``formats.RecallWriter``), ``_meta.json`` kind ``recalls``
with ``method`` and the ``exclude`` rule.

Example (library; ``rectool baseline`` wires the CLI)::

    run_baseline("item-cf", "data/train", "out/recalls_itemcf", users="data/test_truth", k=200)
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

import numpy as np

from rectool.badinput import read_table
from rectool.errors import UserError
from rectool.retrieval import kernels
from rectool.retrieval.classical import CLASSICAL, ClassicalParams
from rectool.retrieval.formats import (
    USER_ID,
    IdMap,
    Ragged,
    TopK,
    UserLists,
    int_column,
    no_exclusion,
    read_user_lists,
    write_recalls,
)

Method = Literal["popularity", "item-cf", "item-knn", "ease", "als"]
Similarity = Literal["cosine", "cooccurrence"]


class Catalogue:
    """Dense indices of the training items (``ids[index]`` = item id) and the training matrix."""

    def __init__(self, train: UserLists) -> None:
        self.ids, inverse = np.unique(train.lists.values, return_inverse=True)
        self.map = IdMap(self.ids)
        self.user_items = Ragged(train.lists.offsets, inverse.astype(np.int64))
        self.counts = np.bincount(inverse, minlength=len(self.ids)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def item_users(self) -> Ragged:
        """The transpose: users of each item (dense user rows)."""
        users = np.repeat(np.arange(len(self.user_items), dtype=np.int64), self.user_items.lengths())
        order = np.argsort(self.user_items.values, kind="stable")
        return Ragged.from_lengths(self.counts, users[order])

    def to_topk(self, rows: np.ndarray, scores: np.ndarray, lengths: np.ndarray) -> TopK:
        valid = np.arange(rows.shape[1]) < lengths[:, None]
        return TopK(np.where(valid, self.ids[np.maximum(rows, 0)], -1), scores, lengths)


def _lists_for(users: np.ndarray, lists: UserLists | None) -> Ragged:
    """Each of ``users``' lists (empty for users without one)."""
    if lists is None or len(lists) == 0:  # no user has anything to leave out
        return no_exclusion(len(users))
    rows = lists.rows_of(users)
    taken = lists.lists.take(np.maximum(rows, 0))
    lengths = np.where(rows >= 0, taken.lengths(), 0)
    keep = np.repeat(rows >= 0, taken.lengths())
    return Ragged.from_lengths(lengths, taken.values[keep])


def popularity_topk(train: UserLists, users: np.ndarray, k: int, exclude: UserLists | None = None) -> TopK:
    """The ``k`` most popular training items per user, minus the user's ``exclude`` items."""
    cat = Catalogue(train)
    ranked = np.lexsort((cat.ids, -cat.counts))  # most users first, then smaller id
    excl = cat.map.rows_ragged(_lists_for(users, exclude))
    rows, scores, lengths = kernels.popular_topk(ranked.astype(np.int64), cat.counts[ranked].astype(np.float32),
                                                 excl.offsets, excl.values, min(k, len(cat)))
    return cat.to_topk(rows, scores, lengths)


def item_cf_topk(train: UserLists, users: np.ndarray, history: UserLists, k: int, *, neighbours: int = 200,
                 similarity: Similarity = "cosine", exclude: UserLists | None = None) -> TopK:
    """Item-kNN recommendations for ``users`` from their ``history`` (see the module docstring)."""
    if similarity not in ("cosine", "cooccurrence"):
        raise UserError(f"--similarity {similarity}: choose cosine or cooccurrence")
    if neighbours < 1:
        raise UserError(f"--neighbours {neighbours}: keep at least one neighbour per item")
    cat = Catalogue(train)
    item_users = cat.item_users()
    nbr, sim, nbr_len = kernels.item_neighbours(item_users.offsets, item_users.values, cat.user_items.offsets,
                                                cat.user_items.values, min(neighbours, max(len(cat) - 1, 1)),
                                                similarity == "cosine")
    hist = cat.map.rows_ragged(_lists_for(users, history))
    excl = cat.map.rows_ragged(_lists_for(users, exclude))
    rows, scores, lengths = kernels.score_by_neighbours(hist.offsets, hist.values, nbr, sim, nbr_len, excl.offsets,
                                                        excl.values, min(k, len(cat)))
    return cat.to_topk(rows, scores, lengths)


def classical_topk(params: ClassicalParams, train: UserLists, users: np.ndarray, history: UserLists, k: int, *,
                   exclude: UserLists | None = None, progress: bool = True) -> TopK:
    """Fit one classical method on ``train`` and rank every training item for ``users`` from their ``history``."""
    import scipy.sparse as sp

    from rectool.retrieval.classical import fit, rank

    cat = Catalogue(train)
    ones = np.ones(len(cat.user_items.values), dtype=np.float32)
    matrix = sp.csr_matrix((ones, cat.user_items.values, cat.user_items.offsets), shape=(len(train), len(cat)))
    matrix.sum_duplicates()
    matrix.data[:] = 1
    hist = cat.map.rows_ragged(_lists_for(users, history))  # sorted rows, items outside the catalogue dropped
    rows = sp.csr_matrix((np.ones(len(hist.values), dtype=np.float32), hist.values, hist.offsets),
                         shape=(len(users), len(cat)))
    return rank(fit(params, matrix), rows, min(k, len(cat)), item_ids=cat.ids, exclude=_lists_for(users, exclude),
                progress=progress)


def _users(path: str | os.PathLike[str] | None, history: UserLists) -> np.ndarray:
    if path is None:
        return history.user_ids
    from rectool.artifacts import open_dataset, require_columns

    ds = open_dataset(path, "--users")
    require_columns(ds.schema, [USER_ID], f"--users {os.fspath(path)}")
    label = f"--users {os.fspath(path)}"
    ids = int_column(read_table(ds, label, columns=[USER_ID])[USER_ID], label, USER_ID)
    return np.unique(ids)


def run_baseline(method: Method, train: str | os.PathLike[str], output: str | os.PathLike[str], *,
                 history: str | os.PathLike[str] | None = None, users: str | os.PathLike[str] | None = None,
                 exclude: str = "history", k: int = 200, neighbours: int = 200, similarity: Similarity = "cosine",
                 params: ClassicalParams | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run one baseline from files and write its recall dataset; returns the summary figures.
    ``params``: the classical method's parameters (``item-knn``, ``ease``, ``als``; defaults when None)."""
    if method not in get_args(Method):
        raise UserError(f"baseline {method}: choose {', '.join(get_args(Method))}")
    if params is not None and params.method != method:
        raise UserError(f"baseline {method}: parameters of {params.method} given")
    if k < 1:
        raise UserError(f"--k {k}: recommend at least one item")
    train_lists = read_user_lists(train, "--train")
    if len(train_lists.lists.values) == 0:
        raise UserError(f"--train {os.fspath(train)}: no interactions; give the training table")
    history_lists = read_user_lists(history, "--history") if history is not None else train_lists
    query = _users(users, history_lists)
    if exclude == "history":
        excluded: UserLists | None = history_lists
    elif exclude == "none":
        excluded = None
    else:
        excluded = read_user_lists(exclude, "--exclude")
    extra: dict[str, Any] = {}
    if method == "popularity":
        topk = popularity_topk(train_lists, query, k, excluded)
    elif method == "item-cf":
        topk = item_cf_topk(train_lists, query, history_lists, k, neighbours=neighbours, similarity=similarity,
                            exclude=excluded)
        extra = {"neighbours": neighbours, "similarity": similarity}
    else:
        params = params or CLASSICAL[method]()
        topk = classical_topk(params, train_lists, query, history_lists, k, exclude=excluded)
        extra = params.model_dump(exclude={"method"})
    inputs = [train] + [p for p in (history, users) if p is not None]
    summary = write_recalls(output, query, topk, overwrite=overwrite, inputs=inputs, method=method, exclude=exclude,
                            **extra)
    return {"method": method, "exclude": exclude, **summary}
