"""Popularity and item-CF baselines against plain-Python references; files in, recall format out."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from retrieval_helpers import write_lists, write_pairs

from rectool.artifacts import read_meta
from rectool.errors import UserError
from rectool.retrieval import kernels
from rectool.retrieval.baselines import Catalogue, item_cf_topk, popularity_topk, run_baseline
from rectool.retrieval.formats import read_recalls, read_user_lists
from rectool.retrieval.metrics import evaluate_topk


def _random_log(seed: int = 0, users: int = 60, items: int = 40) -> dict[int, set[int]]:
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, items + 1)
    return {u * 3 + 1: set((rng.choice(items, size=rng.integers(1, 12), p=weights / weights.sum()) * 11 + 7).tolist())
            for u in range(users)}


def _lists(log: dict[int, set[int]], tmp_path, name: str):
    users = sorted(log)
    return read_user_lists(write_lists(tmp_path / f"{name}.parquet", users, [sorted(log[u]) for u in users]))


def _cosine(log: dict[int, set[int]]) -> dict[int, dict[int, float]]:
    count = Counter(i for items in log.values() for i in items)
    both: dict[int, Counter] = defaultdict(Counter)
    for items in log.values():
        for i in items:
            for j in items:
                if i != j:
                    both[i][j] += 1
    return {i: {j: c / math.sqrt(count[i] * count[j]) for j, c in row.items()} for i, row in both.items()}


def test_popularity_matches_reference(tmp_path):
    log = _random_log()
    train = _lists(log, tmp_path, "train")
    users = np.array(sorted(log), dtype=np.int64)
    topk = popularity_topk(train, users, 5, exclude=train)
    count = Counter(i for items in log.values() for i in items)
    ranking = sorted(count, key=lambda i: (-count[i], i))
    for row, u in enumerate(users):
        expected = [i for i in ranking if i not in log[u]][:5]
        assert topk.item_ids[row, :topk.lengths[row]].tolist() == expected
        assert topk.scores[row, :topk.lengths[row]].tolist() == [count[i] for i in expected]


def test_item_cf_matches_reference(tmp_path):
    log = _random_log(1)
    train = _lists(log, tmp_path, "train")
    users = np.array(sorted(log), dtype=np.int64)
    sims = _cosine(log)
    topk = item_cf_topk(train, users, train, 8, neighbours=1000, exclude=train)
    for row, u in enumerate(users):
        scores: Counter = Counter()
        for i in log[u]:
            for j, s in sims.get(i, {}).items():
                scores[j] += s
        candidates = {j: s for j, s in scores.items() if j not in log[u]}
        got = topk.item_ids[row, :topk.lengths[row]].tolist()
        expected_scores = sorted(candidates.values(), reverse=True)[:8]
        assert np.allclose(topk.scores[row, :len(got)], expected_scores, rtol=1e-5)
        assert all(abs(candidates[j] - s) < 1e-5 for j, s in zip(got, topk.scores[row], strict=False))


def test_neighbour_pruning_keeps_the_most_similar(tmp_path):
    log = _random_log(2)
    cat = Catalogue(_lists(log, tmp_path, "train"))
    users = cat.item_users()
    for cosine in (True, False):
        nbr, sim, length = kernels.item_neighbours(users.offsets, users.values, cat.user_items.offsets,
                                                   cat.user_items.values, 3, cosine)
        full = _cosine(log)
        count = Counter(i for items in log.values() for i in items)
        for row, item in enumerate(cat.ids):
            ref = {j: s * (1 if cosine else math.sqrt(count[item] * count[j])) for j, s in full.get(item, {}).items()}
            best = sorted(ref.values(), reverse=True)[:3]
            assert np.allclose(sim[row, :length[row]], best, rtol=1e-5)
            assert all(abs(ref[int(cat.ids[j])] - s) < 1e-4 for j, s in zip(nbr[row, :length[row]], sim[row],
                                                                                strict=False))


def test_run_baseline_files_and_exclusion_rules(tmp_path):
    train = write_pairs(tmp_path / "train.parquet", [(1, 10), (1, 11), (2, 10), (2, 12), (3, 11), (3, 12), (3, 13),
                                                     (4, 10), (4, 11)])
    truth = write_lists(tmp_path / "truth.parquet", [1, 2, 9], [[12], [11, 13], [10]])
    history = write_lists(tmp_path / "history.parquet", [1, 2, 9], [[10, 11], [10, 12], [13]])
    out = tmp_path / "pop"
    summary = run_baseline("popularity", train, out, users=truth, history=history, k=3)
    assert summary["users"] == 3 and read_meta(out)["method"] == "popularity" and read_meta(out)["kind"] == "recalls"
    recalls = read_recalls(out)
    assert recalls.user_ids.tolist() == [1, 2, 9]
    # popularity 10 (3 users), 11 (3), 12 (2), 13 (1); the user's history is excluded
    assert recalls.lists.to_lists() == [[12, 13], [11, 13], [10, 11, 12]]
    run_baseline("popularity", train, tmp_path / "pop_none", users=truth, history=history, exclude="none", k=2)
    assert read_recalls(tmp_path / "pop_none").lists.to_lists() == [[10, 11]] * 3
    only = write_pairs(tmp_path / "buys.parquet", [(1, 10)])
    run_baseline("popularity", train, tmp_path / "pop_buys", users=truth, history=history, exclude=only, k=2)
    assert read_recalls(tmp_path / "pop_buys").lists.to_lists() == [[11, 12], [10, 11], [10, 11]]
    # an exclusion table whose lists are all empty (users without buys) leaves nothing out
    empty = write_lists(tmp_path / "no_buys.parquet", [1, 2], [[], []], column="seen_item_ids")
    for rule in ("popularity", "item-cf"):
        run_baseline(rule, train, tmp_path / f"{rule}_empty", users=truth, history=history, exclude=empty, k=2)
    assert read_recalls(tmp_path / "popularity_empty").lists.to_lists() == [[10, 11]] * 3
    run_baseline("item-cf", train, tmp_path / "cf", users=truth, history=history, k=3, similarity="cooccurrence")
    # user 1 (10, 11): 12 co-occurs once with each (2), 13 once with 11 (1); user 2 (10, 12): 11 scores 2 + 1
    assert read_recalls(tmp_path / "cf").lists.to_lists() == [[12, 13], [11, 13], [11, 12]]
    assert read_meta(tmp_path / "cf")["similarity"] == "cooccurrence"
    result = evaluate_topk(tmp_path / "cf", truth, tmp_path / "eval", k_list=[1, 3])
    assert result["users"] == 3 and 0 < result["metrics"]["3"]["recall"] <= 1
    with pytest.raises(UserError, match="choose cosine or cooccurrence"):
        run_baseline("item-cf", train, tmp_path / "x", similarity="jaccard")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="choose popularity, item-cf, item-knn, ease, als"):
        run_baseline("svd", train, tmp_path / "x")  # type: ignore[arg-type]


def _read_user_lines(path) -> tuple[list[int], list[list[int]]]:
    """``uid item item ...`` per line (the layout of the shared retrieval samples)."""
    users, lists = [], []
    for line in open(path):
        fields = line.split()
        if fields:
            users.append(int(fields[0]))
            lists.append([int(x) for x in fields[1:]])
    return users, lists


def test_popularity_on_movielens_matches_the_published_floor(tmp_path):
    """Full-ranking protocol on the fixed temporal split: popularity recall@20 is 0.097 (issue 5)."""
    from helpers import shared_path

    split = shared_path("movielens-100k", "split_temporal_80_20")
    train = write_lists(tmp_path / "train.parquet", *_read_user_lines(split / "train.txt"))
    test = write_lists(tmp_path / "test.parquet", *_read_user_lines(split / "test.txt"))
    run_baseline("popularity", train, tmp_path / "pop", users=test, k=20)
    result = evaluate_topk(tmp_path / "pop", test, tmp_path / "eval", k_list=[20])
    assert result["users"] == 943
    assert result["metrics"]["20"]["recall"] == pytest.approx(0.097, abs=0.002)
    run_baseline("item-cf", train, tmp_path / "cf", users=test, k=20)
    cf = evaluate_topk(tmp_path / "cf", test, tmp_path / "eval_cf", k_list=[20])
    assert cf["metrics"]["20"]["recall"] > 1.5 * result["metrics"]["20"]["recall"]
