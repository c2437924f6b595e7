"""Next-item protocols on a tiny hand-made log: splits, halves by time, no test user in training."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from rectool.artifacts import open_dataset, write_meta
from rectool.errors import UserError
from rectool.retrieval.sequences import build_next_item


def _events(path, rows):
    """rows: (user, item, day, behavior)."""
    path.mkdir(parents=True)
    t = pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.int64()), "item_id": pa.array([r[1] for r in rows], pa.int64()),
        "category_id": pa.array([r[1] // 10 for r in rows], pa.int64()),
        "behavior": pa.array([r[3] if len(r) > 3 else 1 for r in rows], pa.int8()),
        "time": pa.array([dt.datetime(2017, 11, 25) + dt.timedelta(hours=r[2]) for r in rows], pa.timestamp("ms")),
    })
    import pyarrow.parquet as pq

    pq.write_table(t, path / "part-0.parquet")
    write_meta(path, kind="events", rows=t.num_rows)
    return path


def _read(path):
    return {r["user_id"]: r for r in open_dataset(path).to_table().to_pylist()}


@pytest.fixture
def log(tmp_path):
    rows = []
    for u in range(1, 13):  # 12 users with 6 behaviours each, item = 100*u + step, out of time order on disk
        rows += [(u, 100 * u + k, 10 - k) for k in range(6)]
    rows.append((99, 5, 1))  # a user with too few behaviours
    return _events(tmp_path / "ev", rows)


def test_user_split_halves_by_time_and_disjoint_users(log, tmp_path):
    out = tmp_path / "ds"
    counts = build_next_item(str(log), out, protocol="user-split", min_behaviors=4, n_test=3, n_valid=2,
                             max_history=2, seed=7)
    assert counts["test_users"] == 3 and counts["valid_users"] == 2 and counts["train_users"] == 7
    train_users = {r["user_id"] for r in open_dataset(out / "train").to_table().to_pylist()}
    test = _read(out / "test" / "inputs")
    truth = _read(out / "test" / "truth")
    valid = _read(out / "valid" / "inputs")
    assert not train_users & set(test) and not train_users & set(valid) and not set(test) & set(valid)
    assert 99 not in train_users | set(test) | set(valid)
    for u, row in test.items():
        ordered = [100 * u + k for k in range(5, -1, -1)]  # by time: k = 5 first
        assert row["hist_item_ids"] == ordered[1:3], "last max_history of the first half, most recent last"
        assert sorted(row["seen_item_ids"]) == sorted(ordered[:3])
        assert sorted(truth[u]["item_ids"]) == sorted(ordered[3:])
    # every position after the first is a target; history is the previous (at most 2) items
    samples = [r for r in open_dataset(out / "train").to_table().to_pylist() if r["user_id"] == min(train_users)]
    u = min(train_users)
    ordered = [100 * u + k for k in range(5, -1, -1)]
    assert [s["item_id"] for s in sorted(samples, key=lambda s: ordered.index(s["item_id"]))] == ordered[1:]
    last = next(s for s in samples if s["item_id"] == ordered[-1])
    assert last["hist_item_ids"] == ordered[-3:-1] and last["hist_category_ids"] == [i // 10 for i in ordered[-3:-1]]


def test_leave_one_out(log, tmp_path):
    out = tmp_path / "loo"
    build_next_item(str(log), out, protocol="leave-one-out", min_behaviors=4, n_valid=1, max_history=10)
    truth, valid_truth = _read(out / "test" / "truth"), _read(out / "valid" / "truth")
    inputs = _read(out / "test" / "inputs")
    u = 3
    ordered = [100 * u + k for k in range(5, -1, -1)]
    assert truth[u]["item_ids"] == [ordered[-1]] and valid_truth[u]["item_ids"] == [ordered[-2]]
    assert inputs[u]["hist_item_ids"] == ordered[:-1]
    train_targets = {r["item_id"] for r in open_dataset(out / "train").to_table().to_pylist() if r["user_id"] == u}
    assert train_targets == set(ordered[1:-2]), "neither held-out item is a training target"


def test_given_split_and_exclusion_by_behaviour(tmp_path):
    train = _events(tmp_path / "tr", [(1, 10, 0, 3), (1, 11, 1, 4), (1, 12, 2, 3), (2, 20, 0, 4), (2, 21, 1, 4)])
    test = _events(tmp_path / "te", [(1, 13, 5, 4), (1, 10, 6, 4), (3, 30, 1, 4)])
    counts = build_next_item(str(train), tmp_path / "g", protocol="given", test_events=str(test),
                             exclude_behaviors=[4])
    assert counts["test_users"] == 1 and counts["test_users_without_history"] == 1
    inputs = _read(tmp_path / "g" / "test" / "inputs")
    assert inputs[1]["seen_item_ids"] == [11], "only the user's buys are excluded"
    assert sorted(_read(tmp_path / "g" / "test" / "truth")[1]["item_ids"]) == [10, 13]


def test_set_targets_pair_each_item_with_the_users_other_items(log, tmp_path):
    """Lines that are item sets: every item is a target once, its history other items of the same user."""
    out = tmp_path / "set"
    counts = build_next_item(str(log), out, protocol="leave-one-out", min_behaviors=4, n_valid=0, max_history=3,
                             targets="set", seed=5)
    samples = open_dataset(out / "train").to_table().to_pylist()
    train = {r["user_id"]: r["item_ids"] for r in open_dataset(out / "train_sequences").to_table().to_pylist()}
    assert counts["train_samples"] == sum(len(items) for items in train.values()) == len(samples)
    by_user: dict[int, list] = {}
    for r in samples:
        by_user.setdefault(r["user_id"], []).append(r)
    for u, rows in by_user.items():
        assert sorted(r["item_id"] for r in rows) == sorted(train[u]), "every item is a target once"
        for r in rows:
            assert len(r["hist_item_ids"]) == min(3, len(train[u]) - 1)
            assert r["item_id"] not in r["hist_item_ids"] and set(r["hist_item_ids"]) <= set(train[u])
            assert r["hist_category_ids"] == [i // 10 for i in r["hist_item_ids"]]
        # the histories differ between targets: not one fixed subset of the user's items
        assert len({tuple(sorted(r["hist_item_ids"])) for r in rows}) > 1
    again = build_next_item(str(log), tmp_path / "again", protocol="leave-one-out", min_behaviors=4, n_valid=0,
                            max_history=3, targets="set", seed=5)
    assert again == {**counts, "output": str(tmp_path / "again")}
    assert open_dataset(tmp_path / "again" / "train").to_table().sort_by(
        [("user_id", "ascending"), ("item_id", "ascending")]).equals(open_dataset(out / "train").to_table().sort_by(
            [("user_id", "ascending"), ("item_id", "ascending")])), "deterministic in the seed"


def test_set_targets_over_behaviours(tmp_path):
    """Buy ∪ cart: an (item, behaviour) is one event; buys as the only targets, their histories
    holding the other events -- a bought item's own cart included, never the buy itself."""
    carts = _events(tmp_path / "cart", [(1, 10, 0, 3), (1, 11, 0, 3), (1, 11, 0, 3), (2, 20, 0, 3), (2, 21, 0, 3)])
    buys = _events(tmp_path / "buy", [(1, 10, 1, 4), (1, 12, 1, 4), (2, 20, 1, 4)])
    test = _events(tmp_path / "te", [(1, 13, 5, 4), (2, 22, 5, 4)])
    build_next_item([str(carts), str(buys)], tmp_path / "all", protocol="given", test_events=str(test),
                    targets="set", exclude_behaviors=[4])
    samples = open_dataset(tmp_path / "all" / "train").to_table().to_pylist()
    # the cart of 11 listed twice is one event; 10 and 20, carted and bought, are two each
    assert sorted((r["user_id"], r["item_id"]) for r in samples) == \
        [(1, 10), (1, 10), (1, 11), (1, 12), (2, 20), (2, 20), (2, 21)]
    build_next_item([str(carts), str(buys)], tmp_path / "buys", protocol="given", test_events=str(test),
                    targets="set", exclude_behaviors=[4], target_behaviors=[4])
    samples = open_dataset(tmp_path / "buys" / "train").to_table().to_pylist()
    assert {(r["user_id"], r["item_id"]): sorted(r["hist_item_ids"]) for r in samples} == \
        {(1, 10): [10, 11, 12], (1, 12): [10, 10, 11], (2, 20): [20, 21]}
    assert sorted(_read(tmp_path / "buys" / "test" / "inputs")[1]["seen_item_ids"]) == [10, 12], "buys only"
    # without the target in its history: the buy of 10 no longer sees its own cart
    build_next_item([str(carts), str(buys)], tmp_path / "new", protocol="given", test_events=str(test),
                    targets="set", exclude_behaviors=[4], target_behaviors=[4], target_in_history=False)
    samples = open_dataset(tmp_path / "new" / "train").to_table().to_pylist()
    assert {(r["user_id"], r["item_id"]): sorted(r["hist_item_ids"]) for r in samples} == \
        {(1, 10): [11, 12], (1, 12): [10, 10, 11], (2, 20): [21]}
    assert all(r["hist_category_ids"] == [i // 10 for i in r["hist_item_ids"]] for r in samples), "pairs kept"
    assert json.loads((tmp_path / "new" / "_meta.json").read_text())["params"]["target_in_history"] is False
    with pytest.raises(UserError, match="--target-behaviors works with --targets all or set"):
        build_next_item([str(carts), str(buys)], tmp_path / "x", protocol="given", test_events=str(test),
                        targets="last", target_behaviors=[4])


def test_sequential_targets_of_one_behaviour(tmp_path):
    ev = _events(tmp_path / "ev", [(1, 10, 0, 3), (1, 10, 1, 4), (1, 11, 2, 1), (1, 12, 3, 4), (1, 13, 4, 1)])
    build_next_item(str(ev), tmp_path / "s", protocol="leave-one-out", min_behaviors=2, n_valid=0,
                    target_behaviors=[4])
    samples = open_dataset(tmp_path / "s" / "train").to_table().to_pylist()
    assert [(r["item_id"], r["hist_item_ids"]) for r in sorted(samples, key=lambda r: len(r["hist_item_ids"]))] \
        == [(10, [10]), (12, [10, 10, 11])]
    # the target's own item out of its history: the buy of 10 (history: its cart) has none left and is dropped
    build_next_item(str(ev), tmp_path / "n", protocol="leave-one-out", min_behaviors=2, n_valid=0,
                    target_behaviors=[4], target_in_history=False)
    samples = open_dataset(tmp_path / "n" / "train").to_table().to_pylist()
    assert [(r["item_id"], r["hist_item_ids"]) for r in samples] == [(12, [10, 10, 11])]


def test_cli_joins_repeated_events(tmp_path, cli):
    """`--events` twice (buys and carts) reads both; ranking datasets take exactly one."""
    carts = _events(tmp_path / "cart", [(1, 10, 0, 3), (1, 11, 0, 3)])
    buys = _events(tmp_path / "buy", [(1, 12, 1, 4)])
    test = _events(tmp_path / "te", [(1, 13, 5, 4)])
    cli("dataset", "--task", "next-item", "--protocol", "given", "--events", buys, "--events", carts,
        "--test-events", test, "--min-behaviors", "1", "--exclude-behaviors", "4", "-o", tmp_path / "s")
    inputs = _read(tmp_path / "s" / "test" / "inputs")[1]
    assert sorted(inputs["hist_item_ids"]) == [10, 11, 12] and inputs["seen_item_ids"] == [12]
    # --no-target-in-history: the buy of 12 without its own cart
    carted = _events(tmp_path / "cart2", [(1, 10, 0, 3), (1, 12, 0, 3)])
    cli("dataset", "--task", "next-item", "--protocol", "given", "--events", buys, "--events", carted,
        "--test-events", test, "--min-behaviors", "1", "--targets", "set", "--target-behaviors", "4",
        "--no-target-in-history", "-o", tmp_path / "n")
    rows = open_dataset(tmp_path / "n" / "train").to_table().to_pylist()
    assert [(r["item_id"], r["hist_item_ids"]) for r in rows] == [(12, [10])]
    res = cli("dataset", "--events", buys, "--events", carts, "--features", buys, "-o", tmp_path / "r", expect=2)
    assert "--events given 2 times" in res.stderr and not (tmp_path / "r").exists()


def test_cli_refuses_the_other_tasks_flags(tmp_path, cli):
    """A flag that only the other --task reads is an error, not silently ignored."""
    buys = _events(tmp_path / "buy", [(1, 12, 1, 4)])
    res = cli("dataset", "--events", buys, "--features", buys, "--no-target-in-history", "-o", tmp_path / "r",
              expect=2)
    assert "--target-in-history/--no-target-in-history is for --task next-item" in res.stderr
    res = cli("dataset", "--task", "next-item", "--events", buys, "--neg-ratio", "3", "-o", tmp_path / "n", expect=2)
    assert "--neg-ratio is for --task ranking" in res.stderr
    res = cli("dataset", "--task", "next-item", "--events", buys, "--features", buys, "-o", tmp_path / "n", expect=2)
    assert "--features is for --task ranking" in res.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "n").exists()


def test_bad_arguments(log, tmp_path):
    with pytest.raises(UserError, match="--test-events is required"):
        build_next_item(str(log), tmp_path / "x", protocol="given")
    with pytest.raises(UserError, match="users have >= 4 behaviours"):
        build_next_item(str(log), tmp_path / "x", min_behaviors=4, n_test=10, n_valid=5)
    with pytest.raises(UserError, match="no such file"):
        build_next_item(str(tmp_path / "nope"), tmp_path / "x")
    with pytest.raises(UserError, match="choose all, last or set"):
        build_next_item(str(log), tmp_path / "x", targets="shuffle")
