"""Numba kernels of ``rectool.tree.kernels`` against plain Python/NumPy references."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import tree_reference

from rectool.tree.kernels import (
    draw_excluding,
    expand_children,
    init_codes,
    merge_topk,
    segment_modes,
    topk_segments,
)


@pytest.mark.parametrize("n_items,n", [(1, 2), (2, 2), (5, 2), (13, 2), (7, 3), (100, 4), (1000, 3)])
def test_init_codes_match_recursive_reference(n_items, n):
    assert init_codes(n_items, n).tolist() == tree_reference.gen_codes(n_items, n)


def test_init_codes_docstring_example():
    assert init_codes(5, 2).tolist() == [6, 5, 4, 8, 7]


def _mode_reference(values, rank, first_seen):
    cnt = Counter(v for v in values if v >= 0)
    if not cnt:
        return -1
    first = {}
    for v, r in zip(values, rank, strict=True):
        if v >= 0:
            first[v] = min(first.get(v, r), r)
    return min(cnt, key=lambda v: (-cnt[v], first[v] if first_seen else v))


@pytest.mark.parametrize("first_seen", [False, True])
def test_segment_modes_match_counter(first_seen):
    rng = np.random.default_rng(1)
    values = rng.integers(-1, 4, 300)
    rank = rng.permutation(300)
    cuts = np.sort(rng.choice(np.arange(1, 300), 40, replace=False))
    lo, hi = np.r_[0, cuts], np.r_[cuts, 300]
    got = segment_modes(values, rank, lo, hi, 4, first_seen)
    want = [_mode_reference(values[a:b], rank[a:b], first_seen) for a, b in zip(lo, hi, strict=True)]
    assert got.tolist() == want
    assert segment_modes(np.array([2, 1]), np.array([0, 1]), np.array([0]), np.array([2]), 3, True).tolist() == [2]
    assert segment_modes(np.array([2, 1]), np.array([0, 1]), np.array([0]), np.array([2]), 3, False).tolist() == [1]


def test_topk_segments_matches_sort_with_ties_and_nan():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, 500).astype(np.float32)  # many ties
    scores[::37] = np.nan
    nodes = rng.permutation(500).astype(np.int64)
    offsets = np.array([0, 3, 3, 200, 500])
    got_n, got_s = topk_segments(scores, nodes, offsets, 10, True)
    set_n, _ = topk_segments(scores, nodes, offsets, 10, False)
    for b in range(4):
        seg = range(offsets[b], offsets[b + 1])
        ranked = sorted(seg, key=lambda j: (-(-np.inf if np.isnan(scores[j]) else scores[j]), nodes[j]))[:10]
        want_n = [int(nodes[j]) for j in ranked] + [-1] * (10 - len(ranked))
        assert got_n[b].tolist() == want_n
        assert sorted(set_n[b].tolist()) == sorted(want_n)
        assert np.isneginf(got_s[b][len(ranked):]).all()
    # signed zeros tie (the smaller node first), infinities rank at the ends, NaN ranks as -inf
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.5, 2.5], dtype=np.float32)
    got_n, got_s = topk_segments(special, np.array([6, 5, 4, 3, 2, 1, 0]), np.array([0, 7]), 7, True)
    assert got_n[0].tolist() == [4, 0, 5, 6, 1, 2, 3]
    assert got_s[0].tolist()[:5] == [np.inf, 2.5, 0.0, 0.0, -1.5] and np.isneginf(got_s[0][5:]).all()
    big = np.random.default_rng(6).random(5000).astype(np.float32)
    for k in (1, 2, 399, 400, 4999, 5000):
        sel, _ = topk_segments(big, np.arange(5000), np.array([0, 5000]), k, False)
        assert sorted(sel[0].tolist()) == sorted(np.argsort(-big, kind="stable")[:k].tolist())


def test_merge_topk_equals_one_pass():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 20, (6, 90)).astype(np.float32)
    nodes = np.arange(100, 190, dtype=np.int64)
    best_n = np.full((6, 7), -1, dtype=np.int64)
    best_s = np.full((6, 7), -np.inf, dtype=np.float32)
    for a in range(0, 90, 25):
        merge_topk(best_n, best_s, nodes[a:a + 25], np.ascontiguousarray(scores[:, a:a + 25]))
    one_n, one_s = topk_segments(scores.ravel(), np.tile(nodes, 6), np.arange(7) * 90, 7, True)
    assert np.array_equal(best_n, one_n) and np.array_equal(best_s, one_s)


def test_expand_children_matches_python():
    child_offsets = np.array([1, 3, 5, 6, 6, 6, 6, 6])  # 0 -> 1,2; 1 -> 3,4; 2 -> 5
    selected = np.array([[1, 2], [2, -1], [-1, -1]])
    out = np.full((3, 10), -7, dtype=np.int64)
    offsets = expand_children(selected, child_offsets, np.arange(8) * 10, out)
    assert offsets.tolist() == [0, 3, 4, 4]
    assert out[:, :4].tolist() == [[0, 0, 0, 1], [3, 4, 5, 5], [30, 40, 50, 50]] and (out[:, 4:] == -7).all()


def test_draw_excluding_is_distinct_never_positive_and_uniform():
    rng = np.random.default_rng(4)
    sizes = np.array([2, 5, 40, 1000])
    counts = np.array([1, 4, 39, 100])
    positive = np.stack([rng.integers(0, s, 3000) for s in sizes], axis=1)
    out = draw_excluding(positive, sizes, counts, rng.random((3000, counts.sum())))
    col = 0
    for level, (s, k) in enumerate(zip(sizes, counts, strict=True)):
        block = out[:, col:col + k]
        col += k
        assert ((block >= 0) & (block < s)).all()
        assert not (block == positive[:, level:level + 1]).any()
        assert all(len(set(row)) == k for row in block.tolist())
    # level of 5 with 4 negatives: exactly the 4 others; level of 1000: every value drawn about equally often
    assert all(set(row) == set(range(5)) - {p} for row, p in zip(out[:, 1:5].tolist(), positive[:, 1], strict=True))
    hits = np.bincount(out[:, -100:].ravel(), minlength=1000)
    assert hits.min() > 200 and hits.max() < 420  # expected 300 each


def test_draw_excluding_is_deterministic_in_the_uniforms():
    u = np.random.default_rng(5).random((10, 3))
    pos = np.array([[3]] * 10)
    a = draw_excluding(pos, np.array([50]), np.array([3]), u)
    b = draw_excluding(pos, np.array([50]), np.array([3]), u.copy())
    assert np.array_equal(a, b)
