"""``rectool tune``: the validation carving against plain references, the search file's errors, and the
command end to end (every grid point tried, the winner refitted on all of train as ``baseline`` would)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re

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


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_tune_patience_stops_the_search(tmp_path, cli):
    _toy(tmp_path)
    import os

    killed = tmp_path / f".t.tune-{_dead_pid()}-abc"  # the work folder of a killed tune: swept
    running = tmp_path / f".t.tune-{os.getpid()}-def"  # a live one's: kept
    for folder in (killed, running):
        (folder / "trial-0").mkdir(parents=True)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "ndcg@5", "sampler": "random", "trials": 30, "patience": 2,
                                     "methods": {"ease": {"l2": [5.0]}}}))  # one value: nothing beats trial 0
    cli("tune", "--space", space, "--train", tmp_path / "train.parquet", "--holdout", "random", "-o", tmp_path / "t")
    assert json.loads((tmp_path / "t" / "_meta.json").read_text())["trials"] == 3
    assert not (tmp_path / "t" / "recalls").exists()
    with open(tmp_path / "t" / "trials.csv") as fh:  # the one configuration is fitted once, then looked up
        assert [row["repeat_of"] for row in csv.DictReader(fh)] == ["", "0", "0"]
    assert sorted(p.name for p in tmp_path.glob(".t.tune-*")) == [running.name]


def test_validation_exclusions_leave_the_held_out_truth_retrievable(tmp_path):
    """taobao's rule: exclude only the buys, but a held-out validation buy is the truth, not an exclusion."""
    from rectool.tune.splits import list_exclusions

    train = _lists({1: [5, 6, 7, 8], 2: [9, 10]})
    kept, held = carve(train, "table", table=_lists({1: [7]}))
    write_lists(tmp_path / "buys.parquet", [1, 2], [[6, 7], [10]])
    excl = list_exclusions(str(tmp_path / "buys.parquet"), kept, held)
    assert excl.user_ids.tolist() == [1, 2] and excl.lists.to_lists() == [[6], [10]]
    assert list_exclusions("history", kept, held) is kept and list_exclusions("none", kept, held) is None


# --- a next-item dataset: the validation split carved from its training events, and trained models ---------

def _events(path, rows):
    """rows: (user, item, hour[, behaviour]) -> an events dataset as `convert` writes it."""
    from rectool.artifacts import write_meta

    path.mkdir(parents=True)
    t0 = dt.datetime(2020, 1, 1)
    pq.write_table(pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.int64()), "item_id": pa.array([r[1] for r in rows], pa.int64()),
        "category_id": pa.array([r[1] // 30 for r in rows], pa.int64()),
        "behavior": pa.array([r[3] if len(r) > 3 else 1 for r in rows], pa.int8()),
        "time": pa.array([t0 + dt.timedelta(hours=r[2]) for r in rows], pa.timestamp("ms"))}), path / "part-0.parquet")
    write_meta(path, kind="events", rows=len(rows))
    return path


def _table(path):
    import pyarrow.dataset as pads

    return {r["user_id"]: r for r in pads.dataset(path).to_table().to_pylist()}


