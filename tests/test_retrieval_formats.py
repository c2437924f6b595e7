"""The shared retrieval tables: Ragged/TopK conversions, recall writer, truth reader, id maps."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from retrieval_helpers import write_lists, write_pairs

from rectool.artifacts import atomic_dir, open_dataset, read_meta, write_meta
from rectool.errors import UserError
from rectool.retrieval.formats import (
    RECALLS_KIND,
    IdMap,
    Ragged,
    RecallWriter,
    TopK,
    embedding_schema,
    read_recalls,
    read_truth,
    recall_schema,
    write_recalls,
)


def test_ragged_round_trips():
    lists = [[3, 1], [], [7, 8, 9]]
    r = Ragged.from_lists(lists)
    assert r.offsets.tolist() == [0, 2, 2, 5] and r.to_lists() == lists
    assert r.take(np.array([2, 0, 1, 2])).to_lists() == [[7, 8, 9], [3, 1], [], [7, 8, 9]]
    assert r.to_arrow().to_pylist() == lists


def test_topk_to_recall_batch_and_writer(tmp_path):
    topk = TopK(np.array([[5, 6, -1], [7, -1, -1]]), np.array([[0.9, 0.5, -np.inf], [0.3, -np.inf, -np.inf]],
                                                              dtype=np.float32),
                np.array([2, 1]), np.array([40, 30]))
    extra = {"segment": pa.array(["a", "b"])}
    with atomic_dir(tmp_path / "rec") as tmp:
        with RecallWriter(tmp, n_scored=True, extra_fields=[pa.field("segment", pa.string())]) as writer:
            writer.write(np.array([11, 12]), topk, extra)
            writer.write(np.array([13, 14]), topk, extra)
        write_meta(tmp, kind=RECALLS_KIND, rows=writer.rows, schema=writer.schema)
    table = open_dataset(tmp_path / "rec").to_table()
    assert table.schema == recall_schema([pa.field("segment", pa.string())], n_scored=True)
    assert table["item_ids"].to_pylist() == [[5, 6], [7]] * 2 and table["n_scored"].to_pylist() == [40, 30] * 2
    assert table["scores"].to_pylist()[0] == pytest.approx([0.9, 0.5]) and table["segment"].to_pylist()[1] == "b"
    recalls = read_recalls(tmp_path / "rec")
    assert recalls.user_ids.tolist() == [11, 12, 13, 14] and recalls.n_scored.tolist() == [40, 30, 40, 30]
    summary = write_recalls(tmp_path / "rec2", np.array([2, 1]), topk, method="x")
    assert summary["users"] == 2 and read_meta(tmp_path / "rec2")["method"] == "x"
    assert read_recalls(tmp_path / "rec2").lists.to_lists() == [[7], [5, 6]], "sorted by user, order kept"
    with pytest.raises(UserError, match="already exists"):
        write_recalls(tmp_path / "rec2", np.array([2, 1]), topk)


def test_truth_in_both_forms(tmp_path):
    long = read_truth(write_pairs(tmp_path / "long.parquet", [(2, 9), (1, 4), (2, 3), (2, 9), (1, 1)]))
    assert long.user_ids.tolist() == [1, 2] and long.lists.to_lists() == [[1, 4], [3, 9]]
    listed = read_truth(write_lists(tmp_path / "list.parquet", [2, 1, 2, 3], [[9, 3], [4, 1], [9], []]))
    assert listed.user_ids.tolist() == [1, 2] and listed.lists.to_lists() == [[1, 4], [3, 9]]
    pq.write_table(pa.table({"user_id": ["a"], "item_id": [1]}), tmp_path / "str.parquet")
    with pytest.raises(UserError, match="expected integer ids"):
        read_truth(tmp_path / "str.parquet")
    pq.write_table(pa.table({"user_id": pa.array([1], pa.int64()), "item_ids": pa.array([[1, None]])}),
                   tmp_path / "nulls.parquet")
    with pytest.raises(UserError, match="null elements"):
        read_truth(tmp_path / "nulls.parquet")


def test_id_map_and_schemas():
    m = IdMap(np.array([30, 10, 20]))
    assert m.rows(np.array([20, 99, 30])).tolist() == [2, -1, 0]
    rows = m.rows_ragged(Ragged.from_lists([[30, 99, 10], [], [99]]))
    assert rows.to_lists() == [[0, 1], [], []]
    assert IdMap(np.zeros(0, np.int64)).rows(np.array([1])).tolist() == [-1]
    assert embedding_schema(4).field("item_emb").type == pa.list_(pa.float32(), 4)


def test_union_of_results_keeps_best_scores():
    from rectool.retrieval.formats import union_topk

    a = TopK(np.array([[4, 2, -1], [7, 8, 9]]), np.array([[1.0, 5.0, -np.inf], [3.0, 2.0, 1.0]], np.float32),
             np.array([2, 3]), np.array([10, 10]))
    b = TopK(np.array([[4, 6], [9, 1]]), np.array([[7.0, 0.5], [4.0, 0.0]], np.float32), np.array([2, 2]),
             np.array([5, 6]))
    u = union_topk([a, b], 3)
    assert u.item_ids.tolist() == [[4, 2, 6], [9, 7, 8]] and u.scores[0].tolist() == [7, 5, 0.5]
    assert u.lengths.tolist() == [3, 3] and u.n_scored.tolist() == [15, 16]
    assert Ragged.from_lists([[1], [2, 3], [4]]).slice(1, 3).to_lists() == [[2, 3], [4]]
