"""Exact top-K: score every item for every user, in blocks, with flat memory.

Two entry points, one selection kernel (``kernels.topk_update``: per-user min-heaps of
size k fed block by block, skipping excluded items; the exact top-k under score desc,
then item row asc):

``brute_search_dot(queries, items, k, space=...)``
    dense embeddings (two-tower ``retrieve --method brute``): a (users x items) block of
    scores per matrix product. Scores are those of ``hnsw_search`` for the same space
    (inner product, cosine, or minus the squared L2 distance), so the two compare; with
    ``mix``, inner products mixed with the item-to-item terms of ``retrieve --item-to-item /
    --item-similarity`` (``rectool.retrieval.item_to_item``).
``brute_search_dot_torch(queries, items, k)``
    the same inner-product search as batched matrix products and ``torch.topk`` on the
    items tensor's device: ``retrieve --method brute --device cuda``. Same top-k and
    scores; items tied on score may come in another order.

``brute_search(scorer, n_users, n_items, k)``
    any pairwise model through the NANN scorer callback
    ``scorer(user_index int64[], item_row int64[]) -> float32[]`` over flat pairs (at
    most ``max_pairs`` per call): NANN's "recall-all" with the same model.

``brute_search_rows(score_rows, n_users, n_items, k)``
    dense score rows from any model that scores every item at once (ALS, EASE, item-kNN:
    ``rectool.retrieval.classical``).

All return a ``TopK`` of item ids (``item_ids[row]``, or the rows themselves) with
``n_scored`` = the items scored per user.

Example::

    topk = brute_search_dot(user_emb, item_emb, k=200, item_ids=ids, exclude=history)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from rectool.errors import UserError
from rectool.retrieval import kernels
from rectool.retrieval.formats import IdMap, Ragged, TopK, no_exclusion
from rectool.retrieval.item_to_item import MixedScores
from rectool.retrieval.nann_search import Scorer, maybe_progress

if TYPE_CHECKING:
    import torch


class _Heaps:
    """Running top-k of a batch of users."""

    def __init__(self, n: int, k: int) -> None:
        self.scores = np.full((n, k), -np.inf, dtype=np.float32)
        self.rows = np.full((n, k), -1, dtype=np.int64)
        self.count = np.zeros(n, dtype=np.int64)

    def finish(self, item_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        kernels.heap_sorted(self.scores, self.rows, self.count)
        valid = np.arange(self.rows.shape[1]) < self.count[:, None]
        ids = self.rows if item_ids is None else item_ids[np.maximum(self.rows, 0)]
        return np.where(valid, ids, -1), np.where(valid, self.scores, -np.inf), self.count


def _exclusion_rows(exclude: Ragged | None, n_users: int, n_items: int, item_ids: np.ndarray | None) -> Ragged:
    if exclude is None:
        return no_exclusion(n_users)
    if len(exclude) != n_users:
        raise ValueError(f"{len(exclude)} exclusion lists for {n_users} users")
    return IdMap(item_ids if item_ids is not None else np.arange(n_items)).rows_ragged(exclude)


def _prepare(x: np.ndarray, space: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if space == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-30))
    return x


def brute_search_blocks(score_block: Callable[[int, int, int, int], np.ndarray], n_users: int, n_items: int,
                        k: int, *, item_ids: np.ndarray | None = None, exclude: Ragged | None = None,
                        user_batch: int = 1024, item_block: int | Callable[[int, int], int] = 32_768,
                        progress: bool = True) -> TopK:
    """The one exact top-``k`` loop: ``score_block(start, stop, lo, hi)`` gives users start..stop's scores of
    item rows lo..hi (float32 [stop - start, hi - lo]), folded into per-user heaps; ``item_block`` is the
    items per block, or a function of (start, stop) giving it."""
    k = min(k, n_items)
    excl = _exclusion_rows(exclude, n_users, n_items, item_ids)
    out = (np.full((n_users, k), -1, dtype=np.int64), np.full((n_users, k), -np.inf, dtype=np.float32),
           np.zeros(n_users, np.int64))
    with maybe_progress(progress, "exact search", n_users) as bar:
        for start in range(0, n_users, user_batch):
            stop = min(n_users, start + user_batch)
            heaps = _Heaps(stop - start, k)
            sub = excl.slice(start, stop)
            step = max(1, item_block(start, stop) if callable(item_block) else item_block)
            for lo in range(0, n_items, step):
                hi = min(n_items, lo + step)
                scores = np.ascontiguousarray(score_block(start, stop, lo, hi), dtype=np.float32)
                kernels.topk_update(scores, lo, heaps.scores, heaps.rows, heaps.count, sub.offsets, sub.values)
            for target, value in zip(out, heaps.finish(item_ids), strict=True):
                target[start:stop] = value
            bar.advance(stop - start)
    return TopK(out[0], out[1], out[2], np.full(n_users, n_items, dtype=np.int64))


def brute_search_dot(queries: np.ndarray, items: np.ndarray, k: int, *, space: str = "ip",
                     item_ids: np.ndarray | None = None, exclude: Ragged | None = None,
                     user_batch: int = 1024, item_block: int = 32_768, progress: bool = True,
                     mix: MixedScores | None = None) -> TopK:
    """Exact top-``k`` items per query by inner product (``ip``), cosine or L2 (``-|q - x|^2``);
    with ``mix`` (ip only), by the inner product mixed with the item-to-item terms."""
    if space not in ("ip", "l2", "cosine"):
        raise UserError(f"space {space}: choose ip, l2 or cosine")
    if mix is not None and space != "ip":
        raise UserError("the item-to-item terms mix inner products: search with space ip")
    q, x = _prepare(queries, space), _prepare(items, space)
    if q.ndim != 2 or x.ndim != 2 or q.shape[1] != x.shape[1]:
        raise UserError(f"query embeddings {q.shape} and item embeddings {x.shape} differ in dimension; use the "
                        "user and item towers of one model")
    x_sq = np.einsum("ij,ij->i", x, x) if space == "l2" else None
    q_sq = np.einsum("ij,ij->i", q, q) if space == "l2" else None

    def score_block(start: int, stop: int, lo: int, hi: int) -> np.ndarray:
        block = q[start:stop] @ x[lo:hi].T
        if x_sq is not None and q_sq is not None:
            block = np.float32(2.0) * block - x_sq[lo:hi][None, :] - q_sq[start:stop, None]
        return block if mix is None else mix.block(block, start, stop, x[lo:hi])

    step = item_block if mix is None else (lambda start, stop: mix.item_block(start, stop, item_block))
    return brute_search_blocks(score_block, q.shape[0], x.shape[0], k, item_ids=item_ids, exclude=exclude,
                               user_batch=user_batch, item_block=step, progress=progress)


def brute_search_rows(score_rows: Callable[[int, int], np.ndarray], n_users: int, n_items: int, k: int, *,
                      item_ids: np.ndarray | None = None, exclude: Ragged | None = None, user_batch: int = 1024,
                      progress: bool = True) -> TopK:
    """Exact top-``k`` per user from dense score rows: ``score_rows(lo, hi)`` gives users lo..hi's scores of
    every item, float32 [hi - lo, n_items] (the classical methods, ``rectool.retrieval.classical``)."""
    return brute_search_blocks(lambda start, stop, lo, hi: score_rows(start, stop), n_users, n_items, k,
                               item_ids=item_ids, exclude=exclude, user_batch=user_batch,
                               item_block=max(n_items, 1), progress=progress)


def brute_search(scorer: Scorer, n_users: int, n_items: int, k: int, *, item_ids: np.ndarray | None = None,
                 exclude: Ragged | None = None, max_pairs: int = 1 << 22, progress: bool = True) -> TopK:
    """Exact top-``k`` per user by scoring all ``n_items`` rows with a pairwise scorer."""
    block = max(1, min(n_items, max_pairs))

    def score_block(start: int, stop: int, lo: int, hi: int) -> np.ndarray:
        users = np.repeat(np.arange(start, stop, dtype=np.int64), hi - lo)
        rows = np.tile(np.arange(lo, hi, dtype=np.int64), stop - start)
        return np.asarray(scorer(users, rows), dtype=np.float32).reshape(stop - start, hi - lo)

    return brute_search_blocks(score_block, n_users, n_items, k, item_ids=item_ids, exclude=exclude,
                               user_batch=max(1, max_pairs // block), item_block=block, progress=progress)


def brute_search_dot_torch(queries: np.ndarray, items: torch.Tensor, k: int, *, item_ids: np.ndarray | None = None,
                           exclude: Ragged | None = None, user_batch: int = 4096) -> TopK:
    """Exact top-``k`` by inner product on ``items``' device (a GPU): one matrix product and one
    ``torch.topk`` per user batch, excluded items set to -inf on the device."""
    import torch

    n, n_items = queries.shape[0], items.shape[0]
    if queries.ndim != 2 or queries.shape[1] != items.shape[1]:
        raise UserError(f"query embeddings {queries.shape} and item embeddings {tuple(items.shape)} differ in "
                        "dimension; use the user and item towers of one model")
    k = min(k, n_items)
    excl = _exclusion_rows(exclude, n, n_items, item_ids)
    out_rows = np.empty((n, k), dtype=np.int64)
    out_scores = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, user_batch):
        stop = min(n, start + user_batch)
        q = torch.from_numpy(np.ascontiguousarray(queries[start:stop], dtype=np.float32)).to(items.device)
        block = q @ items.T
        sub = excl.slice(start, stop)
        if len(sub.values):
            users = np.repeat(np.arange(stop - start), np.diff(sub.offsets))
            block[torch.from_numpy(users).to(items.device),
                  torch.from_numpy(sub.values.astype(np.int64)).to(items.device)] = float("-inf")
        scores, rows = torch.topk(block, k, dim=1)
        out_scores[start:stop], out_rows[start:stop] = scores.cpu().numpy(), rows.cpu().numpy()
    valid = np.isfinite(out_scores)  # excluded items are the only -inf: they sort last
    lengths = valid.sum(axis=1).astype(np.int64)
    ids = out_rows if item_ids is None else item_ids[out_rows]
    return TopK(np.where(valid, ids, -1), np.where(valid, out_scores, -np.inf).astype(np.float32), lengths,
                np.full(n, n_items, dtype=np.int64))