def test_validation_carve_of_training_events_against_plain_rules(tmp_path):
    from rectool.retrieval.sequences import ValidationCarve, build_next_item

    # user 1: 10 events (out of time order on disk), user 2: 3 (too few to hold any out), user 3: 5
    rows = [(1, 10 + k, 20 - k) for k in range(10)] + [(2, 40 + k, k) for k in range(3)] + \
        [(3, 60 + k, k) for k in range(5)]
    events = _events(tmp_path / "ev", rows)
    build_next_item(str(events), tmp_path / "last", protocol="given", min_behaviors=1,
                    validation=ValidationCarve("last", share=0.2, min_items=5))
    truth, train = _table(tmp_path / "last" / "test" / "truth"), _table(tmp_path / "last" / "train_sequences")
    # by time, user 1's items run 19, 18, ..., 10: the last 20% are 11 and 10
    assert sorted(truth[1]["item_ids"]) == [10, 11] and train[1]["item_ids"] == list(range(19, 11, -1))
    assert 2 not in truth and train[2]["item_ids"] == [40, 41, 42] and truth[3]["item_ids"] == [64]
    meta = json.loads((tmp_path / "last" / "_meta.json").read_text())
    assert meta["validation"]["rule"] == "last" and meta["test_events"] == []
    build_next_item(str(events), tmp_path / "random", protocol="given", min_behaviors=1,
                    validation=ValidationCarve("random", share=0.2, min_items=5, seed=3))
    truth, train = _table(tmp_path / "random" / "test" / "truth"), _table(tmp_path / "random" / "train_sequences")
    assert len(truth[1]["item_ids"]) == 2 and len(truth[3]["item_ids"]) == 1 and 2 not in truth
    for user, full in ((1, range(10, 20)), (3, range(60, 65))):
        assert sorted(truth[user]["item_ids"] + train[user]["item_ids"]) == list(full)
    build_next_item(str(events), tmp_path / "random2", protocol="given", min_behaviors=1,
                    validation=ValidationCarve("random", share=0.2, min_items=5, seed=3))
    assert _table(tmp_path / "random2" / "test" / "truth") == truth  # seeded
    # table: the pairs held out, only as a target behaviour (a buy), never the same item's cart
    bought = _events(tmp_path / "ev2", [(1, 5, 0, 3), (1, 5, 1, 4), (1, 6, 2, 4), (2, 7, 0, 4)])
    build_next_item(str(bought), tmp_path / "table", protocol="given", min_behaviors=1, target_behaviors=[4],
                    validation=ValidationCarve("table", pairs=pa.table({"user_id": [1], "item_id": [5]})))
    assert _table(tmp_path / "table" / "test" / "truth")[1]["item_ids"] == [5]
    assert _table(tmp_path / "table" / "train_sequences")[1]["item_ids"] == [5, 6]  # the cart stays
    with pytest.raises(UserError, match="nothing held out"):
        build_next_item(str(events), tmp_path / "x", protocol="given", validation=ValidationCarve("last", min_items=50))


def _clustered_dataset(tmp_path):
    """200 users, each in one of 10 item clusters: 12 training events in time, 2 test items."""
    from rectool.retrieval.sequences import build_next_item

    rng = np.random.default_rng(0)
    train, test = [], []
    for u in range(200):
        c = int(rng.integers(0, 10))
        items = rng.choice(np.arange(c * 30, c * 30 + 30), 14, replace=False).tolist()
        train += [(u, x, k) for k, x in enumerate(items[:12])]
        test += [(u, x, 100 + k) for k, x in enumerate(items[12:])]
    build_next_item(str(_events(tmp_path / "train_ev", train)), tmp_path / "seq", protocol="given",
                    test_events=str(_events(tmp_path / "test_ev", test)), min_behaviors=1, max_history=5)
    return tmp_path / "seq"


def test_tune_trains_a_model_on_a_carved_split_and_refits_the_winner(tmp_path, cli):
    from helpers import retrieval_config

    seq = _clustered_dataset(tmp_path)
    (seq / "test" / "truth" / "part-00000.parquet").write_bytes(b"not parquet")  # tune never reads the test truth
    cfg = retrieval_config(seq, tmp_path / "tt_model")
    cfg["train"]["epochs"] = 1
    (tmp_path / "tt.yaml").write_text(yaml.safe_dump(cfg))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "recall@10", "sampler": "grid", "trials": 10,
                                     "methods": {"item-knn": {"neighbours": [20]}},
                                     "models": {"tt": {"config": str(tmp_path / "tt.yaml"),
                                                       "params": {"model.loss.temperature": [0.1]},
                                                       "retrieve": {"item_similarity": [0, 0.3],
                                                                    "repeat_column": "hist_item_ids"}}}}))
    cli("tune", "--space", space, "--dataset", seq, "--holdout", "last", "--final", "--final-k", "10",
        "-o", tmp_path / "tune")
    out = tmp_path / "tune"
    rows = json.loads((out / "trials.json").read_text())
    assert sorted(r["method"] for r in rows) == ["item-knn", "tt"]
    trained = next(r for r in rows if r["method"] == "tt")
    assert [v["retrieve"].get("item_similarity") for v in trained["variants"]] == [None, 0.3]
    assert trained["recall@10"] == max(v["recall@10"] for v in trained["variants"])
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["validation"]["recall@10"] == max(r["recall@10"] for r in rows)
    assert not list(tmp_path.glob(".tune.tune-*")), "the work directory is removed"
    if best["method"] == "tt":
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        assert cfg["data"]["train_input"] == str(seq / "train") and cfg["model"]["loss"]["temperature"] == 0.1
        # the final recalls are exactly retrieve with the winner's export and retrieve terms
        cli("embed", "--model", out / "export", "--items", seq / "items", "-o", tmp_path / "emb")
        flags = [a for k, v in best["retrieve"].items() for a in (f"--{k.replace('_', '-')}", str(v))]
        cli("retrieve", "--method", "brute", "--model", out / "export", "--items", tmp_path / "emb", "--users",
            seq / "test" / "inputs", "--topk", "10", *flags, "-o", tmp_path / "direct")
        assert read_recalls(out / "recalls").lists.to_lists() == read_recalls(tmp_path / "direct").lists.to_lists()
    assert read_recalls(out / "recalls").user_ids.tolist() == list(range(200))


