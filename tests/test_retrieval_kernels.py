"""Each retrieval kernel against a plain NumPy/Python reference, on random small inputs."""

from __future__ import annotations

import numpy as np
import pytest

from rectool.retrieval import kernels
from rectool.retrieval.formats import Ragged

RNG = np.random.default_rng(42)


def _random_lists(n: int, high: int, max_len: int, unique: bool = True) -> Ragged:
    lists = []
    for _ in range(n):
        size = int(RNG.integers(0, max_len + 1))
        lists.append(RNG.choice(high, size=min(size, high), replace=not unique).tolist())
    return Ragged.from_lists(lists)


def test_sort_rows_and_duplicates():
    lists = _random_lists(30, 50, 8)
    assert kernels.sort_rows(lists.offsets, lists.values).tolist() == [v for row in lists.to_lists()
                                                                       for v in sorted(row)]
    assert kernels.first_duplicate_in_rows(lists.offsets, lists.values) == -1
    dup = Ragged.from_lists([[1, 2], [4, 3, 4], [5, 5]])
    assert kernels.first_duplicate_in_rows(dup.offsets, dup.values) == 1


def test_mask_listed_matches_a_plain_loop():
    rng = np.random.default_rng(4)
    offsets = np.array([0, 3, 3, 7], dtype=np.int64)
    values = rng.integers(0, 20, size=7).astype(np.int64)
    rows = rng.integers(0, 3, size=200).astype(np.int64)
    items = rng.integers(0, 20, size=200).astype(np.int64)
    scores = rng.standard_normal(200).astype(np.float32)
    expected = scores.copy()
    for i in range(200):
        if items[i] in set(values[offsets[rows[i]]:offsets[rows[i] + 1]].tolist()):
            expected[i] = -np.inf
    kernels.mask_listed(scores, rows, items, offsets, kernels.sort_rows(offsets, values))
    np.testing.assert_array_equal(scores, expected)


