"""ALS, EASE and BARS item-kNN (``rectool.retrieval.classical``) against plain dense references, on a
toy problem they must learn, and through ``rectool baseline`` into ``eval-topk``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from retrieval_helpers import write_lists

from rectool.errors import UserError
from rectool.retrieval import classical
from rectool.retrieval.baselines import classical_topk
from rectool.retrieval.classical import ALSParams, EASEParams, ItemKNNParams
from rectool.retrieval.formats import read_recalls, read_user_lists


def _log(seed: int = 0, users: int = 80, items: int = 30, per: tuple[int, int] = (3, 12)) -> dict[int, list[int]]:
    """Users in 3 clusters of items (ids 100 + 7 i), each taking a random share of its cluster."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(users):
        cluster = np.arange(items)[np.arange(items) % 3 == u % 3]
        chosen = rng.choice(cluster, size=min(rng.integers(*per), len(cluster)), replace=False)
        out[u * 5 + 2] = sorted((100 + 7 * chosen).tolist())
    return out


def _lists(log: dict[int, list[int]], path):
    users = sorted(log)
    return read_user_lists(write_lists(path, users, [log[u] for u in users]))


def _dense(log: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    users = np.array(sorted(log))
    items = np.unique(np.concatenate([log[u] for u in users]))
    x = np.zeros((len(users), len(items)))
    for r, u in enumerate(users):
        x[r, np.searchsorted(items, log[u])] = 1
    return users, items, x


def _check_topk(topk, scores: np.ndarray, items: np.ndarray, x: np.ndarray, k: int) -> None:
    """Every returned item's score equals the reference, history excluded, and nothing better was left out."""
    masked = np.where(x > 0, -np.inf, scores)
    for r in range(len(x)):
        got = topk.item_ids[r, :topk.lengths[r]]
        cols = np.searchsorted(items, got)
        np.testing.assert_allclose(topk.scores[r, :topk.lengths[r]], masked[r, cols], rtol=1e-4, atol=1e-5)
        assert not x[r, cols].any()
        kth = np.sort(masked[r])[::-1][k - 1]
        assert topk.scores[r, k - 1] >= kth - 1e-4


def test_ease_matches_the_closed_form(tmp_path):
    log = _log()
    users, items, x = _dense(log)
    lam = 5.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(len(items)))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0)
    lists = _lists(log, tmp_path / "t.parquet")
    topk = classical_topk(EASEParams(l2=lam), lists, users, lists, 5, exclude=lists, progress=False)
    _check_topk(topk, x @ b, items, x, 5)


def _bars_dense(x: np.ndarray, k: int) -> np.ndarray:
    """The BARS item-kNN written densely: cosine (diagonal -1) -> (s + 1) / 2 -> top-k per row -> L1 rows ->
    S (X' - m) + m, users as rows."""
    norms = np.sqrt(x.sum(0))
    s = (x.T @ x) / np.outer(norms, norms) - 2 * np.eye(x.shape[1])
    s = (s + 1) / 2
    keep = np.argsort(-s, axis=1, kind="stable")[:, :k]
    pruned = np.zeros_like(s)
    np.put_along_axis(pruned, keep, np.take_along_axis(s, keep, 1), 1)
    pruned /= pruned.sum(1, keepdims=True)
    m = x.mean(0)
    return ((pruned @ (x.T - m[:, None])) + m[:, None]).T


def test_item_knn_matches_the_bars_formula(tmp_path):
    """With every item co-occurring with at least K others no neighbour is a pad: the dense BARS formula exactly."""
    log = _log(1, per=(6, 10))
    users, items, x = _dense(log)
    lists = _lists(log, tmp_path / "t.parquet")
    for k in (3, 9):  # each item meets all 9 others of its cluster
        topk = classical_topk(ItemKNNParams(neighbours=k), lists, users, lists, 5, exclude=lists, progress=False)
        _check_topk(topk, _bars_dense(x, k), items, x, 5)


