"""``rectool submit``: the P filter, dedup, caps, order, both formats, bad inputs."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectool.errors import UserError
from rectool.ranking.submit import submit

# (user, item, score): item 9 is not in P; (1, 1) is predicted twice
PRED = [(1, 1, 0.2), (1, 1, 0.9), (1, 2, 0.7), (1, 3, 0.6), (2, 1, 0.8), (2, 9, 0.95), (3, 2, 0.1)]


@pytest.fixture
def files(tmp_path):
    pq.write_table(pa.table({"user_id": [r[0] for r in PRED], "item_id": [r[1] for r in PRED],
                             "score": pa.array([r[2] for r in PRED], pa.float32())}), tmp_path / "pred.parquet")
    (tmp_path / "item.csv").write_text("item_id,item_geohash,item_category\n1,,5\n2,abc,5\n3,,6\n2,,5\n")
    return tmp_path


def _lines(path):
    return path.read_text().splitlines()


def test_tsv_default_filters_dedups_and_sorts(files, cli):
    res = cli("submit", "--pred-path", files / "pred.parquet", "--item-subset-path", files / "item.csv",
              "--output", files / "sub.tsv")
    assert res.stdout.strip() == str(files / "sub.tsv")
    assert _lines(files / "sub.tsv") == ["1\t1", "2\t1", "1\t2", "1\t3", "3\t2"], "no header, P only, best first"
    assert "written" in res.stderr and "distinct pairs" in res.stderr


def test_csv_caps_threshold_topk(files, cli):
    cli("submit", "--pred-path", files / "pred.parquet", "--item-subset-path", files / "item.csv",
        "--output", files / "sub.csv", "--format", "csv", "--max-entries-per-user", "2", "--threshold", "0.5",
        "--topk", "3", "-q")
    assert _lines(files / "sub.csv") == ["user_id,item_id", "1,1", "2,1", "1,2"]
    counts = submit(files / "pred.parquet", files / "item.csv", files / "s2.tsv", threshold=0.65,
                    max_entries_per_user=1)
    assert counts["rows with item in P"] == 6 and counts["distinct pairs"] == 5
    assert counts["score >= threshold"] == 3 and counts["after per-user cap"] == 2 and counts["written"] == 2
    assert counts["users"] == 2


def test_items_dataset_as_p(files, tiny_ranking):
    from rectool.artifacts import open_dataset

    p = open_dataset(tiny_ranking["items"]).to_table()["item_id"].to_pylist()[:2]
    pq.write_table(pa.table({"user_id": [1, 1, 2], "item_id": [p[0], p[1], -5], "score": [0.3, 0.4, 0.9]}),
                   files / "pp.parquet")
    submit(files / "pp.parquet", tiny_ranking["items"], files / "o.tsv")
    assert _lines(files / "o.tsv") == [f"1\t{p[1]}", f"1\t{p[0]}"]


def test_bad_inputs(files, cli):
    res = cli("submit", "--pred-path", files / "pred.parquet", "--item-subset-path", files / "item.csv",
              "--output", files / "x", "--format", "xlsx", expect=2)
    assert "--format xlsx: choose tsv or csv" in res.stderr and not (files / "x").exists()
    res = cli("submit", "--pred-path", files / "pred.parquet", "--item-subset-path", files / "nope.csv",
              "--output", files / "x", expect=2)
    assert "nope.csv: no such file" in res.stderr
    (files / "sub.tsv").write_text("old")
    res = cli("submit", "--pred-path", files / "pred.parquet", "--item-subset-path", files / "item.csv",
              "--output", files / "sub.tsv", expect=2)
    assert "already exists; pass --overwrite" in res.stderr and (files / "sub.tsv").read_text() == "old"
    d = dt.date(2014, 12, 18)
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [1, 2], "score": [0.3, 0.4],
                             "label_day": pa.array([d, d + dt.timedelta(days=1)], pa.date32())}), files / "2d.parquet")
    with pytest.raises(UserError, match="a submission is for one day"):
        submit(files / "2d.parquet", files / "item.csv", files / "y.tsv")
    with pytest.raises(UserError, match="--topk 0"):
        submit(files / "pred.parquet", files / "item.csv", files / "y.tsv", topk=0)


def test_settings_from_an_eval_scan(files, cli):
    """The eval day's best cut-off applied to another day, for submit and for eval-f1."""
    (files / "truth.csv").write_text("user_id,item_id\n1,1\n2,9\n")
    cli("eval-f1", "--pred-path", files / "pred.parquet", "--label-path", files / "truth.csv",
        "--topk-list", "1,2,4", "--output", files / "scan")
    cli("submit", "--pred-path", files / "pred.parquet", "--item-subset-path", files / "item.csv",
        "--output", files / "sub.tsv", "--settings-from", files / "scan")
    assert _lines(files / "sub.tsv") == ["1\t1", "2\t1"], "the scan's best top-K is 2"
    cli("submit", "--pred-path", files / "pred.parquet", "--item-subset-path", files / "item.csv",
        "--output", files / "sub1.tsv", "--settings-from", files / "scan", "--topk", "1")
    assert _lines(files / "sub1.tsv") == ["1\t1"], "an explicit flag wins"
    res = cli("eval-f1", "--pred-path", files / "pred.parquet", "--label-path", files / "truth.csv",
              "--settings-from", files / "scan", "--output", files / "again")
    import json

    meta = json.loads((files / "again" / "_meta.json").read_text())
    assert meta["rows"] == 1 and meta["best"]["topk"] == 2 and "eval-f1" in res.stderr
    res = cli("submit", "--pred-path", files / "pred.parquet", "--item-subset-path", files / "item.csv",
              "--output", files / "x.tsv", "--settings-from", files / "item.csv", expect=2)
    assert "--settings-from" in res.stderr
