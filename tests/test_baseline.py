"""``rectool baseline``: rule scores on the hand-checked dataset, the registry, ``-`` output, bad inputs."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import HAND_ROWS, tianchi_events
from rectool.artifacts import open_dataset, read_meta
from rectool.errors import UserError
from rectool.ranking.baseline import RULES, run_baseline
from rectool.ranking.dataset import build_dataset
from rectool.ranking.features import build_features
from rectool.ranking.predictions import PRED_SCHEMA

D17, D18, D19 = dt.date(2014, 12, 17), dt.date(2014, 12, 18), dt.date(2014, 12, 19)


@pytest.fixture(scope="module")
def hand_ds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hand_bl")
    events, _ = tianchi_events(folder, HAND_ROWS)
    build_features(events, folder / "feat", cutoffs=[D17, D18, D19], threads=1)
    build_dataset(events, folder / "feat", folder / "ds", label_days=[D17, D18], predict_day=D19, threads=1)
    return folder / "ds"


def _scores(path):
    return {(r["user_id"], r["item_id"]): r["score"] for r in open_dataset(path).to_table().to_pylist()}


def test_cart_last_day(hand_ds, tmp_path):
    res = run_baseline(hand_ds / "eval", tmp_path / "p", "cart-last-day")
    assert res["predictions"] == 2
    s = _scores(tmp_path / "p")
    assert s == {(1, 10): pytest.approx(21 / 24), (2, 13): pytest.approx(23 / 24)}, "carted 20h and 22h, not bought"
    t = open_dataset(tmp_path / "p").to_table()
    assert t.schema.equals(PRED_SCHEMA) and set(t["label_day"].to_pylist()) == {D18}
    meta = read_meta(tmp_path / "p")
    assert meta["kind"] == "predictions" and meta["rule"] == "cart-last-day" and meta["label_days"] == ["2014-12-18"]


def test_weighted_recency(hand_ds, tmp_path):
    run_baseline(hand_ds, tmp_path / "w", "weighted-recency", split="eval")
    s = _scores(tmp_path / "w")
    assert set(s) == {(1, 10), (1, 11), (2, 10), (2, 13)}, "every candidate"
    # (1,10): browse 0/1/1 (1d/3d/7d), cart 1/1/1, cart-not-bought: 1*0.4 + 4*1 + 5
    assert s[(1, 10)] == pytest.approx(9.4)
    # (1,11): browse 1/1/1, buy 1/1/1: 1 - 4
    assert s[(1, 11)] == pytest.approx(-3.0)
    assert max(s, key=s.get) == (1, 10)


def test_registry_lists_the_rules():
    assert {"cart-last-day", "weighted-recency"} <= set(RULES)
    assert all(r.description and r.columns for r in RULES.values())


def test_cli_stdout_stream(hand_ds, cli):
    res = cli("baseline", "--samples", hand_ds, "--rule", "weighted-recency", "-o", "-", "-q")
    table = pa.ipc.open_stream(res.stdout_bytes).read_all()
    assert table.schema.equals(PRED_SCHEMA) and table.num_rows == 5
    assert set(table["label_day"].to_pylist()) == {D19}, "--split defaults to predict"


def test_cli_dir_output(hand_ds, tmp_path, cli):
    res = cli("baseline", "--samples", hand_ds / "train", "-o", tmp_path / "p", "--overwrite", "-q")
    assert res.stdout.strip() == str(tmp_path / "p")


def test_bad_inputs(hand_ds, tmp_path, cli):
    res = cli("baseline", "--samples", hand_ds / "eval", "--rule", "magic", "-o", tmp_path / "x", expect=2)
    assert "--rule magic: choose one of cart-last-day, weighted-recency, popularity, item-cf" in res.stderr
    pq.write_table(pa.table({"user_id": [1], "item_id": [2], "label_day": pa.array([D18], pa.date32())}),
                   tmp_path / "s.parquet")
    res = cli("baseline", "--samples", tmp_path / "s.parquet", "-o", tmp_path / "x", expect=2)
    assert "missing column(s) ui_cart_not_bought_1d, ui_cart_hour_1d" in res.stderr and "--windows" in res.stderr
    with pytest.raises(UserError, match="has no test/ split"):
        run_baseline(hand_ds, tmp_path / "y", split="test")
    with pytest.raises(UserError, match="already one split"):
        run_baseline(hand_ds / "eval", tmp_path / "y", split="eval")