def test_gather_marks_visited_and_never_repeats():
    n_nodes = 60
    graph = _random_lists(n_nodes, n_nodes, 6)
    candidates = _random_lists(9, n_nodes, 5)
    visited = np.zeros((9, (n_nodes + 7) // 8), dtype=np.uint8)
    seen = [set(RNG.choice(n_nodes, 10).tolist()) for _ in range(9)]
    pre = Ragged.from_lists([sorted(s) for s in seen])
    kernels.mark_visited(visited, pre.offsets, pre.values)
    upper = kernels.neighbour_counts(candidates.offsets, candidates.values, graph.offsets)
    slots = np.concatenate([[0], np.cumsum(upper)])
    buffer = np.full(slots[-1], -1, dtype=np.int32)
    counts = kernels.gather_unvisited(candidates.offsets, candidates.values, graph.offsets,
                                      graph.values.astype(np.int32), visited, slots, buffer)
    offsets, nodes = kernels.compact(buffer, slots, counts)
    for u in range(9):
        expected = []
        for c in candidates.row(u):
            for v in graph.row(c):
                if v not in seen[u]:
                    seen[u].add(v)
                    expected.append(v)
        assert nodes[offsets[u]:offsets[u + 1]].tolist() == expected
        assert upper[u] == sum(len(graph.row(c)) for c in candidates.row(u))
        bits = np.unpackbits(visited[u], bitorder="little")[:n_nodes]
        assert set(np.flatnonzero(bits).tolist()) == seen[u]


@pytest.mark.parametrize("ef", [1, 5, 12])
def test_merge_into_top_keeps_the_best_and_counts_entries(ef):
    n = 8
    top_nodes = np.full((n, 12), -1, dtype=np.int32)
    top_scores = np.full((n, 12), -np.inf, dtype=np.float32)
    top_len = np.zeros(n, dtype=np.int64)
    reference = [[] for _ in range(n)]  # (score, node), best first
    for step in range(4):
        new = _random_lists(n, 1000, 7)
        scores = RNG.integers(0, 20, len(new.values)).astype(np.float32)  # ties on purpose
        scores[::9] = np.nan
        took = kernels.merge_into_top(top_nodes, top_scores, top_len, ef, new.offsets, new.values.astype(np.int32),
                                      scores)
        for u in range(n):
            old = [(-s, 0, i, node) for i, (s, node) in enumerate(reference[u])]
            fresh = [(-scores[p], 1, p, int(new.values[p])) for p in range(new.offsets[u], new.offsets[u + 1])
                     if scores[p] == scores[p]]
            kept = sorted(old + fresh)[:ef]
            reference[u] = [(-neg, node) for neg, _, _, node in kept]
            assert top_nodes[u, :top_len[u]].tolist() == [node for _, node in reference[u]], (step, u)
            assert took[u] == sum(new_ for _, new_, _, _ in kept)


def test_pick_unexpanded_takes_the_best_new_nodes_and_marks_them():
    n, width, n_nodes = 7, 10, 50
    top_nodes = np.stack([RNG.permutation(n_nodes)[:width] for _ in range(n)]).astype(np.int32)
    top_len = RNG.integers(0, width + 1, n)
    expanded = np.zeros((n, (n_nodes + 7) // 8), dtype=np.uint8)
    done = [set(RNG.choice(top_nodes[u], 3).tolist()) for u in range(n)]
    pre = Ragged.from_lists([sorted(d) for d in done])
    kernels.mark_visited(expanded, pre.offsets, pre.values)
    for limit in (2, 3, 100):
        offsets, nodes = kernels.pick_unexpanded(top_nodes, top_len, expanded, limit)
        for u in range(n):
            want = [int(v) for v in top_nodes[u, :top_len[u]] if v not in done[u]][:limit]
            done[u].update(want)
            assert nodes[offsets[u]:offsets[u + 1]].tolist() == want
            assert set(np.flatnonzero(np.unpackbits(expanded[u], bitorder="little")).tolist()) == done[u]


def test_take_top_skips_excluded():
    top_nodes = np.array([[4, 2, 9, 7], [1, 3, -1, -1]], dtype=np.int32)
    top_scores = np.array([[4, 3, 2, 1], [9, 8, -np.inf, -np.inf]], dtype=np.float32)
    excl = Ragged.from_lists([[2, 7], []])
    nodes, scores, lengths = kernels.take_top(top_nodes, top_scores, np.array([4, 2]), 3, excl.offsets, excl.values)
    assert nodes.tolist() == [[4, 9, -1], [1, 3, -1]] and lengths.tolist() == [2, 2]
    assert scores[0, :2].tolist() == [4, 2]


def test_dot_pairs():
    u, i = RNG.standard_normal((5, 7)).astype(np.float32), RNG.standard_normal((30, 7)).astype(np.float32)
    pu, pi = RNG.integers(0, 5, 100), RNG.integers(0, 30, 100)
    assert np.allclose(kernels.dot_pairs(u, i, pu, pi), np.einsum("ij,ij->i", u[pu], i[pi]), rtol=1e-5)


@pytest.mark.parametrize("k", [1, 7, 64])
def test_topk_update_is_exact_over_blocks(k):
    scores = RNG.integers(0, 30, (6, 200)).astype(np.float32)  # many ties
    scores[0, 5] = np.nan
    excl = _random_lists(6, 200, 20)
    excl = Ragged(excl.offsets, kernels.sort_rows(excl.offsets, excl.values))
    heap_s = np.full((6, k), -np.inf, dtype=np.float32)
    heap_i = np.full((6, k), -1, dtype=np.int64)
    heap_n = np.zeros(6, dtype=np.int64)
    for lo in range(0, 200, 33):
        kernels.topk_update(scores[:, lo:lo + 33].copy(), lo, heap_s, heap_i, heap_n, excl.offsets, excl.values)
    kernels.heap_sorted(heap_s, heap_i, heap_n)
    for r in range(6):
        allowed = [(-scores[r, c], c) for c in range(200) if c not in set(excl.row(r)) and scores[r, c] == scores[r, c]]
        expected = [c for _, c in sorted(allowed)[:k]]
        assert heap_i[r, :heap_n[r]].tolist() == expected


def test_filter_rows():
    labels = np.array([[3, 1, 2, 5], [4, -1, -1, -1]], dtype=np.int64)
    scores = np.arange(8, dtype=np.float32).reshape(2, 4)
    excl = Ragged.from_lists([[1], [4]])
    out, sc, lengths = kernels.filter_rows(labels, scores, 2, excl.offsets, excl.values)
    assert out.tolist() == [[3, 2], [-1, -1]] and sc[0].tolist() == [0, 2] and lengths.tolist() == [2, 0]


def test_rank_metrics_and_overlap():
    rec = Ragged.from_lists([[7, 3, 9], [1, 2, 3]])
    truth = Ragged.from_lists([[3, 9], [8]])
    hits, dcg, rr = kernels.rank_metrics(rec.offsets, rec.values, np.array([0, 1]), truth.offsets, truth.values,
                                         np.array([1, 3]))
    assert hits.tolist() == [[0, 2], [0, 0]]
    assert dcg[0].tolist() == pytest.approx([0, 1 / np.log2(3) + 1 / np.log2(4)]) and rr[0].tolist() == [0, 0.5]
    a, b = Ragged.from_lists([[1, 2, 3]]), Ragged.from_lists([[3, 1, 5]])
    both = kernels.overlap_at_k(a.offsets, a.values, np.array([0]), b.offsets, b.values, np.array([0]),
                                np.array([1, 2, 3]))
    assert both.tolist() == [[0, 1, 2]]


def test_first_rank_counts_handles_any_ids():
    values = np.array([5, 6, 5, 7, -2**62, 2**62, -2**62], dtype=np.int64)
    ranks = np.array([0, 1, 0, 1, 2, 0, 1])
    assert kernels.first_rank_counts(values, ranks, 3).tolist() == [2, 3, 0]
    big = RNG.integers(-2**63, 2**63 - 1, 5000, dtype=np.int64)
    big_ranks = RNG.integers(0, 10, 5000)
    counts = kernels.first_rank_counts(np.concatenate([big, big]), np.concatenate([big_ranks, big_ranks]), 10)
    first = {}
    for v, r in zip(big.tolist(), big_ranks.tolist(), strict=True):
        first[v] = min(r, first.get(v, 99))
    assert counts.tolist() == np.bincount(list(first.values()), minlength=10).tolist()


def test_popular_topk():
    excl = Ragged.from_lists([[2], []])
    out, scores, lengths = kernels.popular_topk(np.array([4, 2, 7]), np.array([9, 5, 1], np.float32), excl.offsets,
                                                excl.values, 2)
    assert out.tolist() == [[4, 7], [4, 2]] and scores.tolist() == [[9, 1], [9, 5]] and lengths.tolist() == [2, 2]