def test_item_knn_pads_count_in_the_normaliser_only(tmp_path):
    """K above an item's co-occurring items: the missing neighbours weigh 1/2 each in the L1 norm."""
    log = _log(2, per=(2, 4))
    users, items, x = _dense(log)
    lists = _lists(log, tmp_path / "t.parquet")
    k = 12
    norms = np.sqrt(x.sum(0))
    cos = (x.T @ x) / np.outer(norms, norms)
    m = x.mean(0)
    expected = np.zeros_like(x)
    for j in range(len(items)):
        others = [i for i in np.argsort(-cos[j], kind="stable") if i != j and cos[j, i] > 0][:k]
        w = (cos[j, others] + 1) / 2
        z = w.sum() + 0.5 * (k - len(others))
        expected[:, j] = m[j] + ((x[:, others] - m[others]) @ w) / z
    topk = classical_topk(ItemKNNParams(neighbours=k), lists, users, lists, 5, exclude=lists, progress=False)
    _check_topk(topk, expected, items, x, 5)
    plain = classical_topk(ItemKNNParams(neighbours=k, renormalize=False, item_bias=False), lists, users, lists, 5,
                           exclude=lists, progress=False)
    assert plain.lengths.min() == 5


def test_als_learns_the_clusters_and_scores_new_users(tmp_path):
    """The top items are the user's own cluster's wherever it has enough left; a user outside the training
    matrix is scored from their history with the same user step."""
    log = _log(3, users=120, per=(5, 9))
    lists = _lists(log, tmp_path / "t.parquet")
    users = np.array(sorted(log))
    params = ALSParams(factors=8, iterations=10, alpha=5.0, regularization=1.0)
    topk = classical_topk(params, lists, users, lists, 3, exclude=lists, progress=False)
    in_cluster = ((topk.item_ids[:, :3] - 100) // 7 % 3 == (users[:, None] // 5 % 3)).sum(1)
    attainable = np.minimum(3, 10 - np.array([len(log[u]) for u in users]))  # 10 items per cluster
    assert np.mean(in_cluster == attainable) > 0.9
    new = _lists({999: log[users[0]]}, tmp_path / "new.parquet")  # a new user with user 0's history
    alone = classical_topk(params, lists, np.array([999]), new, 3, exclude=new, progress=False)
    np.testing.assert_allclose(alone.scores[0], topk.scores[0], rtol=1e-4)
    assert alone.item_ids[0].tolist() == topk.item_ids[0].tolist()


def test_ease_refuses_a_catalogue_too_large(tmp_path, monkeypatch):
    log = _log()
    lists = _lists(log, tmp_path / "t.parquet")
    monkeypatch.setattr(classical, "EASE_MAX_ITEMS", 10)
    with pytest.raises(UserError, match="30 items; EASE inverts a dense"):
        classical_topk(EASEParams(), lists, np.array(sorted(log)), lists, 5, progress=False)


@pytest.mark.parametrize("rule, flags", [("ease", ["--l2", "10"]), ("item-knn", ["--neighbours", "5"]),
                                         ("als", ["--factors", "8", "--iterations", "5", "--alpha", "4"])])
def test_baseline_cli_writes_recalls_eval_topk_reads(rule, flags, tmp_path, cli):
    log = _log(4)
    held = {u: items[u % len(items)] for u, items in log.items()}  # any position: no item favoured
    users = sorted(log)
    write_lists(tmp_path / "train.parquet", users, [[i for i in log[u] if i != held[u]] for u in users])
    write_lists(tmp_path / "truth.parquet", users, [[held[u]] for u in users])
    cli("baseline", "--rule", rule, *flags, "--train", tmp_path / "train.parquet", "--k", "5", "-o", tmp_path / "r")
    rec = read_recalls(tmp_path / "r")
    assert len(rec.user_ids) == len(users)
    meta = json.loads((tmp_path / "r" / "_meta.json").read_text())
    assert meta["method"] == rule and meta["exclude"] == "history"
    cli("eval-topk", "--recall-path", tmp_path / "r", "--truth-path", tmp_path / "truth.parquet", "--k-list", "5",
        "--output", tmp_path / "ev")
    recall = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["5"]["recall"]
    assert recall > 0.5  # 5 of the cluster's 2-8 items left; 5 of ~20 unseen items at random would be ~0.25


def test_baseline_cli_rejects_bad_parameters(tmp_path, cli):
    write_lists(tmp_path / "train.parquet", [1, 2], [[3, 4], [4, 5]])
    res = cli("baseline", "--rule", "als", "--alpha", "0", "--train", tmp_path / "train.parquet", "-o",
              tmp_path / "r", expect=2)
    assert res.stderr.strip().splitlines() == ["error: --alpha 0.0: input should be greater than 0"]
    assert not (tmp_path / "r").exists()