def test_tune_uses_a_datasets_own_validation_split(tmp_path, cli):
    """leave-one-out with --n-valid: the second-to-last item is the validation truth, the last never read."""
    from rectool.retrieval.sequences import build_next_item
    from rectool.tune.splits import dataset_split, sample_users

    rows = [(u, (u % 3) * 30 + (k * 7 + u) % 30, k) for u in range(60) for k in range(8)]
    build_next_item(str(_events(tmp_path / "ev", rows)), tmp_path / "loo", protocol="leave-one-out",
                    min_behaviors=1, n_valid=1)
    split = dataset_split(tmp_path / "loo", tmp_path, "last", share=0.2, min_items=5, seed=7, holdout_table=None,
                          exclude="history")
    valid = _table(tmp_path / "loo" / "valid" / "truth")
    assert split.truth.lists.to_lists() == [[valid[u]["item_ids"][0]] for u in sorted(valid)]
    assert split.inputs == tmp_path / "loo" / "valid" / "inputs"
    # a seeded sample of the validation users: their inputs and truth, nothing else
    sample = sample_users(split, 10, 7, tmp_path / "work")
    assert len(sample.users) == 10 and set(sample.users) < set(split.users)
    assert sorted(_table(sample.inputs)) == sample.users.tolist()
    assert sample.truth.lists.to_lists() == [[valid[u]["item_ids"][0]] for u in sample.users]
    assert sample_users(split, 1000, 7, tmp_path / "work") is split
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "hit_rate@5", "sampler": "grid", "validation_users": 10,
                                     "methods": {"ease": {"l2": [10.0]}}}))
    cli("tune", "--space", space, "--dataset", tmp_path / "loo", "--final", "-o", tmp_path / "t")
    assert json.loads((tmp_path / "t" / "_meta.json").read_text())["validation_users"] == 10
    assert read_recalls(tmp_path / "t" / "recalls").user_ids.tolist() == list(range(60))  # the final: every user


@pytest.mark.parametrize("args, message", [
    (["--train", "T", "--dataset", "D"], "give --train .* or --dataset"),
    (["--train", "T", "--final"], "--final goes with --dataset"),
    (["--dataset", "D", "--final-users", "T"], "--final-users goes with --train"),
])
def test_tune_input_flags_are_one_line(tmp_path, cli, args, message):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"methods": {"ease": {}}}))
    res = cli("tune", "--space", space, *[str(tmp_path / a) if a in ("T", "D") else a for a in args],
              "-o", tmp_path / "o", expect=2)
    assert re.search(message, res.stderr) and res.stderr.count("\n") == 1


def test_trained_model_search_errors_are_one_line(tmp_path, cli):
    from helpers import retrieval_config

    (tmp_path / "tt.yaml").write_text(yaml.safe_dump(retrieval_config(tmp_path, tmp_path / "m")))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"models": {"tt": {"config": str(tmp_path / "tt.yaml"),
                                                       "params": {"model.loss.temprature": [0.1]}}}}))
    fits = r"models.tt.params.model.loss.temprature does not fit the config .*tt.yaml: model.*temprature: unknown key"
    with pytest.raises(UserError, match=fits):
        load_spec(space)
    space.write_text(yaml.safe_dump({"models": {"tt": {"config": str(tmp_path / "missing.yaml")}}}))
    with pytest.raises(UserError, match=r"models.tt.config: config .*missing.yaml: no such file"):
        load_spec(space)
    space.write_text(yaml.safe_dump({"models": {"als": {"config": str(tmp_path / "tt.yaml")}}}))
    with pytest.raises(UserError, match="the name of a classical method"):
        load_spec(space)
    space.write_text(yaml.safe_dump({"models": {"tt": {"config": str(tmp_path / "tt.yaml")}}}))
    write_lists(tmp_path / "train.parquet", [1], [[1, 2, 3, 4, 5]])
    res = cli("tune", "--space", space, "--train", tmp_path / "train.parquet", "-o", tmp_path / "o", expect=2)
    assert "a trained model needs --dataset" in res.stderr
