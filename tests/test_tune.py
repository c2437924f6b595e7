"""``rectool tune``: the validation carving against plain references, the search file's errors, and the
command end to end (every grid point tried, the winner refitted on all of train as ``baseline`` would)."""

from __future__ import annotations

import csv
import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from retrieval_helpers import write_lists

from rectool.errors import UserError
from rectool.retrieval.formats import Ragged, UserLists, read_recalls
from rectool.tune.holdout import carve, read_ordered
from rectool.tune.space import load_spec


def _lists(rows: dict[int, list[int]]) -> UserLists:
    users = sorted(rows)
    return UserLists(np.array(users), Ragged.from_lists([rows[u] for u in users]))


def test_carve_last_random_and_table_against_plain_rules():
    train = _lists({1: [5, 3, 9, 1, 7, 2, 8, 4, 6, 10], 2: [4, 2], 3: [30, 10, 20, 50, 40]})
    kept, held = carve(train, "last", share=0.2, min_items=5)
    assert held.lists.to_lists() == [[6, 10], [], [40]]  # the last 20% in the data's order, as a sorted set
    assert kept.lists.to_lists() == [[1, 2, 3, 4, 5, 7, 8, 9], [2, 4], [10, 20, 30, 50]]
    kept, held = carve(train, "random", share=0.2, min_items=5, seed=3)
    assert [len(h) for h in held.lists.to_lists()] == [2, 0, 1]
    for k, h, full in zip(kept.lists.to_lists(), held.lists.to_lists(), train.lists.to_lists(), strict=True):
        assert sorted(k + h) == sorted(full) and not set(k) & set(h)
    assert carve(train, "random", share=0.2, seed=3)[1].lists.to_lists() == held.lists.to_lists()  # seeded
    kept, held = carve(train, "table", table=_lists({2: [2], 3: [50, 99]}))
    assert held.lists.to_lists() == [[], [2], [50]] and kept.lists.to_lists()[1] == [4]
    with pytest.raises(UserError, match="nothing held out"):
        carve(train, "last", min_items=20)


def test_read_ordered_keeps_the_data_order(tmp_path):
    """List form as written; long form by time; a repeated item counts at its first place."""
    write_lists(tmp_path / "lists.parquet", [7, 3], [[9, 1, 5, 1], [4, 2]])
    got = read_ordered(tmp_path / "lists.parquet")
    assert got.user_ids.tolist() == [3, 7] and got.lists.to_lists() == [[4, 2], [9, 1, 5]]
    t0 = dt.datetime(2020, 1, 1)
    pq.write_table(pa.table({"user_id": [1, 1, 1, 2], "item_id": [8, 6, 7, 5],
                             "time": [t0 + dt.timedelta(days=d) for d in (3, 1, 2, 0)]}), tmp_path / "long.parquet")
    assert read_ordered(tmp_path / "long.parquet").lists.to_lists() == [[6, 7, 8], [5]]


