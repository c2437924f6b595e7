"""Item-to-item scores from a two-tower's own towers: ``retrieve --item-to-item / --item-similarity``.

A mean-pooled user vector dilutes one strongly related history item among many: item-kNN
finds a new item from a single co-bought history item, a user vector of twenty items
barely moves towards it. Two item-to-item views of the same trained towers fix that:

* ``--item-to-item W1``: each history item alone through the user tower (a one-item
  history: the item's "next item" query) gives a vector ``a_j``;
* ``--item-similarity W2``: the history item's own item-tower vector ``b_j`` (the items the
  item tower puts near it).

Each enters as a soft maximum over the user's history items, and the score of item v is

    s(v) = (1 − W1 − W2) · u·v + W1 · T log Σ_j exp(a_j·v / T) + W2 · T log Σ_j exp(b_j·v / T)

(T → 0: the best single history item's score, as a nearest neighbour; large T: their mean
plus T·log n). A term without history items for a user (empty history; for W2, items not
in the embedding table) gives its weight back to u·v, so W1 = W2 = 0 is the plain score.
The towers are those trained; W1, W2 and T are chosen on validation data like
``--repeat-bonus`` (Taobao: BENCHMARKS.md).

The score is not an inner product, so only ``retrieve --method brute`` (exact: every item
scored, in blocks whose (history items × items) matrix stays within ``BLOCK_FLOATS``)
applies it; with ``--repeat-bonus`` the history items get the same score plus their bonus.

Inputs: the exported user tower, a batch of its input tensors (every list column the tower
reads is sliced position by position: the history and its parallel attributes, e.g. item
and category ids), the user vectors, and for W2 the history item ids and an item-vector
lookup. Example::

    mix = ItemToItem(0.35, 0.35, 0.05).scores(program, x, user_vectors, history, lookup)
    topk = brute_search_dot(user_vectors, item_vecs, k, item_ids=ids, mix=mix)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rectool.errors import UserError
from rectool.programs.inputs import LEN_SUFFIX

BLOCK_FLOATS = 1 << 23  # (history items x items) scores per block: 32 MB of float32


@dataclass(frozen=True)
class ItemToItem:
    item_to_item: float   # W1: the share of the user tower's one-item queries
    similarity: float     # W2: the share of the history items' own item vectors
    temperature: float    # T: the soft maximum's temperature

    @classmethod
    def resolve(cls, item_to_item: float | None, similarity: float | None, temperature: float) -> ItemToItem | None:
        w1, w2 = float(item_to_item or 0.0), float(similarity or 0.0)
        for flag, w in (("--item-to-item", w1), ("--item-similarity", w2)):
            if not 0 <= w <= 1:
                raise UserError(f"{flag} {w:g}: give a weight in [0, 1] (0: off)")
        if w1 + w2 > 1:
            raise UserError(f"--item-to-item {w1:g} + --item-similarity {w2:g} exceed 1: their sum is the share "
                            "taken from u·v")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise UserError(f"--item-to-item-temperature {temperature}: give a positive number (e.g. 0.05)")
        return None if w1 == w2 == 0 else cls(w1, w2, float(temperature))

    def scores(self, program: torch.nn.Module, x: dict[str, torch.Tensor], queries: np.ndarray,
               history: tuple[np.ndarray, np.ndarray] | None = None,
               lookup: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None) -> MixedScores:
        """The mixed score of the batch ``x``: the user tower run once per history item (W1), and
        (W2) the item vectors of ``history`` (padded item ids [n, L], lengths [n]) from ``lookup``."""
        dim = queries.shape[1]
        terms = []
        if self.item_to_item:
            singles, offsets = single_item_inputs(x)
            vectors = np.zeros((0, dim), dtype=np.float32)
            if offsets[-1]:
                with torch.inference_mode():
                    vectors = program(singles).float().numpy()
            terms.append(SoftMaxTerm(offsets, vectors, self.item_to_item))
        if self.similarity:
            if history is None or lookup is None:
                raise ValueError("--item-similarity needs the history item ids and an item-vector lookup")
            ids, lengths = history
            valid = np.arange(ids.shape[1])[None, :] < lengths[:, None]
            vectors, found = lookup(ids[valid])
            counts = np.bincount(np.nonzero(valid)[0][found], minlength=len(ids))
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            terms.append(SoftMaxTerm(offsets, np.asarray(vectors[found], dtype=np.float32), self.similarity))
        return MixedScores(np.asarray(queries, dtype=np.float32), terms, self.temperature)


def single_item_inputs(x: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """One input row per (user, history position): each list column cut to that position.

    Returns the rows (grouped by user, in history order) and the users' offsets into them [n + 1].
    The list columns must be parallel (equal lengths in each row), as a history and its attributes are.
    """
    lists = [k[:-len(LEN_SUFFIX)] for k in x if k.endswith(LEN_SUFFIX)]
    if not lists:
        raise UserError("--item-to-item needs a history: the user tower reads no list column")
    lengths = x[lists[0] + LEN_SUFFIX]
    for name in lists[1:]:
        if not torch.equal(x[name + LEN_SUFFIX], lengths):
            raise UserError(f"--item-to-item: list columns {lists[0]} and {name} differ in length within a row; "
                            "it needs parallel history columns (items and their attributes)")
    lengths_np = lengths.numpy().astype(np.int64)
    offsets = np.zeros(len(lengths_np) + 1, dtype=np.int64)
    np.cumsum(lengths_np, out=offsets[1:])
    owner = torch.from_numpy(np.repeat(np.arange(len(lengths_np)), lengths_np))
    position = torch.from_numpy(np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths_np))
    out: dict[str, torch.Tensor] = {}
    for key, value in x.items():
        if key.endswith(LEN_SUFFIX):
            out[key] = torch.ones(len(owner), dtype=value.dtype)
        elif key in lists:  # the item at that position, in the first slot of a zero-padded row of the same width
            single = torch.zeros((len(owner), value.shape[1]), dtype=value.dtype)
            single[:, 0] = value[owner, position]
            out[key] = single
        else:
            out[key] = value.index_select(0, owner)
    return out, offsets


@dataclass(frozen=True)
class SoftMaxTerm:
    """One view's vectors, grouped by user: user i's are vectors[offsets[i]:offsets[i + 1]]."""

    offsets: np.ndarray   # int64 [n + 1]
    vectors: np.ndarray   # float32 [m, D]
    weight: float


@dataclass(frozen=True)
class MixedScores:
    """The mixed score of a batch of users: their vectors and their terms' vectors."""

    queries: np.ndarray   # float32 [n, D]: u
    terms: list[SoftMaxTerm]
    temperature: float

    def item_block(self, start: int, stop: int, most: int) -> int:
        """Items per block for users start..stop: their (history items x items) scores within BLOCK_FLOATS."""
        rows = sum(int(t.offsets[stop] - t.offsets[start]) for t in self.terms)
        return max(64, min(most, BLOCK_FLOATS // max(rows, 1)))

    def block(self, dots: np.ndarray, start: int, stop: int, items: np.ndarray) -> np.ndarray:
        """Mix users start..stop's plain scores ``dots`` [b, h] (u·v of ``items`` [h, D])."""
        parts = []
        for t in self.terms:
            lo, hi = t.offsets[start], t.offsets[stop]
            counts = np.diff(t.offsets[start:stop + 1])
            scaled = (t.vectors[lo:hi] @ items.T) * np.float32(1.0 / self.temperature) if hi > lo else None
            parts.append((t.weight, counts, scaled))
        return self._mix(dots, parts)

    def pairs(self, dots: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Mix the plain scores ``dots`` [p] of (user row, item vector) pairs."""
        parts = []
        for t in self.terms:
            counts = np.diff(t.offsets)[rows]
            pair = np.repeat(np.arange(len(rows)), counts)
            j = np.repeat(t.offsets[rows], counts) + np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts,
                                                                                     counts)
            scaled = np.einsum("ij,ij->i", t.vectors[j], items[pair])[:, None] * np.float32(1.0 / self.temperature)
            parts.append((t.weight, counts, scaled if len(pair) else None))
        return self._mix(dots[:, None], parts)[:, 0]

    def _mix(self, dots: np.ndarray, parts: list) -> np.ndarray:
        """dots·(1 − Σ W of the terms a row has) + Σ W·T·logsumexp over the row's ``counts`` rows of ``scaled``."""
        dots = dots.astype(np.float32, copy=False)
        out = dots.copy()
        for weight, counts, scaled in parts:
            has = counts > 0
            if scaled is None or not has.any():
                continue
            starts = (np.cumsum(counts) - counts)[has]
            peak = np.maximum.reduceat(scaled, starts, axis=0)
            total = np.add.reduceat(np.exp(scaled - np.repeat(peak, counts[has], axis=0)), starts, axis=0)
            soft_max = np.float32(self.temperature) * (peak + np.log(total))
            out[has] += np.float32(weight) * (soft_max - dots[has])
        return out
