"""``rectool eval-f1``: exact F1 with duplicates and ties, scans, label forms, day checks, bad inputs."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectool.artifacts import read_meta
from rectool.errors import UserError
from rectool.ranking.f1 import auto_topks, eval_f1, parse_floats, parse_topks

D18 = dt.date(2014, 12, 18)
# (user, item, score): a duplicate pair, a tie across users, a tie inside user 3
PRED = [(1, 1, 0.9), (1, 1, 0.2), (1, 2, 0.8), (2, 1, 0.8), (2, 2, 0.5), (3, 1, 0.1), (3, 2, 0.1)]
TRUE = [(1, 1), (2, 1), (3, 3), (2, 1)]  # three distinct true pairs


def _write_pred(path, rows=PRED, day=D18):
    t = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                  "score": pa.array([r[2] for r in rows], pa.float32())})
    if day is not None:
        t = t.append_column("label_day", pa.array([day] * len(rows), pa.date32()))
    pq.write_table(t, path)
    return path


def _write_truth(path, rows=TRUE, header=True):
    path.write_text(("user_id,item_id\n" if header else "") + "".join(f"{u},{i}\n" for u, i in rows))
    return path


def _reference(pred, truth, k=None, t=None, cap=None):
    """Plain-Python F1: dedup, order (score desc, user, item), per-user cap, threshold, top-K."""
    best = {}
    for u, i, s in pred:
        best[(u, i)] = max(best.get((u, i), float("-inf")), float(np.float32(s)))  # stored as float32
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
    if cap is not None:
        seen: dict[int, int] = {}
        kept = []
        for (u, i), s in sorted(best.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
            seen[u] = seen.get(u, 0) + 1
            if seen[u] <= cap:
                kept.append(((u, i), s))
        ranked = sorted(kept, key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
    chosen = [p for p, s in ranked if t is None or s >= float(np.float32(t))][:k]
    hits = len(set(chosen) & set(truth))
    p = hits / len(chosen) if chosen else 0.0
    r = hits / len(set(truth))
    return 2 * p * r / (p + r) if p + r else 0.0


def test_hand_computed_f1(tmp_path):
    res = eval_f1(_write_pred(tmp_path / "p.parquet"), _write_truth(tmp_path / "t.csv"), topks=[1, 2, 3, None],
                  thresholds=[None, 0.8, 0.85], caps=[1], output=tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / "scan.parquet").to_pylist()
    got = {(r["max_per_user"], r["topk"], r["threshold"]): r for r in rows}
    # order: (1,1,.9) hit, (1,2,.8), (2,1,.8) hit (tie: user 1 first), (2,2,.5), (3,1,.1), (3,2,.1)
    assert got[(None, 1, None)]["f1"] == pytest.approx(0.5)              # P 1, R 1/3
    assert got[(None, 2, None)]["f1"] == pytest.approx(0.4)              # the tie puts the miss (1,2) second
    assert got[(None, 3, None)]["f1"] == pytest.approx(2 / 3)
    assert got[(None, None, None)]["f1"] == pytest.approx(4 / 9)         # 6 pairs after dedup, 2 hits
    assert got[(None, None, None)]["n_pred"] == 6
    assert got[(None, None, 0.8)]["f1"] == pytest.approx(2 / 3)          # score >= 0.8 keeps 3
    assert got[(None, None, 0.85)]["n_pred"] == 1
    assert got[(1, 2, None)]["f1"] == pytest.approx(0.8)                 # one per user: (1,1), (2,1) first
    best = [r for r in rows if r["best"]]
    assert len(best) == 1 and best[0]["f1"] == pytest.approx(0.8) and res["best f1"] == pytest.approx(0.8)
    assert res["duplicate rows dropped"] == 1 and res["true pairs"] == 3
    for r in rows:
        ref = _reference(PRED, [tuple(x) for x in TRUE], r["topk"], r["threshold"], r["max_per_user"])
        assert r["f1"] == pytest.approx(ref), r
    assert (tmp_path / "out" / "scan.csv").read_text().startswith('"max_per_user","topk"')
    png = (tmp_path / "out" / "f1_vs_topk.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    meta = read_meta(tmp_path / "out")
    assert meta["kind"] == "f1-scan" and meta["best"]["f1"] == pytest.approx(0.8) and meta["true_pairs"] == 3


def test_large_random_scan_matches_reference(tmp_path):
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(600), 2).astype(np.float32)  # many ties; float32 as in the prediction schema
    pred = [(int(u), int(i), float(s)) for u, i, s in zip(rng.integers(0, 40, 600), rng.integers(0, 30, 600),
                                                          scores, strict=True)]
    truth = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, 40, 150), rng.integers(0, 30, 150),
                                                      strict=True)})
    _write_pred(tmp_path / "p.parquet", pred, None)
    _write_truth(tmp_path / "t.csv", truth, header=False)
    eval_f1(tmp_path / "p.parquet", tmp_path / "t.csv", topks=[10, 50, 100, 200, None], thresholds=[None, 0.3, 0.9],
            caps=[1, 3], output=tmp_path / "o")
    for r in pq.read_table(tmp_path / "o" / "scan.parquet").to_pylist():
        assert r["f1"] == pytest.approx(_reference(pred, truth, r["topk"], r["threshold"], r["max_per_user"])), r


def test_cli_reads_stdin_and_dataset_labels(tiny_ranking, tmp_path, cli):
    from rectool.ranking.baseline import run_baseline

    run_baseline(tiny_ranking["samples"] / "eval", tmp_path / "p", "weighted-recency")
    res = cli("eval-f1", "--pred-path", tmp_path / "p", "--label-path", tiny_ranking["samples"] / "eval",
              "--topk-list", "5,10,all", "--threshold-list", "none,1", "--max-per-user", "1,2", "-o", tmp_path / "o")
    assert res.stdout.strip() == str(tmp_path / "o")
    rows = pq.read_table(tmp_path / "o" / "scan.parquet")
    assert rows.num_rows == 3 * 2 * 3
    meta = json.loads((tmp_path / "o" / "_meta.json").read_text())
    assert meta["labels"].endswith("labels (split eval)")
    # true pairs come from labels/ (also those no candidate covers), not from label = 1 rows
    assert meta["true_pairs"] == json.loads((tiny_ranking["samples"] / "_meta.json").read_text())["days"][
        "2014-12-18"]["label_pairs"]
    stream = pa.BufferOutputStream()
    t = pq.read_table(tmp_path / "p")
    with pa.ipc.new_stream(stream, t.schema) as w:
        w.write_table(t)
    from typer.testing import CliRunner

    from rectool.cli import app

    out = CliRunner().invoke(app, ["eval-f1", "--pred-path", "-", "--label-path", str(tiny_ranking["samples"])],
                             input=stream.getvalue().to_pybytes())
    assert out.exit_code == 0, out.stderr
    assert out.stdout == "", "no --output: nothing on stdout"


def test_labels_of_another_day_are_refused(tiny_ranking, tmp_path, cli):
    from rectool.ranking.baseline import run_baseline

    run_baseline(tiny_ranking["samples"] / "eval", tmp_path / "p", "weighted-recency")
    res = cli("eval-f1", "--pred-path", tmp_path / "p", "--label-path", tiny_ranking["samples"] / "train", expect=2)
    assert "labels are for 2014-12-17 but the predictions are for 2014-12-18" in res.stderr
    res = cli("eval-f1", "--pred-path", tmp_path / "p", "--label-path", tiny_ranking["samples"] / "predict", expect=2)
    assert "the predict split has no labels" in res.stderr
    # a dataset folder holds both label days: restricted to the predicted one
    res = cli("eval-f1", "--pred-path", tmp_path / "p", "--label-path", tiny_ranking["samples"])
    assert "scoring only the predicted day" in res.stderr


def test_bad_predictions(tmp_path, cli):
    truth = _write_truth(tmp_path / "t.csv")
    pq.write_table(pa.table({"user_id": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64()),
                             "score": pa.array([], pa.float32())}), tmp_path / "empty.parquet")
    res = cli("eval-f1", "--pred-path", tmp_path / "empty.parquet", "--label-path", truth, expect=2)
    assert "holds no predictions" in res.stderr
    pq.write_table(pa.table({"user_id": [1], "item_id": [2]}), tmp_path / "noscore.parquet")
    res = cli("eval-f1", "--pred-path", tmp_path / "noscore.parquet", "--label-path", truth, expect=2)
    assert "missing column(s) score" in res.stderr
    pq.write_table(pa.table({"user_id": [1], "item_id": [2], "score": [float("nan")]}), tmp_path / "nan.parquet")
    res = cli("eval-f1", "--pred-path", tmp_path / "nan.parquet", "--label-path", truth, expect=2)
    assert "NaN" in res.stderr
    (tmp_path / "bad.csv").write_text("user,item\n1,2\n")
    res = cli("eval-f1", "--pred-path", _write_pred(tmp_path / "p.parquet"), "--label-path", tmp_path / "bad.csv",
              expect=2)
    assert "lacks user_id,item_id" in res.stderr
    res = cli("eval-f1", "--pred-path", tmp_path / "p.parquet", "--label-path", truth, "--topk-list", "ten",
              expect=2)
    assert "'ten' is not a positive count" in res.stderr
    t = pa.table({"user_id": [1, 2], "item_id": [1, 2], "score": [0.5, 0.4],
                  "label_day": pa.array([D18, D18 + dt.timedelta(days=1)], pa.date32())})
    pq.write_table(t, tmp_path / "two_days.parquet")
    with pytest.raises(UserError, match="score one day at a time"):
        eval_f1(tmp_path / "two_days.parquet", truth)


def test_dayless_predictions_need_one_label_day(tiny_ranking, tmp_path):
    _write_pred(tmp_path / "p.parquet", day=None)
    with pytest.raises(UserError, match="the predictions name no day but the labels cover 2014-12-17, 2014-12-18"):
        eval_f1(tmp_path / "p.parquet", tiny_ranking["samples"])
    assert eval_f1(tmp_path / "p.parquet", tiny_ranking["samples"] / "eval")["true pairs"] > 0


def test_parsers():
    assert parse_topks("auto") is None and parse_topks("10, all") == [10, None]
    assert parse_floats("none,0.5", "--threshold-list") == [None, 0.5]
    assert auto_topks(100)[:4] == [25, 50, 75, 100] and auto_topks(100)[-1] is None
