"""``rectool dataset``: candidates, labels, recall ceiling, splits, sampling, bad inputs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from helpers import HAND_ROWS, tianchi_events
from rectool.artifacts import open_dataset, read_meta
from rectool.errors import UserError
from rectool.ranking.dataset import build_dataset
from rectool.ranking.features import build_features
from rectool.ranking.samples import keep_negative, user_in_eval

D17, D18, D19 = dt.date(2014, 12, 17), dt.date(2014, 12, 18), dt.date(2014, 12, 19)


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hand_ds")
    events, _ = tianchi_events(folder, HAND_ROWS)
    build_features(events, folder / "feat", cutoffs=[D17, D18, D19], threads=1)
    build_dataset(events, folder / "feat", folder / "ds", label_days=[D17, D18], predict_day=D19, threads=1)
    return folder


def _pairs(path, with_label=True):
    t = open_dataset(path).to_table()
    cols = ["user_id", "item_id", *(["label"] if with_label else [])]
    return sorted(tuple(r[c] for c in cols) for r in t.to_pylist())


def test_candidates_labels_and_splits(hand):
    # 12-17, K=3: actions on 12-14..12-16 -> (1,10), (2,10); bought on 12-17: (1,11), (2,10)
    assert _pairs(hand / "ds" / "train") == [(1, 10, 0), (2, 10, 1)]
    # 12-18: actions on 12-15..12-17 -> (1,10), (1,11), (2,10), (2,13); bought on 12-18: (1,10), (2,15)
    assert _pairs(hand / "ds" / "eval") == [(1, 10, 1), (1, 11, 0), (2, 10, 0), (2, 13, 0)]
    assert _pairs(hand / "ds" / "predict", with_label=False) == [(1, 10), (1, 11), (2, 10), (2, 13), (2, 15)]
    assert "label" not in open_dataset(hand / "ds" / "predict").schema.names


def test_recall_ceiling_and_labels(hand):
    meta = read_meta(hand / "ds")
    assert meta["kind"] == "samples" and meta["task"] == "ranking" and meta["split"] == "last-day"
    assert meta["days"]["2014-12-17"]["label_pairs"] == 2 and meta["days"]["2014-12-17"]["positives"] == 1
    assert meta["days"]["2014-12-17"]["recall_ceiling"] == 0.5 and meta["days"]["2014-12-18"]["recall_ceiling"] == 0.5
    assert meta["recall_ceiling"] == 0.5
    labels = open_dataset(hand / "ds" / "labels").to_table().to_pylist()
    got = sorted((r["user_id"], r["item_id"], str(r["label_day"]), r["split"], r["covered"]) for r in labels)
    assert got == [(1, 10, "2014-12-18", "eval", 1), (1, 11, "2014-12-17", "train", 0),
                   (2, 10, "2014-12-17", "train", 1), (2, 15, "2014-12-18", "eval", 0)]
    assert read_meta(hand / "ds" / "eval")["split_name"] == "eval"
    assert read_meta(hand / "ds" / "eval")["label_days"] == ["2014-12-18"]
    assert read_meta(hand / "ds" / "labels")["kind"] == "labels"


def test_columns_are_trainer_ready(hand):
    t = open_dataset(hand / "ds" / "eval").to_table()
    meta = read_meta(hand / "ds")
    assert t.schema.field("user_id").type == pa.int64() and t.schema.field("label").type == pa.int8()
    assert t.schema.field("label_day").type == pa.date32()
    assert all(t.schema.field(c).type == pa.float32() for c in meta["feature_columns"])
    assert len(meta["feature_columns"]) > 200 and "ui_cart_not_bought_1d" in meta["feature_columns"]
    assert t.schema.field("u_last_items").type == pa.list_(pa.int64())
    assert sum(t.column(c).null_count for c in t.column_names) == 0, "no nulls: every gap is filled"
    row = {(r["user_id"], r["item_id"]): r for r in t.to_pylist()}[(1, 10)]
    assert row["ui_cart_not_bought_1d"] == 1.0 and row["ui_browse_all"] == 2.0 and row["ui_cart_hour_1d"] == 20.0
    assert row["i_users_all"] == 2.0 and row["u_items_all"] == 3.0 and row["c_items_all"] == 2.0
    assert row["label_day"] == D18 and row["category_id"] == 100
    assert row["u_last_items"] == [12, 11, 10]
    gap = {(r["user_id"], r["item_id"]): r for r in t.to_pylist()}[(1, 11)]
    assert gap["ui_hours_since_cart"] == 9999.0 and gap["ui_cart_hour_1d"] == -1.0


def test_user_hash_split_is_stable(tiny_ranking, tmp_path):
    out = tmp_path / "uh"
    build_dataset(tiny_ranking["events"], tiny_ranking["features"], out, items=tiny_ranking["items"],
                  split="user-hash", eval_fraction=0.3, seed=11, predict_day=None, threads=2)
    train, evals = (open_dataset(out / s).to_table() for s in ("train", "eval"))
    eval_users = set(evals["user_id"].to_pylist())
    assert not eval_users & set(train["user_id"].to_pylist()), "a user is in one split only"
    assert set(evals["label_day"].to_pylist()) == {D17, D18}, "eval holds every label day"
    every = set(eval_users | set(train["user_id"].to_pylist()))
    share = np.mean(user_in_eval(np.array(sorted(every)), 11, 0.3))
    assert 0.15 < share < 0.45
    assert not (out / "predict").exists()
    assert user_in_eval(np.array([5, 6, 7]), 11, 0.3).tolist() == user_in_eval(np.array([5, 6, 7]), 11, 0.3).tolist()


def test_negative_sampling_keeps_positives(tiny_ranking, tmp_path):
    full = open_dataset(tiny_ranking["samples"] / "train").to_table()
    build_dataset(tiny_ranking["events"], tiny_ranking["features"], tmp_path / "s1", items=tiny_ranking["items"],
                  neg_ratio=3, seed=5, threads=2)
    build_dataset(tiny_ranking["events"], tiny_ranking["features"], tmp_path / "s2", items=tiny_ranking["items"],
                  neg_ratio=3, seed=5, threads=1)
    a, b = (open_dataset(tmp_path / s / "train").to_table() for s in ("s1", "s2"))
    pos = pc.sum(full["label"]).as_py()
    assert pos > 0 and pc.sum(a["label"]).as_py() == pos, "every positive is kept"
    assert pos < a.num_rows - pos < 8 * pos, "about 3 negatives per positive"
    key = [("user_id", "ascending"), ("item_id", "ascending")]
    assert a.sort_by(key).equals(b.sort_by(key)), "same seed, same rows (whatever the threads)"
    assert open_dataset(tmp_path / "s1" / "eval").count_rows() == open_dataset(
        tiny_ranking["samples"] / "eval").count_rows(), "eval is not sampled"
    rate = read_meta(tmp_path / "s1")["days"]["2014-12-17"]["neg_keep_rate"]
    assert 0 < rate < 1
    users, items = np.arange(10_000), np.arange(10_000) * 7
    assert abs(keep_negative(users, items, D17, 1, 0.25).mean() - 0.25) < 0.03


def test_cli_dataset(hand, cli):
    res = cli("dataset", "--task", "ranking", "--events", hand / "events", "--features", hand / "feat",
              "-o", hand / "cli_ds", "--label-days", "2014-12-18", "--predict-day", "none", "--split", "user-hash",
              "--eval-fraction", "0.5", "--candidate-days", "2", "--neg-ratio", "1", "--seed", "3", "--no-sequences",
              "--threads", "1", "--memory-limit", "256MB", "--temp-dir", hand / "spill", "-q")
    assert res.stdout.strip() == str(hand / "cli_ds")
    t = pa.concat_tables([open_dataset(hand / "cli_ds" / s).to_table() for s in ("train", "eval")])
    assert "u_last_items" not in t.column_names
    assert (1, 13) not in _pairs(hand / "cli_ds" / "eval"), "K=2: 12-16..12-17 only"
    meta = read_meta(hand / "cli_ds")
    assert meta["candidate_days"] == 2 and meta["predict_day"] is None and meta["eval_fraction"] == 0.5


@pytest.mark.parametrize("kwargs, message", [
    ({"label_days": [D19]}, "the events end 2014-12-18"),
    ({"label_days": [D17, D18], "predict_day": D18}, "also a label day"),
    ({"label_days": [dt.date(2014, 12, 10), D18]}, "has no cut-off 2014-12-10"),
    ({"candidate_days": 9}, "exceeds the features' --pair-days 7"),
    ({"label_days": [D18]}, "--split last-day needs at least two"),
    ({"neg_ratio": -1}, "--neg-ratio -1"),
    ({"split": "random"}, "--split random"),
])
def test_bad_inputs(hand, kwargs, message):
    with pytest.raises(UserError, match=message):
        build_dataset(hand / "events", hand / "feat", hand / "bad", **kwargs)
    assert not (hand / "bad").exists()


def test_features_with_items_need_items(tiny_ranking, tmp_path, cli):
    res = cli("dataset", "--events", tiny_ranking["events"], "--features", tiny_ranking["features"],
              "-o", tmp_path / "x", expect=2)
    assert "built for the item subset" in res.stderr and "--items" in res.stderr
    res = cli("dataset", "--events", tiny_ranking["events"], "--features", tiny_ranking["events"],
              "-o", tmp_path / "x", expect=2)
    assert "'events' artifact, expected 'features'" in res.stderr
    res = cli("dataset", "--task", "next-item", "--events", tiny_ranking["events"], "--features",
              tiny_ranking["features"], "-o", tmp_path / "x", expect=2)
    assert "--task next-item" in res.stderr


def test_matches_the_pandas_reference(tiny_ranking, tmp_path):
    """Every column of the benchmark's pandas implementation (all features) agrees with rectool's."""
    import importlib.util

    import pandas as pd

    from helpers import ROOT

    spec = importlib.util.spec_from_file_location("ref_features", ROOT / "bench" / "ref_features.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ev = open_dataset(tiny_ranking["events"]).to_table(
        columns=["user_id", "item_id", "category_id", "behavior", "time", "geohash"]).to_pandas()
    ev["day"] = ev["time"].dt.floor("D")
    p_items = open_dataset(tiny_ranking["items"]).to_table(columns=["item_id"])["item_id"].to_numpy()
    theirs = ref.samples(ev, p_items, pd.Timestamp(D18), True)
    ours = open_dataset(tiny_ranking["samples"] / "eval").to_table().to_pandas()
    assert len(theirs) == len(ours) > 50
    assert set(theirs.columns) == set(ours.columns), set(theirs.columns) ^ set(ours.columns)
    both = theirs.merge(ours, on=["user_id", "item_id"], suffixes=("_ref", ""))
    assert len(both) == len(ours)
    for c in read_meta(tiny_ranking["samples"])["feature_columns"] + ["label", "category_id"]:
        assert np.allclose(both[f"{c}_ref"].to_numpy(np.float64), both[c].to_numpy(np.float64)), c
    for c in ("u_last_items", "u_last_categories"):
        assert [list(x) for x in both[f"{c}_ref"]] == [list(x) for x in both[c]], c


def test_chunked_join_gives_the_same_rows(tiny_ranking, tmp_path, monkeypatch):
    """Many candidates are joined in user-hash chunks; the rows do not depend on it."""
    import rectool.ranking.dataset as dataset_mod

    monkeypatch.setattr(dataset_mod, "CHUNK_ROWS", 150)
    assert read_meta(tiny_ranking["samples"])["days"]["2014-12-18"]["candidates"] > 3 * 150, "several chunks"
    build_dataset(tiny_ranking["events"], tiny_ranking["features"], tmp_path / "chunked", items=tiny_ranking["items"],
                  threads=2)
    key = [("user_id", "ascending"), ("item_id", "ascending"), ("label_day", "ascending")]
    for split in ("train", "eval", "predict"):
        a = open_dataset(tiny_ranking["samples"] / split).to_table().sort_by(key)
        b = open_dataset(tmp_path / "chunked" / split).to_table().sort_by(key)
        assert a.num_rows > 80 and a.equals(b), split


def test_out_of_memory_is_one_line(tiny_ranking, tmp_path, cli):
    res = cli("features", "--events", tiny_ranking["events"], "-o", tmp_path / "f", "--memory-limit", "1MB",
              "--threads", "1", expect=2)
    assert "DuckDB ran out of memory within --memory-limit 1MB" in res.stderr
    assert "raise --memory-limit" in res.stderr and len(res.stderr.strip().splitlines()) == 1
