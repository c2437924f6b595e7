"""The repeat bonus at retrieval: items already in a user's history get the model's learned bonus.

A two-tower trained with ``model.repeat`` scores candidate c for user u as
``u·v_c + bonus[min(count_u(c), max_count)]``, where ``count_u(c)`` is how often c occurs in
the user's history column as the user tower reads it (the last ``max_len`` items) and
``bonus[0] = 0``. Only history items carry a bonus, so the exact top-K is the best K of the
union of (a) the plain top-K of every other item (a search with the history excluded) and
(b) the history items themselves, scored with their bonus. ``search_with_repeat`` builds it
around any plain search (exact or HNSW), so the result is exact whenever (a) is.

``retrieve --repeat-bonus B`` replaces the learned bonus with B for every history item (or
adds one to any tower export, with ``--repeat-column``): a knob to tune on validation data,
or to switch repeats off (0).

Inputs: the export's ``parts.user_tower.repeat`` ({column, bonus}, written by ``export``),
the user-tower tensors of a batch of users (padded ids + lengths), the user vectors, and
a lookup of item vectors (embedding-table rows, or the vectors stored in the index).

    repeat = RepeatBonus.from_part(manifest.part("user_tower"))
    history, bonus = repeat.history(x)
    topk = search_with_repeat(lambda excl: brute_search_dot(q, items, k, item_ids=ids, exclude=excl),
                              q, history, bonus, table_vectors, exclude, k)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rectool.errors import UserError
from rectool.programs.inputs import LEN_SUFFIX
from rectool.programs.manifest import PartManifest
from rectool.retrieval.formats import Ragged, TopK, union_topk
from rectool.retrieval.item_to_item import MixedScores

# item ids -> (vectors [m, D] float32, found [m] bool): where the search's item vectors live
VectorLookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RepeatBonus:
    column: str          # the user tower's history column (raw item ids)
    bonus: np.ndarray    # float32 [max_count + 1]: bonus[c] for an item found c times, bonus[0] = 0

    @classmethod
    def from_part(cls, part: PartManifest) -> RepeatBonus | None:
        """The learned bonus an export's user tower carries (``model.repeat``), if any."""
        if part.repeat is None:
            return None
        return cls(part.repeat.column, np.asarray(part.repeat.bonus, dtype=np.float32))

    @classmethod
    def resolve(cls, part: PartManifest, bonus: float | None, column: str | None,
                list_columns: list[str]) -> RepeatBonus | None:
        """The export's learned bonus, or ``retrieve --repeat-bonus B [--repeat-column C]``: B for
        every history item, whatever its count (any tower export; C must be a list column the
        user tower reads, default the export's repeat column)."""
        learned = cls.from_part(part)
        if bonus is None and column is None:
            return learned
        if bonus is None:
            raise UserError("--repeat-column needs --repeat-bonus (the score added to the history items)")
        if not np.isfinite(bonus):
            raise UserError(f"--repeat-bonus {bonus}: give a finite number (0 turns the bonus off)")
        column = column or (learned.column if learned else None)
        if column is None:
            raise UserError("--repeat-bonus: this export has no repeat term; name the history with --repeat-column "
                            "(a list column the user tower reads, e.g. hist_item_ids)")
        if column not in list_columns:
            raise UserError(f"--repeat-column {column}: not a list column the user tower reads "
                            f"({', '.join(list_columns) or 'it reads none'})")
        return cls(column, np.array([0.0, bonus], dtype=np.float32))

    def history(self, x: dict[str, torch.Tensor]) -> tuple[Ragged, np.ndarray]:
        """Each user's distinct history items (sorted) and the bonus each one earns."""
        ids, counts = distinct_counts(x[self.column].numpy(), x[self.column + LEN_SUFFIX].numpy())
        return ids, self.bonus[np.minimum(counts, len(self.bonus) - 1)]


