"""Built-in default data: realistic behaviour logs in the public raw formats.

``synth_tianchi`` writes the Tianchi mobile recommendation files and
``synth_userbehavior`` the Taobao UserBehavior CSV, from one generative model of
shoppers, calibrated on the published statistics of the real data and the real
samples in ``../shared/data``:

* behaviour mix browse >> cart > collect, buys about 1% of rows;
* Zipf category sizes and Zipf item popularity inside a category;
* each user has a few preferred categories (and a buy propensity);
* hour-of-day profile of the real sample, a Double-12 (2014-12-12) peak;
* ~70% empty user geohashes, item subset P with repeated items;
* a learnable purchase process: a user's interest in an item is a *thread* of
  views, maybe a collect and a cart, and maybe a buy. The buy probability rises
  with views, carts and collects and depends on the user, the item and the
  category; a buy follows a cart on the same or the next days (late-evening
  carts are bought the next day more often), so "carted on the last day" is a
  strong rule that a model seeing more signals can beat.

Outputs (``--dataset tianchi``)::

    DIR/offline/tianchi_fresh_comp_train_user.csv          CSV with header
         user_id,item_id,behavior_type,user_geohash,item_category,time (2014-12-06 02)
    DIR/offline/tianchi_fresh_comp_train_item.csv          item_id,item_geohash,item_category
    DIR/online/tianchi_fresh_comp_train_user_online_partA.txt   same columns, TSV, no header
    DIR/online/tianchi_fresh_comp_train_user_online_partB.txt
    DIR/online/tianchi_fresh_comp_train_item_online.txt
    DIR/truth/next_day_purchases.csv                        user_id,item_id bought on the day
                                                            after the log ends (item in P)

Outputs (``--dataset userbehavior``)::

    DIR/UserBehavior.csv    user_id,item_id,category_id,behavior_type(pv|buy|cart|fav),timestamp

Everything is deterministic in ``seed`` and the sizes; memory stays bounded
(users are generated in fixed-size blocks). Example::

    rectool synth --dataset tianchi --output data/raw --users 20000 \\
        --items 4758484 --categories 9557 --rows 23291027        # full Tianchi scale
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rectool import console
from rectool.artifacts import atomic_dir, write_meta
from rectool.errors import UserError

Dataset = Literal["tianchi", "userbehavior"]
Layout = Literal["offline", "online", "both"]

# hour-of-day profile of the real Tianchi sample (share of events per hour)
HOURLY = np.array([80, 40, 22, 14, 10, 12, 28, 38, 52, 49, 70, 87, 163, 111, 99, 101, 122, 138, 109, 165,
                   162, 147, 175, 98], dtype=np.float64)
HOURLY /= HOURLY.sum()
USERS_PER_BLOCK = 500
WARMUP_DAYS = 6
BEHAVIOR_NAMES = {1: "pv", 2: "fav", 3: "cart", 4: "buy"}
GEOHASH_ALPHABET = np.frombuffer(b"0123456789bcdefghjkmnpqrstuvwxyz", dtype=np.uint8)


@dataclass(frozen=True)
class SynthSpec:
    """Sizes and calendar of one generated log."""

    users: int
    items: int
    categories: int
    rows: int
    start: dt.date
    days: int
    seed: int = 2014
    p_share: float = 0.089          # share of items in the item subset P (422,858 / 4,758,484)
    double12: dt.date | None = dt.date(2014, 12, 12)
    buy_bias: float = 0.0           # added to every buy logit (calibration knob)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("users", "items", "categories", "rows", "days"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        if self.categories > self.items:
            raise UserError(f"--categories ({self.categories}) cannot exceed --items ({self.items})")
        if not 0.0 < self.p_share <= 1.0:
            raise UserError(f"--p-share must be in (0, 1] (got {self.p_share})")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """``n`` distinct random int64 ids in [low, high), in random order, without a huge buffer."""
    if high - low < n:
        raise UserError(f"cannot draw {n} distinct ids from [{low}, {high})")
    out = np.empty(0, dtype=np.int64)
    while out.size < n:
        out = np.unique(np.concatenate([out, rng.integers(low, high, size=int((n - out.size) * 1.1) + 16)]))
    return rng.permutation(out)[:n]


def _geohashes(rng: np.random.Generator, n: int, length: int = 7) -> np.ndarray:
    codes = GEOHASH_ALPHABET[rng.integers(0, GEOHASH_ALPHABET.size, size=(n, length))]
    return codes.view(f"S{length}").ravel().astype(str)


class World:
    """Items, categories and users: everything that does not depend on the block."""

    def __init__(self, spec: SynthSpec, id_style: Literal["tianchi", "userbehavior"]) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        n_cat, n_items = spec.categories, spec.items
        # categories: Zipf popularity; item counts grow sub-linearly with popularity
        cat_pop = 1.0 / np.arange(1, n_cat + 1) ** 0.95
        cat_pop = rng.permutation(cat_pop)
        self.cat_cdf = np.cumsum(cat_pop) / cat_pop.sum()
        share = cat_pop ** 0.75
        sizes = np.floor(share / share.sum() * (n_items - n_cat)).astype(np.int64) + 1
        sizes[np.argsort(-share)[: n_items - sizes.sum()]] += 1
        self.cat_size = sizes
        self.cat_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.cat_quality = rng.normal(0.0, 0.5, n_cat)
        # items laid out by category, most popular first inside a category
        self.item_cat = np.repeat(np.arange(n_cat), sizes)
        self.item_quality = rng.normal(0.0, 0.6, n_items)
        self.in_p = rng.random(n_items) < spec.p_share
        if id_style == "tianchi":
            self.item_ids = _unique_ids(rng, n_items, 1, 404_000_000)
            self.cat_ids = _unique_ids(rng, n_cat, 1, max(14_081, 2 * n_cat))
            self.user_ids = _unique_ids(rng, spec.users, 4_913, 142_450_000)
        else:
            self.item_ids = _unique_ids(rng, n_items, 1, max(5_163_071, 2 * n_items))
            self.cat_ids = _unique_ids(rng, n_cat, 1, max(5_162_430, 2 * n_cat))
            self.user_ids = np.sort(_unique_ids(rng, spec.users, 1, max(1_018_012, 2 * spec.users)))
        # users: activity, buy propensity, preferred categories, home geohash
        n_users = spec.users
        self.activity = rng.lognormal(0.0, 0.8, n_users)
        self.activity /= self.activity.mean()
        self.buy_propensity = rng.normal(0.0, 0.8, n_users)
        k_max = 8
        n_pref = np.minimum(1 + rng.poisson(2.0, n_users), k_max)
        self.pref_cat = np.searchsorted(self.cat_cdf, rng.random((n_users, k_max)), side="right")
        self.pref_cat = np.minimum(self.pref_cat, n_cat - 1)
        weights = rng.gamma(1.0, 1.0, (n_users, k_max)) * (np.arange(k_max) < n_pref[:, None])
        self.pref_cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
        self.has_geo = rng.random(n_users) < 0.45
        self.home_geo = _geohashes(rng, n_users, 5)
        # calendar
        self.days = spec.days
        # interests may start a few days before the log (no ramp-up) and up to the target day
        self.first_day = -WARMUP_DAYS
        self.day_weight = np.ones(spec.days + 1 + WARMUP_DAYS)
        self.double12 = -1
        if spec.double12 is not None:
            d12 = (spec.double12 - spec.start).days
            if 0 <= d12 <= spec.days:
                self.double12 = d12
                self.day_weight[d12 + WARMUP_DAYS] = 1.9
                if d12 >= 1:
                    self.day_weight[d12 - 1 + WARMUP_DAYS] = 1.15
        self.day_cdf = np.cumsum(self.day_weight) / self.day_weight.sum()
        self.threads_per_user = 1.0  # set by calibrate()

    def calibrate(self) -> None:
        """Choose threads per user so the log has about ``spec.rows`` rows (activity has mean 1)."""
        self.threads_per_user = 100.0
        pilot = np.arange(min(self.spec.users, 2000))
        ev = self.simulate(pilot, np.random.default_rng([self.spec.seed, 1]))
        rows_per_thread = max(ev["n_rows_in_log"], 1) / max(ev["n_threads"], 1)
        rows_per_pilot_user = rows_per_thread * 100.0 * self.activity[pilot].mean()
        self.threads_per_user = 100.0 * self.spec.rows / (self.spec.users * rows_per_pilot_user) \
            * self.activity[pilot].mean()

    def simulate(self, users: np.ndarray, rng: np.random.Generator) -> dict:
        """Events of the given users (indices): arrays of equal length plus counts."""
        spec = self.spec
        lam = self.activity[users] * self.threads_per_user
        n_thr = rng.poisson(lam)
        t_user = np.repeat(users, n_thr)
        n = t_user.size
        # category: a preferred one most of the time, else any by global popularity
        r = rng.random(n)
        k = (r[:, None] > self.pref_cdf[t_user]).sum(axis=1)
        cat = self.pref_cat[t_user, np.minimum(k, self.pref_cat.shape[1] - 1)]
        explore = rng.random(n) < 0.12
        cat[explore] = np.minimum(np.searchsorted(self.cat_cdf, rng.random(explore.sum()), side="right"),
                                  spec.categories - 1)
        size = self.cat_size[cat]
        rank = np.floor(np.exp(rng.random(n) * np.log(size + 1.0))).astype(np.int64) - 1
        item = self.cat_start[cat] + np.minimum(rank, size - 1)
        # when the interest starts, how many views, over how many days
        d0 = np.minimum(np.searchsorted(self.day_cdf, rng.random(n), side="right"), self.days + WARMUP_DAYS)
        d0 += self.first_day
        n_views = rng.geometric(0.34, n)
        span = rng.geometric(0.55, n) - 1
        # cart / collect / buy decisions
        b_u = self.buy_propensity[t_user]
        lv = np.log1p(n_views)
        cart = rng.random(n) < _sigmoid(-3.1 + 0.55 * lv + 0.35 * b_u + 0.3 * self.cat_quality[cat])
        collect = rng.random(n) < _sigmoid(-3.3 + 0.5 * lv)
        logit = (-5.4 + spec.buy_bias + 0.9 * b_u + self.item_quality[item] + self.cat_quality[cat]
                 + 0.55 * lv + 1.7 * cart + 0.6 * collect)
        logit += np.where(d0 == self.double12, 0.8, 0.0)
        buy = rng.random(n) < _sigmoid(logit)
        # view times: days in [d0, d0 + span], hours from the daily profile
        v_thread = np.repeat(np.arange(n), n_views)
        v_day = d0[v_thread] + np.floor(rng.random(v_thread.size) * (span[v_thread] + 1)).astype(np.int64)
        v_time = v_day * 24 + rng.choice(24, v_thread.size, p=HOURLY)
        last_view = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last_view, v_thread, v_time)
        first_view = np.full(n, 1 << 40, dtype=np.int64)
        np.minimum.at(first_view, v_thread, v_time)
        cart_time = last_view
        collect_time = first_view
        # buy time: after the cart, usually the same or the next day; late carts wait a day
        delay = np.empty(n, dtype=np.int64)
        late = (cart_time % 24) >= 18
        u = rng.random(n)
        delay[:] = np.searchsorted(np.cumsum([0.55, 0.30, 0.10, 0.05]), u, side="right")
        c_early = cart & ~late
        c_late = cart & late
        delay[c_early] = np.searchsorted(np.cumsum([0.32, 0.43, 0.13, 0.07, 0.05]), u[c_early], side="right")
        delay[c_late] = np.searchsorted(np.cumsum([0.12, 0.63, 0.13, 0.07, 0.05]), u[c_late], side="right")
        buy_day = last_view // 24 + delay
        if self.double12 >= 0:  # shoppers wait for the Double-12 sale
            wait = (buy_day < self.double12) & (buy_day >= self.double12 - 4) & (rng.random(n) < 0.5)
            buy_day[wait] = self.double12
        buy_time = np.maximum(buy_day * 24 + rng.choice(24, n, p=HOURLY), last_view)
        b_idx = np.flatnonzero(buy)
        echo = b_idx[rng.random(b_idx.size) < 0.6]  # the product page is opened right before a buy
        c_idx, f_idx = np.flatnonzero(cart), np.flatnonzero(collect)
        # assemble: behaviour 1 views (+ echo views), 2 collect, 3 cart, 4 buy
        thread = np.concatenate([v_thread, echo, f_idx, c_idx, b_idx])
        behavior = np.concatenate([np.full(v_thread.size + echo.size, 1), np.full(f_idx.size, 2),
                                   np.full(c_idx.size, 3), np.full(b_idx.size, 4)]).astype(np.int8)
        time = np.concatenate([v_time, buy_time[echo], collect_time[f_idx], cart_time[c_idx], buy_time[b_idx]])
        horizon = self.days * 24  # hours of the log; the day after it is the hidden target day
        in_log = (time < horizon) & (time >= 0)
        target = (behavior == 4) & (time >= horizon) & (time < horizon + 24)
        out = {
            "n_threads": n,
            "n_rows_in_log": int(in_log.sum()),
            "user": t_user[thread[in_log]],
            "item": item[thread[in_log]],
            "behavior": behavior[in_log],
            "hour": time[in_log],
            "target_user": t_user[thread[target]],
            "target_item": item[thread[target]],
        }
        order = np.lexsort((out["hour"], out["user"]))
        for key in ("user", "item", "behavior", "hour"):
            out[key] = out[key][order]
        return out


def _spec(dataset: Dataset, users: int, items: int, categories: int, rows: int, days: int, seed: int) -> SynthSpec:
    if dataset == "tianchi":
        return SynthSpec(users, items, categories, rows, dt.date(2014, 11, 18), days, seed)
    return SynthSpec(users, items, categories, rows, dt.date(2017, 11, 25), days, seed, double12=None)


# ----------------------------------------------------------------------------- writers


def _hour_dictionary(start: dt.date, days: int) -> pa.Array:
    return pa.array([f"{start + dt.timedelta(days=d)} {h:02d}" for d in range(days) for h in range(24)])


class _CsvSink:
    """A CSV/TSV file written in blocks, header by hand (pyarrow would quote it)."""

    def __init__(self, path: Path, header: list[str] | None, delimiter: str) -> None:
        self.path = path
        self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115 (closed in close())
        if header:
            self._fh.write((delimiter.join(header) + "\n").encode())
        self._opts = pacsv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none")
        self._writer: pacsv.CSVWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pacsv.CSVWriter(self._fh, table.schema, write_options=self._opts)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._fh.close()


def _tianchi_table(world: World, ev: dict, rng: np.random.Generator, hours: pa.Array) -> pa.Table:
    n = ev["user"].size
    users = ev["user"]
    geo_on = world.has_geo[users] & (rng.random(n) < 0.62)
    suffix = _geohashes(rng, n, 2)
    geo = np.char.add(world.home_geo[users], suffix)
    geo_arr = pa.array(np.where(geo_on, geo, ""))
    return pa.table({
        "user_id": world.user_ids[users],
        "item_id": world.item_ids[ev["item"]],
        "behavior_type": ev["behavior"],
        "user_geohash": geo_arr,
        "item_category": world.cat_ids[world.item_cat[ev["item"]]],
        "time": pa.DictionaryArray.from_arrays(pa.array(ev["hour"].astype(np.int32)), hours),
    })


def _item_subset_table(world: World, rng: np.random.Generator) -> pa.Table:
    """Item subset P: one row per item, some items repeated with several geohashes."""
    p_items = np.flatnonzero(world.in_p)
    repeats = np.ones(p_items.size, dtype=np.int64)
    heavy = rng.random(p_items.size) < 0.004
    repeats[heavy] += np.minimum(rng.zipf(1.4, heavy.sum()), 2000)
    rows = np.repeat(p_items, repeats)
    rows = rows[rng.permutation(rows.size)]
    geo = np.where(rng.random(rows.size) < 0.36, _geohashes(rng, rows.size, 6), "")
    return pa.table({
        "item_id": world.item_ids[rows],
        "item_geohash": pa.array(geo),
        "item_category": world.cat_ids[world.item_cat[rows]],
    })


def synth_tianchi(output: Path, users: int = 3000, items: int = 300_000, categories: int = 2000,
                  rows: int | None = None, days: int = 31, seed: int = 2014, layout: Layout = "both",
                  overwrite: bool = False) -> dict:
    """Write a Tianchi-format log; returns counts for the summary."""
    rows = rows if rows is not None else users * 1165  # the real data: 23.3M rows for 20k users
    spec = _spec("tianchi", users, items, categories, rows, days, seed)
    world = World(spec, "tianchi")
    world.calibrate()
    hours = _hour_dictionary(spec.start, spec.days + 1)
    header = ["user_id", "item_id", "behavior_type", "user_geohash", "item_category", "time"]
    n_blocks = math.ceil(users / USERS_PER_BLOCK)
    counts = {"rows": 0, "buys": 0, "target_pairs": 0}
    with atomic_dir(output, overwrite) as tmp:
        sinks: list[_CsvSink] = []
        offline = online_a = online_b = None
        if layout in ("offline", "both"):
            (tmp / "offline").mkdir()
            offline = _CsvSink(tmp / "offline" / "tianchi_fresh_comp_train_user.csv", header, ",")
            sinks.append(offline)
        if layout in ("online", "both"):
            (tmp / "online").mkdir()
            online_a = _CsvSink(tmp / "online" / "tianchi_fresh_comp_train_user_online_partA.txt", None, "\t")
            online_b = _CsvSink(tmp / "online" / "tianchi_fresh_comp_train_user_online_partB.txt", None, "\t")
            sinks += [online_a, online_b]
        target_u, target_i = [], []
        try:
            with console.progress("synth tianchi", total=n_blocks) as bar:
                for b in range(n_blocks):
                    rng = np.random.default_rng([seed, 2, b])
                    block = np.arange(b * USERS_PER_BLOCK, min((b + 1) * USERS_PER_BLOCK, users))
                    ev = world.simulate(block, rng)
                    table = _tianchi_table(world, ev, rng, hours)
                    if offline is not None:
                        offline.write(table)
                    if online_a is not None and online_b is not None:  # parts A/B: two halves of the users
                        in_a = pa.array(ev["user"] < users // 2 if users > 1 else ev["user"] >= 0)
                        online_a.write(table.filter(in_a))
                        online_b.write(table.filter(pc.invert(in_a)))
                    counts["rows"] += table.num_rows
                    counts["buys"] += int((ev["behavior"] == 4).sum())
                    target_u.append(ev["target_user"])
                    target_i.append(ev["target_item"])
                    bar.advance(1)
        finally:
            for s in sinks:
                s.close()
        rng = np.random.default_rng([seed, 3])
        p_table = _item_subset_table(world, rng)
        if offline is not None:
            s = _CsvSink(tmp / "offline" / "tianchi_fresh_comp_train_item.csv",
                         ["item_id", "item_geohash", "item_category"], ",")
            s.write(p_table)
            s.close()
        if online_a is not None:
            s = _CsvSink(tmp / "online" / "tianchi_fresh_comp_train_item_online.txt", None, "\t")
            s.write(p_table)
            s.close()
        # the hidden truth: pairs bought on the day after the log, item in P
        tu, ti = np.concatenate(target_u), np.concatenate(target_i)
        keep = world.in_p[ti]
        pairs = np.unique(np.stack([world.user_ids[tu[keep]], world.item_ids[ti[keep]]], axis=1), axis=0)
        (tmp / "truth").mkdir()
        s = _CsvSink(tmp / "truth" / "next_day_purchases.csv", ["user_id", "item_id"], ",")
        s.write(pa.table({"user_id": pairs[:, 0], "item_id": pairs[:, 1]}))
        s.close()
        counts["target_pairs"] = int(pairs.shape[0])
        counts["p_rows"] = p_table.num_rows
        counts["p_items"] = int(world.in_p.sum())
        target_day = spec.start + dt.timedelta(days=spec.days)
        write_meta(tmp, kind="raw-tianchi", rows=counts["rows"], dataset="tianchi", layout=layout,
                   spec={"users": users, "items": items, "categories": categories, "rows": rows, "days": days,
                         "seed": seed, "start": str(spec.start)},
                   first_day=str(spec.start), last_day=str(target_day - dt.timedelta(days=1)),
                   target_day=str(target_day), counts=counts)
    counts["first_day"], counts["target_day"] = str(spec.start), str(target_day)
    return counts


def synth_userbehavior(output: Path, users: int = 10_000, items: int = 100_000, categories: int = 1000,
                       rows: int | None = None, days: int = 9, seed: int = 2017, overwrite: bool = False) -> dict:
    """Write a Taobao UserBehavior-format log (sorted by user, then time)."""
    rows = rows if rows is not None else users * 101  # the real data: 100M rows for 988k users
    spec = _spec("userbehavior", users, items, categories, rows, days, seed)
    world = World(spec, "userbehavior")
    world.calibrate()
    t0 = int(dt.datetime(spec.start.year, spec.start.month, spec.start.day,
                         tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())
    names = pa.array([BEHAVIOR_NAMES[b] for b in (1, 2, 3, 4)])
    n_blocks = math.ceil(users / USERS_PER_BLOCK)
    counts = {"rows": 0, "buys": 0, "outside_window": 0}
    with atomic_dir(output, overwrite) as tmp:
        sink = _CsvSink(tmp / "UserBehavior.csv", None, ",")
        try:
            with console.progress("synth userbehavior", total=n_blocks) as bar:
                for b in range(n_blocks):
                    rng = np.random.default_rng([seed, 2, b])
                    block = np.arange(b * USERS_PER_BLOCK, min((b + 1) * USERS_PER_BLOCK, users))
                    ev = world.simulate(block, rng)
                    ts = t0 + ev["hour"] * 3600 + rng.integers(0, 3600, ev["hour"].size)
                    # as in the real file, a few timestamps fall outside the official window
                    odd = rng.random(ts.size) < 2e-4
                    ts[odd] += rng.choice([-86400 * 3, -86400, 86400 * (days + 1)], odd.sum())
                    counts["outside_window"] += int(odd.sum())
                    sink.write(pa.table({
                        "user_id": world.user_ids[ev["user"]],
                        "item_id": world.item_ids[ev["item"]],
                        "category_id": world.cat_ids[world.item_cat[ev["item"]]],
                        "behavior_type": pa.DictionaryArray.from_arrays(
                            pa.array((ev["behavior"] - 1).astype(np.int32)), names),
                        "timestamp": ts,
                    }))
                    counts["rows"] += ev["user"].size
                    counts["buys"] += int((ev["behavior"] == 4).sum())
                    bar.advance(1)
        finally:
            sink.close()
        write_meta(tmp, kind="raw-userbehavior", rows=counts["rows"], dataset="userbehavior",
                   spec={"users": users, "items": items, "categories": categories, "rows": rows, "days": days,
                         "seed": seed, "start": str(spec.start)}, counts=counts)
    return counts
