"""The shared heap top-k (``rectool.topk``) against a plain sort: rank and NaN rule."""

from __future__ import annotations

import numpy as np
import pytest

from rectool.topk import heap_offer, heap_sort


def _reference(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the best ``k``: score desc (NaN as -inf), then index asc."""
    ranked = np.where(np.isnan(scores), -np.inf, scores)
    return sorted(range(len(scores)), key=lambda j: (-ranked[j], j))[:k]


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_heap_matches_sort_in_any_order(k):
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 6, 30).astype(np.float32)  # many ties
    scores[::7] = np.nan
    scores[3], scores[4] = -np.inf, np.inf
    want = _reference(scores, k)
    for order in (np.arange(30), np.arange(30)[::-1], rng.permutation(30)):
        hs, hi, n = np.empty(k, np.float32), np.empty(k, np.int64), 0
        for j in order:
            n = heap_offer(hs, hi, n, k, scores[j], j)
        heap_sort(hs, hi, n)
        assert hi[:n].tolist() == want
        ranked = np.where(np.isnan(scores[want]), -np.inf, scores[want])
        assert np.array_equal(hs[:n], ranked)  # NaN is kept and returned as -inf


def test_docstring_examples():
    hs, hi, n = np.empty(2), np.empty(2, np.int64), 0
    for idx, s in enumerate([0.5, np.nan, 0.9, 0.5]):
        n = heap_offer(hs, hi, n, 2, s, idx)
    heap_sort(hs, hi, n)
    assert hs.tolist() == [0.9, 0.5] and hi.tolist() == [2, 0]
    hs, hi, n = np.empty(2), np.empty(2, np.int64), 0
    for idx, s in enumerate([np.nan, -1.0]):
        n = heap_offer(hs, hi, n, 2, s, idx)
    heap_sort(hs, hi, n)
    assert hs.tolist() == [-1.0, -np.inf] and hi.tolist() == [1, 0]
