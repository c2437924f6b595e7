"""The ranking chain end to end through the CLI: generated data and the real Tianchi sample."""

from __future__ import annotations

import json

import pytest

from helpers import shared_path
from rectool.artifacts import open_dataset


def _chain(cli, tmp_path, user_csv, item_csv, rule="cart-last-day", items=True):
    ev = cli("convert", "-f", "tianchi-user", user_csv, "-o", tmp_path / "events", "-q").stdout.strip()
    it = cli("convert", "-f", "tianchi-item", item_csv, "-o", tmp_path / "items", "-q").stdout.strip()
    p = ["--items", it] if items else []
    feats = cli("features", "--events", ev, *p, "-o", tmp_path / "features", "--threads", "2", "-q").stdout.strip()
    ds = cli("dataset", "--events", ev, "--features", feats, *p, "-o", tmp_path / "samples", "-q").stdout.strip()
    pred_eval = cli("baseline", "--samples", f"{ds}/eval", "--rule", rule, "-o", tmp_path / "pe", "-q").stdout.strip()
    pred = cli("baseline", "--samples", ds, "--rule", rule, "-o", tmp_path / "pp", "-q").stdout.strip()
    return ev, it, ds, pred_eval, pred


@pytest.mark.slow
def test_generated_chain_scores_the_hidden_day(tiny_tianchi, tmp_path, cli):
    raw = tiny_tianchi
    _, it, ds, pred_eval, pred = _chain(cli, tmp_path, raw / "offline/tianchi_fresh_comp_train_user.csv",
                                        raw / "offline/tianchi_fresh_comp_train_item.csv", "weighted-recency")
    cli("eval-f1", "--pred-path", pred_eval, "--label-path", f"{ds}/eval", "-o", tmp_path / "f1_eval", "-q")
    cli("eval-f1", "--pred-path", pred, "--label-path", raw / "truth/next_day_purchases.csv",
        "-o", tmp_path / "f1_target", "-q")
    meta = json.loads((tmp_path / "f1_target" / "_meta.json").read_text())
    truth_rows = len((raw / "truth/next_day_purchases.csv").read_text().splitlines()) - 1
    assert meta["true_pairs"] == truth_rows > 0 and meta["label_days"] == ["2014-12-19"]
    assert meta["best"]["f1"] > 0.02, "the rule finds some of the next-day purchases"
    sub = cli("submit", "--pred-path", pred, "--item-subset-path", it, "--topk", "50", "-o", tmp_path / "sub.tsv")
    lines = (tmp_path / "sub.tsv").read_text().splitlines()
    assert sub.stdout.strip() == str(tmp_path / "sub.tsv") and len(lines) == 50
    p = set(open_dataset(it).to_table()["item_id"].to_pylist())
    assert all(int(line.split("\t")[1]) in p for line in lines)


def test_real_tianchi_sample_chain(tmp_path, cli):
    user = shared_path("tianchi", "user_sample.csv")
    item = shared_path("tianchi", "item_sample_20k.csv")
    _, it, ds, pred_eval, pred = _chain(cli, tmp_path, user, item, "weighted-recency", items=False)
    meta = json.loads((tmp_path / "samples" / "_meta.json").read_text())
    assert meta["label_days"] == ["2014-12-17", "2014-12-18"] and meta["predict_day"] == "2014-12-19"
    assert open_dataset(pred).count_rows() > 0
    cli("eval-f1", "--pred-path", pred_eval, "--label-path", f"{ds}/eval", "-o", tmp_path / "f1", "-q")
    cli("submit", "--pred-path", pred, "--item-subset-path", item, "-o", tmp_path / "sub.csv", "--format", "csv")
    assert (tmp_path / "sub.csv").read_text().startswith("user_id,item_id\n")
    # with the item subset P the sample has almost no candidates: the chain still runs
    cli("features", "--events", tmp_path / "events", "--items", it, "-o", tmp_path / "fp", "-q")
    cli("dataset", "--events", tmp_path / "events", "--features", tmp_path / "fp", "--items", it,
        "-o", tmp_path / "sp", "-q")
    cli("baseline", "--samples", tmp_path / "sp", "-o", tmp_path / "pp2", "-q")