@pytest.mark.parametrize("body, message", [
    ({"methods": {"als": {"factor": [8]}}}, "als has no parameter 'factor'"),
    ({"sampler": "grid", "methods": {"ease": {"l2": {"low": 1, "high": 9}}}}, "grid sampler needs a list"),
    ({"metric": "auc@20", "methods": {"ease": {}}}, "metric"),
    ({"methods": {"svd": {}}}, "methods.svd"),
    ({"methods": {"ease": {"l2": {"low": 0, "high": 9, "log": True}}}}, "log range needs low > 0"),
    ({"method": "ease", "methods": {"ease": {}}}, "method: unknown key .did you mean .methods.?"),
])
def test_search_file_errors_are_one_line(tmp_path, body, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(UserError, match=message) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _toy(tmp_path):
    """Users in 3 item clusters (ids 100 + 7 i); lists in a random order; test truth one held-out item."""
    rng = np.random.default_rng(0)
    users, train, truth = [], [], []
    for u in range(90):
        cluster = [i for i in range(30) if i % 3 == u % 3]
        chosen = (100 + 7 * rng.choice(cluster, size=int(rng.integers(6, 10)), replace=False)).tolist()
        users.append(u)
        train.append(chosen[:-1])
        truth.append(chosen[-1:])
    write_lists(tmp_path / "train.parquet", users, train)
    write_lists(tmp_path / "truth.parquet", users, truth)


def test_tune_grid_tries_every_point_and_refits_the_winner(tmp_path, cli):
    _toy(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "recall@5", "sampler": "grid", "trials": 50, "methods": {
        "ease": {"l2": [1.0, 100.0]}, "item-knn": {"neighbours": {"low": 2, "high": 6, "step": 2, "int": True}}}}))
    common = ["--space", space, "--train", tmp_path / "train.parquet", "--holdout", "random",
              "--final-users", tmp_path / "truth.parquet", "--final-k", "5"]
    cli("tune", *common, "-o", tmp_path / "tune")
    with open(tmp_path / "tune" / "trials.csv") as fh:
        trials = list(csv.DictReader(fh))
    points = sorted((t["method"], t["l2"] or t["neighbours"]) for t in trials)
    assert points == [("ease", "1.0"), ("ease", "100.0"), ("item-knn", "2"), ("item-knn", "4"), ("item-knn", "6")]
    best = yaml.safe_load((tmp_path / "tune" / "best.yaml").read_text())
    assert best["validation"]["recall@5"] == max(float(t["recall@5"]) for t in trials)
    assert (tmp_path / "tune" / "trials.png").stat().st_size > 0
    meta = json.loads((tmp_path / "tune" / "_meta.json").read_text())
    assert meta["kind"] == "tune" and meta["trials"] == 5
    # the final recalls are exactly `rectool baseline` with the chosen parameters on the whole train
    flags = [f"--{k}" if k != "neighbours" else "--neighbours" for k in best["params"]]
    args = [a for flag, (k, v) in zip(flags, best["params"].items(), strict=True)
            if k in ("l2", "neighbours") for a in (flag, str(v))]
    cli("baseline", "--rule", best["method"], *args, "--train", tmp_path / "train.parquet", "--users",
        tmp_path / "truth.parquet", "--k", "5", "-o", tmp_path / "direct")
    tuned, direct = read_recalls(tmp_path / "tune" / "recalls"), read_recalls(tmp_path / "direct")
    assert tuned.lists.to_lists() == direct.lists.to_lists()
    # an existing output is refused before the search, not after it
    res = cli("tune", *common, "-o", tmp_path / "tune", expect=2)
    assert "already exists; pass --overwrite" in res.stderr


def test_tune_patience_stops_the_search(tmp_path, cli):
    _toy(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "ndcg@5", "sampler": "random", "trials": 30, "patience": 2,
                                     "methods": {"ease": {"l2": [5.0]}}}))  # one value: nothing beats trial 0
    cli("tune", "--space", space, "--train", tmp_path / "train.parquet", "--holdout", "random", "-o", tmp_path / "t")
    assert json.loads((tmp_path / "t" / "_meta.json").read_text())["trials"] == 3
    assert not (tmp_path / "t" / "recalls").exists()


def test_validation_exclusions_leave_the_held_out_truth_retrievable(tmp_path):
    """taobao's rule: exclude only the buys, but a held-out validation buy is the truth, not an exclusion."""
    from rectool.tune.study import validation_exclusions

    train = _lists({1: [5, 6, 7, 8], 2: [9, 10]})
    kept, held = carve(train, "table", table=_lists({1: [7]}))
    write_lists(tmp_path / "buys.parquet", [1, 2], [[6, 7], [10]])
    excl = validation_exclusions(str(tmp_path / "buys.parquet"), kept, held)
    assert excl.user_ids.tolist() == [1, 2] and excl.lists.to_lists() == [[6], [10]]
    assert validation_exclusions("history", kept, held) is kept and validation_exclusions("none", kept, held) is None
