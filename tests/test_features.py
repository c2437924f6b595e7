"""``rectool features``: values on a hand-computed log, no leakage past the cut-off, bad inputs."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from helpers import HAND_ROWS as ROWS
from helpers import tianchi_events
from rectool.artifacts import open_dataset, read_meta
from rectool.errors import UserError
from rectool.ranking.feature_sql import NEVER_HOURS
from rectool.ranking.features import GROUPS, build_features, parse_windows

CUT = dt.date(2014, 12, 18)


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hand")
    events, _ = tianchi_events(folder, ROWS)
    build_features(events, folder / "feat", cutoffs=[CUT], threads=1, memory_limit="500MB")
    return folder


def _rows(folder, group, cutoff=CUT):
    t = open_dataset(folder / "feat" / group / f"cutoff={cutoff}").to_table()
    keys = GROUPS[group]
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in t.to_pylist()}


def test_user_item_values(hand):
    ui = _rows(hand, "user_item")
    assert set(ui) == {(1, 10), (1, 11), (1, 12), (2, 10), (2, 13)}, "(2, 14) is older than --pair-days 7"
    a = ui[(1, 10)]
    assert (a["browse_1d"], a["browse_3d"], a["browse_7d"], a["browse_all"]) == (0, 1, 1, 2)
    assert (a["cart_1d"], a["cart_all"], a["buy_all"]) == (1, 1, 0), "the buy on the cut-off day is not counted"
    assert (a["active_days_1d"], a["active_days_3d"], a["active_days_7d"], a["active_days_all"]) == (1, 2, 2, 3)
    assert a["hours_since_browse"] == 39.0 and a["hours_since_cart"] == 4.0 and a["hours_since_any"] == 4.0
    assert a["hours_since_buy"] == NEVER_HOURS and a["hours_since_collect"] == NEVER_HOURS
    assert a["cart_not_bought_1d"] == 1 and a["cart_hour_1d"] == 20
    assert a["cart_per_browse_all"] == pytest.approx(0.5) and a["buy_per_browse_all"] == 0.0
    assert a["buy_per_cart_1d"] == 0.0 and a["category_id"] == 100
    b = ui[(2, 10)]
    assert b["cart_not_bought_1d"] == 0 and b["cart_hour_1d"] == 10 and b["buy_per_cart_all"] == 1.0
    assert ui[(2, 13)]["cart_not_bought_1d"] == 1 and ui[(2, 13)]["cart_hour_1d"] == 22
    assert ui[(1, 11)]["cart_hour_1d"] == -1
    # ranks among the user's recent items: by actions (3, 2, 1), by last action (12-17 20h, 09h, 12-12)
    assert [ui[(1, i)]["rank_in_user"] for i in (10, 11, 12)] == [1, 2, 3]
    assert [ui[(1, i)]["recency_rank_in_user"] for i in (10, 11, 12)] == [1, 2, 3]


def test_user_values(hand):
    u = _rows(hand, "user")
    one = u[1]
    assert (one["browse_all"], one["collect_all"], one["cart_all"], one["buy_all"]) == (3, 1, 1, 1)
    assert (one["items_1d"], one["items_3d"], one["items_7d"], one["items_all"]) == (2, 2, 3, 3)
    assert (one["categories_1d"], one["categories_all"]) == (1, 2)
    assert (one["geohashes_3d"], one["geohashes_all"]) == (1, 2)
    assert (one["active_days_7d"], one["active_days_all"]) == (3, 4)
    assert one["carts_not_bought_1d"] == 1
    assert one["last_items"] == [12, 11, 10] and one["last_categories"] == [200, 100, 100], "most recent last"
    assert u[2]["carts_not_bought_1d"] == 1 and u[2]["last_items"] == [14, 10, 13]
    assert u[2]["hours_since_buy"] == 13.0


def test_item_category_and_user_category_values(hand):
    i = _rows(hand, "item")
    assert (i[10]["users_1d"], i[10]["users_3d"], i[10]["users_all"]) == (2, 2, 2)
    assert (i[10]["browse_all"], i[10]["cart_1d"], i[10]["buy_all"]) == (3, 2, 1)
    assert i[10]["carts_not_bought_1d"] == 1 and i[10]["geohashes_all"] == 2
    assert (i[10]["rank_in_category"], i[11]["rank_in_category"]) == (1, 2)
    c = _rows(hand, "category")
    assert (c[100]["users_all"], c[100]["items_all"], c[100]["items_1d"]) == (2, 2, 2)
    assert (c[200]["users_1d"], c[200]["users_7d"], c[200]["carts_not_bought_1d"]) == (1, 2, 1)
    uc = _rows(hand, "user_category")
    assert set(uc) == {(1, 100), (1, 200), (2, 100), (2, 200)}
    assert uc[(1, 100)]["items_all"] == 2 and uc[(1, 100)]["carts_not_bought_1d"] == 1
    assert uc[(1, 200)]["collect_7d"] == 1 and uc[(1, 200)]["collect_3d"] == 0


def test_meta_and_layout(hand):
    meta = read_meta(hand / "feat")
    assert meta["kind"] == "features" and meta["cutoffs"] == ["2014-12-18"] and meta["pair_days"] == 7
    assert meta["windows"] == ["1d", "3d", "7d", "all"]
    assert meta["rows"]["user"] == {"2014-12-18": 2}
    assert meta["groups"]["user"]["last_items"].startswith("list")
    for group in GROUPS:
        assert (hand / "feat" / group / "cutoff=2014-12-18" / "part-00000.parquet").is_file()


def test_no_leakage_past_the_cutoff(tiny_tianchi, tmp_path):
    """Features of a cut-off are identical whether or not the log goes on after it."""
    from rectool.ingest.convert import convert

    convert([tiny_tianchi / "offline/tianchi_fresh_comp_train_user.csv"], tmp_path / "full")
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    cut = dt.date(2014, 12, 10)
    for part in (tmp_path / "cut").glob("dt=*"):
        if part.name >= f"dt={cut}":
            shutil.rmtree(part)
    build_features(tmp_path / "full", tmp_path / "f_full", cutoffs=[cut], threads=2, memory_limit="1GB")
    build_features(tmp_path / "cut", tmp_path / "f_cut", cutoffs=[cut], threads=2, memory_limit="1GB")
    for group, keys in GROUPS.items():
        a, b = (open_dataset(tmp_path / f / group).to_table() for f in ("f_full", "f_cut"))
        order = [(k, "ascending") for k in keys]
        assert a.num_rows == b.num_rows > 0
        assert a.sort_by(order).equals(b.sort_by(order)), f"{group} features see events after the cut-off"


def test_items_restrict_item_tables(tmp_path):
    events, items = tianchi_events(tmp_path, ROWS, items=["10,,100", "13,,200", "10,xyz,100"])
    build_features(events, tmp_path / "feat", cutoffs=[CUT], items=items, threads=1)
    assert set(_rows(tmp_path, "item")) == {10, 13}
    assert set(_rows(tmp_path, "user_item")) == {(1, 10), (2, 10), (2, 13)}
    assert _rows(tmp_path, "user")[1]["items_all"] == 3, "user features still use every item"
    assert read_meta(tmp_path / "feat")["items"] == str(items)


def test_cli_features_and_default_cutoffs(hand, cli):
    res = cli("features", "--events", hand / "events", "-o", hand / "f_cli", "--windows", "2,all", "--last-n", "2",
              "--pair-days", "30", "--threads", "1", "--memory-limit", "256MB", "--temp-dir", hand / "spill", "-q")
    assert res.stdout.strip() == str(hand / "f_cli")
    meta = read_meta(hand / "f_cli")
    assert meta["cutoffs"] == ["2014-12-17", "2014-12-18", "2014-12-19"], "last two days and the day after"
    t = open_dataset(hand / "f_cli" / "user" / "cutoff=2014-12-19").to_table()
    assert "browse_2d" in t.column_names and "browse_1d" not in t.column_names
    assert max(len(x) for x in t["last_items"].to_pylist()) == 2
    ui = open_dataset(hand / "f_cli" / "user_item" / "cutoff=2014-12-19").to_table()
    assert 14 in ui["item_id"].to_pylist(), "--pair-days 30 keeps the old pair"
    assert not list((hand / "spill").glob("rectool-duckdb-*")), "the spill folder is removed"


@pytest.mark.parametrize("args, message", [
    (["--cutoffs", "2014-13-01"], "--cutoffs '2014-13-01': not a day"),
    (["--cutoffs", "2014-11-01"], "no events before it"),
    (["--windows", "1,week"], "'week' is neither"),
    (["--memory-limit", "lots"], "--memory-limit 'lots'"),
    (["--threads", "0"], "'--threads'"),  # refused by the option's range, before any work
])
def test_bad_flags_are_one_line(hand, cli, args, message):
    res = cli("features", "--events", hand / "events", "-o", hand / "bad", *args, expect=2)
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (hand / "bad").exists()


def test_wrong_inputs(hand, tmp_path, cli):
    res = cli("features", "--events", hand / "feat", "-o", tmp_path / "x", expect=2)
    assert "'features' artifact, expected 'events'" in res.stderr
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user_id": [1], "item_id": [2]}), tmp_path / "ev.parquet")
    res = cli("features", "--events", tmp_path / "ev.parquet", "-o", tmp_path / "x", expect=2)
    assert "missing column(s) category_id, behavior, time" in res.stderr
    with pytest.raises(UserError, match="--items .*no such file"):
        build_features(hand / "events", tmp_path / "y", items=tmp_path / "nope")


def test_parse_windows():
    assert parse_windows("all,7,1,3") == [1, 3, 7, None]
    assert parse_windows("3") == [3]
