"""NANN search: numba search == plain-Python reference; exhaustive search == brute force;
nothing is scored twice; one scorer call per step."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from retrieval_helpers import clustered, write_embeddings

from rectool.errors import UserError
from rectool.retrieval.brute import brute_search
from rectool.retrieval.formats import Ragged
from rectool.retrieval.graph import extract_graph
from rectool.retrieval.hnsw import build_index
from rectool.retrieval.nann_reference import nann_search_reference
from rectool.retrieval.nann_search import NannParams, dot_scorer, nann_search

N_ITEMS = 1200


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("nann")
    vectors = clustered(N_ITEMS, 8, seed=11)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(N_ITEMS, dtype=np.int64) * 10 + 3
    build_index(write_embeddings(base / "emb.parquet", vectors, ids), base / "idx", space="l2", m=8,
                ef_construction=100, threads=1)
    graph = extract_graph(base / "idx")
    users = clustered(23, 8, seed=12)
    # a model that is not the inner product the graph was built for: a tilted, squashed score
    tilt = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    return graph, vectors, users, lambda u, i: np.tanh(dot_scorer(users, vectors)(u, i)) + 0.1 * (vectors[i] @ tilt)


def _instrumented(scorer):
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        assert users.dtype == np.int64 and items.dtype == np.int64 and users.shape == items.shape
        calls.append((users.copy(), items.copy()))
        return scorer(users, items).astype(np.float32)

    return score, calls


@pytest.mark.parametrize("ef, rounds, batch, expand", [((100, 200, 400), (1, 1, 3), 256, None),
                                                       ((10, 30, 60), (1, 2, 4), 5, None),
                                                       ((50, 20, 40), (0, 1, 2), 7, None),
                                                       ((20, 40, 80), (1, 5, 30), 6, 3),
                                                       ((20, 40, 80), (1, 50, 400), 256, 1)])
def test_numba_search_equals_plain_python(setup, ef, rounds, batch, expand):
    graph, _, users, scorer = setup
    history = Ragged.from_lists([[3 + 10 * (u * 37 % N_ITEMS), 3 + 10 * (u * 91 % N_ITEMS), -1] for u in range(23)])
    recall_num = min(40, ef[2])
    fast = nann_search(graph, 23, scorer, recall_num, ef, rounds, expand=expand, exclude=history, batch_size=batch,
                       progress=False)
    slow = nann_search_reference(graph, 23, scorer, recall_num, ef, rounds, expand=expand, exclude=history)
    assert np.array_equal(fast.item_ids, slow.item_ids)
    assert np.array_equal(fast.lengths, slow.lengths) and np.array_equal(fast.n_scored, slow.n_scored)
    assert np.allclose(fast.scores, slow.scores)
    for u in range(23):
        assert not set(history.row(u)) & set(fast.item_ids[u].tolist())


def test_exhaustive_search_equals_brute_force(setup):
    graph, _, users, scorer = setup
    found = nann_search(graph, 23, scorer, 50, ef=(N_ITEMS,) * 3, rounds=(1, 50, 50), progress=False)
    assert (found.n_scored == N_ITEMS).all(), "every item is reachable and scored exactly once"
    exact = brute_search(scorer, 23, N_ITEMS, 50, item_ids=graph.ids, progress=False)
    assert np.array_equal(found.item_ids, exact.item_ids)
    assert np.allclose(found.scores, exact.scores)


def test_visited_items_are_never_scored_twice(setup):
    graph, _, users, scorer = setup
    score, calls = _instrumented(scorer)
    found = nann_search(graph, 23, score, 100, ef=(100, 200, 400), rounds=(1, 2, 6), batch_size=10, progress=False)
    pairs = Counter()
    for u, i in calls:
        pairs.update(zip(u.tolist(), i.tolist(), strict=True))
    assert max(pairs.values()) == 1
    per_user = Counter(u for u, _ in pairs)
    assert [per_user[u] for u in range(23)] == found.n_scored.tolist()
    # one batched call per step: enter points + level-1 rounds + level-0 rounds, per user batch (3 batches)
    assert len(calls) <= 3 * (1 + 2 + 6)
    assert found.n_scored.max() < N_ITEMS, "the search scores a part of the catalogue"


def test_search_quality_and_bad_parameters(setup, tmp_path):
    graph, vectors, users, _ = setup
    dot = dot_scorer(users, vectors)
    exact = brute_search(dot, 23, N_ITEMS, 10, item_ids=graph.ids, progress=False)

    def recall(found):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.item_ids, exact.item_ids, strict=True)])

    rounds = nann_search(graph, 23, dot, 10, progress=False)
    assert recall(rounds) >= 0.95
    # best-first expansion, run until it converges, finds as much while scoring fewer items
    best_first = nann_search(graph, 23, dot, 10, ef=(20, 40, 40), rounds=(1, 100, 100), expand=2, progress=False)
    assert recall(best_first) >= 0.95 and best_first.n_scored.mean() < rounds.n_scored.mean()
    with pytest.raises(ValueError):
        NannParams(expand=0)
    with pytest.raises(UserError, match="exceeds ef on level 0"):
        nann_search(graph, 2, dot, 500, ef=(10, 20, 400), progress=False)
    with pytest.raises(ValueError):
        NannParams(ef=(0, 10, 10))
    from dataclasses import replace

    no_level1 = replace(graph, indptr={0: graph.indptr[0]}, indices={0: graph.indices[0]})
    with pytest.raises(UserError, match="lacks level 1"):
        nann_search(no_level1, 2, dot, 10, progress=False)
