"""``rectool eval-topk``: hand-computed values, edge cases, brute-force comparison, bad inputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from retrieval_helpers import write_lists, write_pairs

from rectool.errors import UserError
from rectool.retrieval.formats import TopK, read_recalls, read_truth, write_recalls
from rectool.retrieval.metrics import evaluate_topk, topk_metrics


def topk_of(lists: list[list[int]]) -> TopK:
    k = max(len(x) for x in lists)
    ids = np.full((len(lists), k), -1, dtype=np.int64)
    scores = np.full((len(lists), k), -np.inf, dtype=np.float32)
    for u, row in enumerate(lists):
        ids[u, :len(row)] = row
        scores[u, :len(row)] = np.arange(len(row), 0, -1)
    return TopK(ids, scores, np.array([len(x) for x in lists], dtype=np.int64))


@pytest.fixture
def files(tmp_path):
    write_recalls(tmp_path / "rec", np.array([1, 2, 3, 5]), topk_of([[1, 4, 2, 7], [6, 7, 8, 5], [11, 12], [1, 2]]))
    write_recalls(tmp_path / "brute", np.array([5, 3, 2, 1]),
                  topk_of([[1, 2], [9, 11, 12, 13], [5, 6, 7, 8], [1, 2, 3, 4]]))
    # long form, with a duplicate pair and a user (4) without items in list form elsewhere
    write_pairs(tmp_path / "truth.parquet", [(1, 1), (1, 2), (1, 3), (2, 5), (3, 9), (3, 10), (3, 10)])
    return tmp_path


L2 = [1 / math.log2(r + 1) for r in range(1, 6)]  # gain at 1-based rank r
EXPECTED = {  # per user (u1, u2, u3), worked out by hand in the docstring style of the metric
    1: dict(precision=[1, 0, 0], recall=[1 / 3, 0, 0], f_measure=[0.5, 0, 0], hit_rate=[1, 0, 0],
            ndcg=[1, 0, 0], mrr=[1, 0, 0]),
    2: dict(precision=[0.5, 0, 0], recall=[1 / 3, 0, 0], f_measure=[0.4, 0, 0], hit_rate=[1, 0, 0],
            ndcg=[1 / (L2[0] + L2[1]), 0, 0], mrr=[1, 0, 0]),
    4: dict(precision=[0.5, 0.25, 0], recall=[2 / 3, 1, 0], f_measure=[2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 0.4, 0],
            hit_rate=[1, 1, 0], ndcg=[(L2[0] + L2[2]) / (L2[0] + L2[1] + L2[2]), L2[3], 0], mrr=[1, 0.25, 0]),
}


def test_hand_computed_values(files):
    result = topk_metrics(read_recalls(files / "rec"), read_truth(files / "truth.parquet"), [4, 1, 2], n_items=20,
                          brute=read_recalls(files / "brute"))
    assert result["k_list"] == [1, 2, 4] and result["users"] == 3 and result["recall_users"] == 4
    for k, measures in EXPECTED.items():
        got = result["metrics"][str(k)]
        for name, per_user in measures.items():
            assert got[name] == pytest.approx(np.mean(per_user)), (k, name)
    assert [result["metrics"][k]["distinct_items"] for k in ("1", "2", "4")] == [3, 6, 9]
    assert result["metrics"]["4"]["coverage"] == pytest.approx(9 / 20)
    brute_recall = {1: (1 / 3 + 1 + 1 / 2) / 3, 2: (2 / 3 + 1 + 1 / 2) / 3, 4: (1 + 1 + 1 / 2) / 3}
    brute_cover = {1: 1 / 3, 2: 1 / 2, 4: (3 / 4 + 1 + 2 / 4) / 3}
    for k in (1, 2, 4):
        got = result["metrics"][str(k)]
        assert got["recall_brute"] == pytest.approx(brute_recall[k])
        assert got["recall_delta"] == pytest.approx((brute_recall[k] - got["recall"]) / brute_recall[k])
        assert got["coverage_brute"] == pytest.approx(brute_cover[k])


def test_ndcg_and_mrr_edge_cases(tmp_path):
    # a perfect list longer than the truth; truth larger than K; a hit only beyond K; an empty list
    write_recalls(tmp_path / "rec", np.array([1, 2, 3, 4]), topk_of([[5, 6, 7], [1, 2], [9, 9 + 1, 3], [0]]))
    write_lists(tmp_path / "truth.parquet", [1, 2, 3, 4, 5], [[5], [1, 2, 3, 4], [3], [], []])
    write_recalls(tmp_path / "rec5", np.array([1, 2, 3, 4, 5]), topk_of([[5, 6, 7], [1, 2], [9, 10, 3], [0], [8]]))
    result = topk_metrics(read_recalls(tmp_path / "rec5"), read_truth(tmp_path / "truth.parquet"), [2, 3])
    assert result["users"] == 3, "users 4 and 5 have no truth item and are not averaged"
    k2, k3 = result["metrics"]["2"], result["metrics"]["3"]
    # user 1: perfect at rank 1 -> NDCG 1 whatever K
    # user 2: 2 hits of 4 truths: at K=2 the ideal is 2 hits -> 1.0; at K=3 the ideal is 3 hits, the list has 2
    # user 3: the hit is at rank 3 -> 0 at K=2, MRR 1/3 and NDCG (1/log2 4) / 1 at K=3
    user2_k3 = (L2[0] + L2[1]) / (L2[0] + L2[1] + L2[2])
    assert k2["ndcg"] == pytest.approx((1 + 1 + 0) / 3) and k2["mrr"] == pytest.approx(2 / 3)
    assert k3["ndcg"] == pytest.approx((1 + user2_k3 + 0.5) / 3) and k3["mrr"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert k2["recall"] == pytest.approx((1 + 0.5 + 0) / 3) and k3["precision"] == pytest.approx((1 + 2 + 1) / 9)


def test_cli_writes_json_csv_and_plot(files, cli):
    out = files / "eval"
    res = cli("eval-topk", "--recall-path", files / "rec", "--truth-path", files / "truth.parquet", "--k-list",
              "1,2,4", "--brute-path", files / "brute", "--n-items", "20", "--plot", "--output", out)
    assert res.stdout.strip() == str(out)
    result = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["k"]) for r in rows] == [1, 2, 4]
    assert float(rows[2]["recall"]) == pytest.approx(result["metrics"]["4"]["recall"]) == pytest.approx(5 / 9)
    assert "coverage_brute" in rows[0] and (out / "recall_at_k.png").stat().st_size > 1000
    assert json.loads((out / "_meta.json").read_text())["kind"] == "topk_metrics"


def test_catalogue_from_items_table(files):
    pq.write_table(pa.table({"item_id": pa.array(range(30), pa.int64())}), files / "items.parquet")
    result = evaluate_topk(files / "rec", files / "truth.parquet", files / "e", k_list=[4],
                           items=files / "items.parquet")
    assert result["catalog_items"] == 30 and result["metrics"]["4"]["coverage"] == pytest.approx(9 / 30)
    result = evaluate_topk(files / "rec", files / "truth.parquet", files / "e2", k_list=[4])
    assert result["catalog_source"] == "distinct items in recalls and truth" and result["catalog_items"] == 12


def test_bad_inputs(files, tmp_path, cli):
    write_pairs(tmp_path / "t_unknown.parquet", [(1, 1), (99, 3), (98, 4)])
    res = cli("eval-topk", "--recall-path", files / "rec", "--truth-path", tmp_path / "t_unknown.parquet",
              "--output", tmp_path / "o", expect=2)
    assert "2 of 3 truth users have no row in --recall-path (e.g. 98, 99)" in res.stderr
    assert not (tmp_path / "o").exists()
    zero = evaluate_topk(files / "rec", tmp_path / "t_unknown.parquet", tmp_path / "o", k_list=[1],
                         missing_users="zero")
    assert zero["missing_users"] == 2 and zero["metrics"]["1"]["recall"] == pytest.approx(1 / 3)
    write_recalls(tmp_path / "fewer", np.array([1, 2]), topk_of([[1], [2]]))
    with pytest.raises(UserError, match="users differ from --recall-path"):
        topk_metrics(read_recalls(files / "rec"), read_truth(files / "truth.parquet"), [1],
                     brute=read_recalls(tmp_path / "fewer"))
    pq.write_table(pa.table({"user_id": pa.array([1, 1], pa.int64()),
                             "item_ids": pa.array([[1], [2]], pa.list_(pa.int64()))}), tmp_path / "dupuser.parquet")
    with pytest.raises(UserError, match="user 1 has 2 rows"):
        read_recalls(tmp_path / "dupuser.parquet")
    pq.write_table(pa.table({"user_id": pa.array([1], pa.int64()),
                             "item_ids": pa.array([[3, 1, 3]], pa.list_(pa.int64()))}), tmp_path / "dupitem.parquet")
    with pytest.raises(UserError, match="user 1 repeats an item"):
        read_recalls(tmp_path / "dupitem.parquet")
    pq.write_table(pa.table({"user_id": pa.array([1], pa.int64())}), tmp_path / "nolist.parquet")
    with pytest.raises(UserError, match="missing column item_ids"):
        read_truth(tmp_path / "nolist.parquet")
    with pytest.raises(UserError, match="--k-list 0,5"):
        evaluate_topk(files / "rec", files / "truth.parquet", tmp_path / "o3", k_list=[0, 5])
    with pytest.raises(UserError, match="this is a 'recalls' artifact"):
        from rectool.artifacts import check_kind

        check_kind(files / "rec", "events", "--events")


def test_large_inputs_are_vectorised(tmp_path):
    """50k users x 200 items: whole-array kernels (no timing assertion; bench_ann times 100k users)."""
    rng = np.random.default_rng(0)
    n, k = 50_000, 200
    ids = (rng.integers(0, 5, (n, k)) + 5 * np.arange(k)).astype(np.int64)  # 200 distinct of 1000 per user
    topk = TopK(ids, np.zeros((n, k), np.float32), np.full(n, k, np.int64))
    truth_pairs = np.stack([np.repeat(np.arange(n), 3), rng.integers(0, 1000, 3 * n)], 1)
    from rectool.retrieval.formats import UserLists, _group

    truth: UserLists = _group(truth_pairs[:, 0].astype(np.int64), truth_pairs[:, 1].astype(np.int64))
    recalls = UserLists(np.arange(n, dtype=np.int64), topk.items())
    result = topk_metrics(recalls, truth, [10, 20, 50, 200], brute=recalls)
    assert result["metrics"]["200"]["recall"] == pytest.approx(0.2, abs=0.01)
    assert result["metrics"]["50"]["coverage_brute"] == 1.0
    assert result["metrics"]["50"]["recall_delta"] == pytest.approx(0.0, abs=1e-9)
    assert result["metrics"]["10"]["distinct_items"] == 50 and result["catalog_items"] == 1000
