"""``rectool synth``: exact public layouts, determinism, realistic statistics."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter

import pytest

from rectool.ingest.synth import synth_tianchi, synth_userbehavior

OFFLINE_USER = "offline/tianchi_fresh_comp_train_user.csv"


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tianchi_layouts_are_exact(tiny_tianchi):
    offline = tiny_tianchi / OFFLINE_USER
    with open(offline) as fh:
        header = fh.readline().strip()
        first = fh.readline().strip().split(",")
    assert header == "user_id,item_id,behavior_type,user_geohash,item_category,time"
    assert len(first) == 6 and first[2] in "1234" and len(first[5]) == len("2014-12-06 02")
    part_a = (tiny_tianchi / "online/tianchi_fresh_comp_train_user_online_partA.txt").read_text().splitlines()
    part_b = (tiny_tianchi / "online/tianchi_fresh_comp_train_user_online_partB.txt").read_text().splitlines()
    assert part_a and part_b and all(len(line.split("\t")) == 6 for line in part_a[:100])
    assert not part_a[0].startswith("user_id")
    users_a = {line.split("\t")[0] for line in part_a}
    users_b = {line.split("\t")[0] for line in part_b}
    assert not users_a & users_b, "parts A and B split the users"
    offline_rows = offline.read_text().splitlines()[1:]
    assert sorted(offline_rows) == sorted(line.replace("\t", ",") for line in part_a + part_b)
    items = (tiny_tianchi / "offline/tianchi_fresh_comp_train_item.csv").read_text().splitlines()
    assert items[0] == "item_id,item_geohash,item_category"
    online_items = (tiny_tianchi / "online/tianchi_fresh_comp_train_item_online.txt").read_text().splitlines()
    assert len(online_items) == len(items) - 1


def test_tianchi_statistics_are_realistic(tmp_path):
    out = tmp_path / "t"
    counts = synth_tianchi(out, users=1500, items=150_000, categories=1500, seed=3, layout="offline")
    rows = list(csv.DictReader(open(out / OFFLINE_USER)))
    assert abs(len(rows) - 1500 * 1165) / (1500 * 1165) < 0.05
    mix = Counter(r["behavior_type"] for r in rows)
    share = {k: v / len(rows) for k, v in mix.items()}
    assert share["1"] > 0.9 and share["3"] > share["4"] and 0.004 < share["4"] < 0.02
    assert 0.6 < sum(1 for r in rows if not r["user_geohash"]) / len(rows) < 0.85
    per_day = Counter(r["time"][:10] for r in rows)
    assert per_day["2014-12-12"] > 1.4 * per_day["2014-12-05"], "Double-12 peak"
    hours = Counter(int(r["time"][11:]) for r in rows)
    assert hours[21] > 3 * hours[4], "evening peak, night trough"
    p_rows = list(csv.DictReader(open(out / "offline/tianchi_fresh_comp_train_item.csv")))
    assert len({r["item_id"] for r in p_rows}) < len(p_rows), "items repeat in P"
    # next-day purchase pairs: ~500 a day at 20k users
    assert 15 <= counts["target_pairs"] <= 80


def test_synth_is_deterministic(tmp_path):
    a = synth_tianchi(tmp_path / "a", users=120, items=5000, categories=50, seed=11, layout="offline")
    b = synth_tianchi(tmp_path / "b", users=120, items=5000, categories=50, seed=11, layout="offline")
    synth_tianchi(tmp_path / "c", users=120, items=5000, categories=50, seed=12, layout="offline")
    assert a == b
    assert _digest(tmp_path / "a" / OFFLINE_USER) == _digest(tmp_path / "b" / OFFLINE_USER)
    assert _digest(tmp_path / "a" / OFFLINE_USER) != _digest(tmp_path / "c" / OFFLINE_USER)


def test_userbehavior_layout(tmp_path):
    synth_userbehavior(tmp_path / "ub", users=300, items=5000, categories=40, seed=1)
    lines = (tmp_path / "ub" / "UserBehavior.csv").read_text().splitlines()
    fields = [line.split(",") for line in lines]
    assert all(len(f) == 5 for f in fields)
    assert {f[3] for f in fields} == {"pv", "fav", "cart", "buy"}
    keys = [(int(f[0]), int(f[4])) for f in fields]
    in_window = [k for k in keys if 1511539200 <= k[1] < 1512316800]
    assert len(in_window) / len(keys) > 0.99
    assert [k[0] for k in keys] == sorted(k[0] for k in keys), "sorted by user"


def test_bad_sizes_are_user_errors(cli):
    res = cli("synth", "--output", "/tmp/never-written", "--users", "0", expect=2)
    assert "'--users'" in res.stderr  # the option's range refuses it before any work
    res = cli("synth", "--output", "/tmp/never-written", "--dataset", "movielens", expect=2)
    assert "choose tianchi or userbehavior" in res.stderr


@pytest.mark.parametrize("layout", ["offline", "online"])
def test_single_layout(tmp_path, layout):
    synth_tianchi(tmp_path / "x", users=50, items=2000, categories=20, layout=layout)
    other = ({"offline", "online"} - {layout}).pop()
    assert (tmp_path / "x" / layout).is_dir() and not (tmp_path / "x" / other).exists()