def distinct_counts(ids: np.ndarray, lengths: np.ndarray) -> tuple[Ragged, np.ndarray]:
    """Padded rows [n, L] (the first ``lengths[i]`` valid) -> distinct ids per row (sorted), their counts.

    ``distinct_counts([[5, 3, 5], [2, 0, 0]], [3, 1])`` -> ids ``[[3, 5], [2]]``, counts ``[1, 2, 1]``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    n, width = ids.shape
    valid = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
    keyed = np.sort(np.where(valid, ids, np.iinfo(np.int64).max), axis=1)  # padding sorts last
    kept = np.arange(width)[None, :] < valid.sum(1)[:, None]
    rows = np.broadcast_to(np.arange(n)[:, None], (n, width))[kept]
    values = keyed[kept]
    starts = np.ones(len(values), dtype=bool)
    starts[1:] = (values[1:] != values[:-1]) | (rows[1:] != rows[:-1])
    first = np.flatnonzero(starts)
    counts = np.diff(np.append(first, len(values)))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[first], minlength=n), out=offsets[1:])
    return Ragged(offsets, values[first]), counts.astype(np.int64)


def merge_lists(a: Ragged | None, b: Ragged) -> Ragged:
    """Row-wise concatenation of two sets of lists (the exclusion lists and the histories)."""
    if a is None:
        return b
    rows = np.concatenate([np.repeat(np.arange(len(a)), a.lengths()), np.repeat(np.arange(len(b)), b.lengths())])
    order = np.argsort(rows, kind="stable")
    offsets = a.offsets + b.offsets
    return Ragged(offsets, np.concatenate([a.values, b.values])[order])


def search_with_repeat(search: Callable[[Ragged], TopK], queries: np.ndarray, history: Ragged, bonus: np.ndarray,
                       vectors: VectorLookup, exclude: Ragged | None, k: int, mix: MixedScores | None = None) -> TopK:
    """Top-``k`` by u·v (or ``mix``'s score, which ``search`` then uses too) plus the history items' bonus;
    ``search(exclude)`` is the plain search."""
    plain = search(merge_lists(exclude, history))
    rows = np.repeat(np.arange(len(history)), history.lengths())
    item_vecs, found = vectors(history.values)
    scores = np.einsum("ij,ij->i", np.asarray(queries, dtype=np.float32)[rows], item_vecs)
    if mix is not None:
        scores = mix.pairs(scores, rows, item_vecs)
    scores = scores + bonus
    keep = found
    if exclude is not None and len(exclude.values):
        from rectool.retrieval.kernels import mask_listed, sort_rows

        masked = scores.astype(np.float32)
        mask_listed(masked, rows, history.values, exclude.offsets, sort_rows(exclude.offsets, exclude.values))
        keep = found & np.isfinite(masked)
    rows, ids, scores = rows[keep], history.values[keep], scores[keep].astype(np.float32)
    lengths = np.bincount(rows, minlength=len(history))
    width = max(int(lengths.max(initial=0)), 1)
    col = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    own_ids = np.full((len(history), width), -1, dtype=np.int64)
    own_scores = np.full((len(history), width), -np.inf, dtype=np.float32)
    own_ids[rows, col], own_scores[rows, col] = ids, scores
    merged = union_topk([plain, TopK(own_ids, own_scores, lengths)], k)
    return TopK(merged.item_ids, merged.scores, merged.lengths, plain.n_scored)


def table_lookup(item_ids: np.ndarray, item_vecs: np.ndarray) -> VectorLookup:
    """Item vectors from an embedding table (``retrieve --method brute``)."""
    from rectool.retrieval.formats import IdMap

    id_map = IdMap(item_ids)

    def lookup(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = id_map.rows(ids)
        return item_vecs[np.maximum(rows, 0)], rows >= 0

    return lookup


def index_lookup(index) -> VectorLookup:
    """Item vectors stored in an hnsw index (ip or cosine; l2 distances do not add to a bonus)."""
    from rectool.retrieval.formats import IdMap

    if index.space == "l2":
        raise UserError("this model adds a repeat bonus on the u·v scale: search an index built with --space ip or "
                        "cosine (hnsw build --space ip), or use --method brute")
    id_map = IdMap(index.ids)

    def lookup(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = id_map.rows(ids)
        found = rows >= 0
        vecs = np.zeros((len(ids), index.dim), dtype=np.float32)
        if found.any():
            vecs[found] = np.asarray(index.index.get_items(rows[found].tolist()), dtype=np.float32)
        return vecs, found

    return lookup


def scored_queries(space: str, queries: np.ndarray) -> np.ndarray:
    """The queries as a search in ``space`` scores them (cosine: unit length; hnswlib stores unit items)."""
    q = np.asarray(queries, dtype=np.float32)
    if space == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), np.float32(1e-30))
    return q
