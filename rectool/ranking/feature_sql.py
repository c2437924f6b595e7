"""The SQL behind ``rectool features`` (column definitions are documented in ``features.py``).

Plan: a few cut-off independent *daily* tables are built once from the events; every
cut-off then aggregates them with plain sums, so no query of a cut-off touches the raw
log (except the last-N lists) or runs a DISTINCT aggregate.

============ =============================================== =====================================
table        one row per                                      used for
============ =============================================== =====================================
``uid``      (user, item, day) with behaviour counts and      user_item features; distinct items of
             last times, ``next_day`` = the pair's next day   a user / user x category, users of
                                                              an item; last-N lists
``ucd``      (user, category, day)                            user_category; categories of a user,
                                                              users of a category
``idd``      (item, day), items of P only with ``--items``    item features
``il``       item, with its last active day and actions per   items of a category, rank in category
             cut-off (every item)
``ud``/``cd`` (user, day) / (category, day)                   user / category counts, active days
``ugeo``     (user, geohash, day)                             distinct geohashes of a user
``igeo``     (item, geohash, day)                             distinct geohashes of an item
============ =============================================== =====================================

Times are kept as INTEGER minutes since 1970-01-01 (``m``): half the memory of timestamps,
which keeps the tables of a 23M-row log well inside the default 2 GB.

A *distinct count in a window* (e.g. items a user touched in the last 3 days) is the
number of rows that are the last active day before the cut-off of their (user, item)
combination, ``day < c AND (next_day IS NULL OR next_day >= c)``, and fall in the window.
Active days are rows of the daily table of the group in the window.

Example (cut-off 2014-12-18, window 3d): ``browse_3d = sum(n_browse) FILTER (WHERE day >=
$day_2014_12_15::DATE)`` over rows with ``day < $day_2014_12_18::DATE``; days are bound
parameters (``common.day_param``), so every statement runs as ``con.execute(sql, bound(sql))``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from rectool.duck import Events, day_param

BEHAVIORS = {1: "browse", 2: "collect", 3: "cart", 4: "buy"}
RATIOS = (("buy", "browse"), ("buy", "cart"), ("cart", "browse"))
NEVER_HOURS = 9999.0
TIMES = (*BEHAVIORS.values(), "any")


def suffix(window: int | None) -> str:
    return "all" if window is None else f"{window}d"


def _lit(day: dt.date) -> str:
    """A day in the SQL: a bound parameter (``common.day_param``); run statements with ``bound(sql)``."""
    return day_param(day)


def _next(keys: str) -> str:
    return f"lead(day) OVER (PARTITION BY {keys} ORDER BY day) AS next_day"


def _daily(keys: str, source: str, extra: str = "") -> str:
    """A coarser daily table: counts summed, last times maxed (``extra``: more SELECT items)."""
    sums = ", ".join(f"sum(n_{b})::INTEGER AS n_{b}" for b in BEHAVIORS.values())
    times = ", ".join(f"max(t_{b}) AS t_{b}" for b in TIMES)
    return f"SELECT {keys}, day, {extra}{sums}, {times} FROM {source} GROUP BY {keys}, day"


def minutes(day: dt.date) -> int:
    """Minutes from 1970-01-01 00:00 to the start of ``day`` (times are stored as such minutes)."""
    return (day - dt.date(1970, 1, 1)).days * 1440


def rollup_sql(events: Events, cutoffs: Sequence[dt.date], windows: Sequence[int | None],
               with_items: bool, source: str = "ev_files") -> list[str]:
    """Statements building the cut-off independent tables from events before the last cut-off
    (``source``: the view ``Events.view`` made over the events files)."""
    until = max(cutoffs)
    where = f"time < {_lit(until)}::TIMESTAMP"
    if events.hive:  # skip whole day files
        where += f" AND dt < {_lit(until)}"
    counts = ", ".join(f"count(*) FILTER (WHERE behavior = {k})::INTEGER AS n_{b}" for k, b in BEHAVIORS.items())
    times = ", ".join(f"max(m) FILTER (WHERE behavior = {k}) AS t_{b}" for k, b in BEHAVIORS.items())
    in_p = " AND item_id IN (SELECT item_id FROM p_items)" if with_items else ""
    # geohashes only ever counted: their 64-bit hashes group faster than the strings
    # the events before the last cut-off, as a subquery (a view could not hold the bound day)
    ev = (f"(SELECT user_id, item_id, category_id, behavior, geohash, time::DATE AS day, "
          f"(epoch_ms(time) // 60000)::INTEGER AS m FROM {source} WHERE {where}) AS ev")
    geo = "SELECT DISTINCT {key}, hash(geohash) AS geohash, day FROM {ev} WHERE geohash IS NOT NULL{extra}"
    # per item and cut-off: its last active day and its actions in the largest window (category
    # distinct items and ranks need every item, the item table only those of P)
    actions = " + ".join(f"n_{b}" for b in BEHAVIORS.values())
    largest = windows[-1]
    per_cut = ", ".join(
        f"max(day) FILTER (WHERE day < {_lit(c)}) AS last_{k}, "
        f"sum({actions}) FILTER (WHERE day < {_lit(c)}"
        + ("" if largest is None else f" AND day >= {_lit(c - dt.timedelta(days=largest))}") + f") AS act_{k}"
        for k, c in enumerate(cutoffs))
    return [
        f"""CREATE TEMP TABLE uid AS SELECT *, {_next('user_id, item_id')} FROM (
              SELECT user_id, item_id, any_value(category_id) AS category_id, day, {counts}, {times},
                max(m) AS t_any
              FROM {ev} GROUP BY user_id, item_id, day)""",
        f"CREATE TEMP TABLE ucd AS SELECT *, {_next('user_id, category_id')} FROM "
        f"({_daily('user_id, category_id', 'uid')})",
        f"CREATE TEMP TABLE idd AS SELECT *, {_next('item_id')} FROM "
        f"({_daily('item_id', f'uid WHERE TRUE{in_p}', 'any_value(category_id) AS category_id, ')})",
        f"CREATE TEMP TABLE il AS SELECT item_id, any_value(category_id) AS category_id, {per_cut} "
        "FROM uid GROUP BY item_id",
        f"CREATE TEMP TABLE ud AS {_daily('user_id', 'ucd')}",
        f"CREATE TEMP TABLE cd AS {_daily('category_id', 'ucd')}",
        f"CREATE TEMP TABLE ugeo AS SELECT *, {_next('user_id, geohash')} FROM "
        f"({geo.format(key='user_id', ev=ev, extra='')})",
        f"CREATE TEMP TABLE igeo AS SELECT *, {_next('item_id, geohash')} FROM "
        f"({geo.format(key='item_id', ev=ev, extra=in_p)})",
    ]


class CutoffSql:
    """The queries of one cut-off day."""

    def __init__(self, index: int, cutoff: dt.date, windows: Sequence[int | None], pair_days: int, last_n: int,
                 with_items: bool) -> None:
        self.k, self.cutoff, self.windows = index, cutoff, list(windows)
        self.pair_days, self.last_n, self.with_items = pair_days, last_n, with_items
        self.c = _lit(cutoff)
        self.last = _lit(cutoff - dt.timedelta(days=1))

    # --------------------------------------------------------------------- column lists

    def _start(self, w: int | None, column: str = "day") -> str:
        return "TRUE" if w is None else f"{column} >= {_lit(self.cutoff - dt.timedelta(days=w))}"

    def _aggregates(self) -> str:
        """Counts per behaviour x window, active days, last times, over a daily table."""
        cols = [f"coalesce(sum(n_{b}) FILTER (WHERE {self._start(w)}), 0)::INTEGER AS {b}_{suffix(w)}"
                for w in self.windows for b in BEHAVIORS.values()]
        cols += [f"count(*) FILTER (WHERE {self._start(w)})::INTEGER AS active_days_{suffix(w)}" for w in self.windows]
        cols += [f"max(t_{b}) AS t_{b}" for b in TIMES]
        return ", ".join(cols)

    def _finish(self) -> str:
        """Output columns shared by every group: counts, active days, ratios, hours since."""
        cols = [f"{b}_{suffix(w)}" for w in self.windows for b in BEHAVIORS.values()]
        cols += [f"active_days_{suffix(w)}" for w in self.windows]
        cols += [f"(CASE WHEN {d}_{suffix(w)} > 0 THEN {n}_{suffix(w)} / {d}_{suffix(w)} ELSE 0 END)::FLOAT "
                 f"AS {n}_per_{d}_{suffix(w)}" for w in self.windows for n, d in RATIOS]
        cols += [f"coalesce(($cutoff_minutes - t_{b}) / 60.0, {NEVER_HOURS})::FLOAT AS hours_since_{b}"
                 for b in TIMES]
        return ", ".join(cols)

    def _last_rows(self, table: str, extra: str = "") -> str:
        """The rows of ``table`` that are the last active day before the cut-off of their combination."""
        return f"(SELECT * FROM {table} WHERE day < {self.c} AND (next_day IS NULL OR next_day >= {self.c}){extra})"

    def _distinct(self, name: str, table: str, keys: str, extra: str = "") -> str:
        """Distinct ``name`` per window of ``keys``: last-before-cut-off rows of ``table`` in each window."""
        cols = ", ".join(f"count(*) FILTER (WHERE {self._start(w)})::INTEGER AS {name}_{suffix(w)}"
                         for w in self.windows)
        return f"(SELECT {keys}, {cols} FROM {self._last_rows(table, extra)} GROUP BY {keys})"

    def _items_from_il(self) -> str:
        """Distinct items per window from the item table ``il`` (last active day before this cut-off)."""
        return ", ".join(f"count(*) FILTER (WHERE {self._start(w, f'last_{self.k}')})::INTEGER "
                         f"AS items_{suffix(w)}" for w in self.windows)

    def _zero(self, name: str) -> str:
        return ", ".join(f"coalesce({name}_{suffix(w)}, 0)::INTEGER AS {name}_{suffix(w)}" for w in self.windows)

    def _cnb(self, keys: str) -> str:
        return f"(SELECT {keys}, sum(cnb)::INTEGER AS cnb FROM ui_recent GROUP BY {keys})"

    def _in_p(self, prefix: str = " AND ") -> str:
        return f"{prefix}item_id IN (SELECT item_id FROM p_items)" if self.with_items else ""

    # --------------------------------------------------------------------- statements

    def prepare(self) -> list[str]:
        """``ui_recent``: the pairs acted on in the last ``pair_days`` days (all items), with what the
        user-level aggregates and ranks need; ``ui_feat``: the full features of those of them that
        the user_item table keeps (items of P with ``--items``; then the heavy aggregate runs on
        about a tenth of the pairs)."""
        recent = (f"day >= {_lit(self.cutoff - dt.timedelta(days=self.pair_days))} AND day < {self.c} "
                  f"AND (next_day IS NULL OR next_day >= {self.c})")  # one row per recent pair
        actions = " + ".join(f"n_{b}" for b in BEHAVIORS.values())
        light = (f"sum({actions}) FILTER (WHERE {self._start(self.windows[-1])}) AS actions, max(t_any) AS t_any, "
                 f"max(t_buy) AS t_buy, max(t_cart) FILTER (WHERE day = {self.last}) AS t_cart_1d")
        heavy = f"{self._aggregates()}, sum({actions}) FILTER (WHERE {self._start(self.windows[-1])}) AS actions, " \
                f"max(t_cart) FILTER (WHERE day = {self.last}) AS t_cart_1d"
        cnb = "(t_cart_1d IS NOT NULL AND (t_buy IS NULL OR t_buy < t_cart_1d))::TINYINT AS cnb"

        def table(name: str, columns: str, pairs: str) -> str:
            return f"""CREATE OR REPLACE TEMP TABLE {name} AS SELECT *, {cnb}
                FROM (SELECT user_id, item_id, any_value(category_id) AS category_id, {columns}
                      FROM uid SEMI JOIN ({pairs}) USING (user_id, item_id)
                      WHERE day < {self.c} GROUP BY user_id, item_id)"""

        pairs = f"SELECT user_id, item_id FROM uid WHERE {recent}"
        if not self.with_items:
            return [table("ui_recent", heavy, pairs), "CREATE OR REPLACE TEMP VIEW ui_feat AS SELECT * FROM ui_recent"]
        return [table("ui_recent", light, pairs), table("ui_feat", heavy, f"{pairs}{self._in_p()}")]

    def output(self, group: str) -> str:
        """The SELECT writing one group table (its values besides the days: ``params``)."""
        return getattr(self, f"_{group}")()

    @property
    def params(self) -> dict[str, int]:
        """The named parameters of ``output`` other than the days: ``bound(sql, **q.params)``."""
        return {"last_n": self.last_n, "cutoff_minutes": minutes(self.cutoff)}

    def _user(self) -> str:
        # order by last action (minute precision), ties by the low 36 bits of item_id: one BIGINT key,
        # several times faster in max_by than a struct or HUGEINT key
        key = "t_any::BIGINT * 68719476736 + (item_id & 68719476735)"
        return f"""SELECT user_id, {self._finish()}, {self._zero('items')}, {self._zero('categories')},
              {self._zero('geohashes')}, coalesce(cnb, 0)::INTEGER AS carts_not_bought_1d,
              coalesce(last_items, []) AS last_items, coalesce(last_categories, []) AS last_categories
            FROM (SELECT user_id, {self._aggregates()} FROM ud WHERE day < {self.c} GROUP BY user_id)
            LEFT JOIN {self._distinct('items', 'uid', 'user_id')} USING (user_id)
            LEFT JOIN {self._distinct('categories', 'ucd', 'user_id')} USING (user_id)
            LEFT JOIN {self._distinct('geohashes', 'ugeo', 'user_id')} USING (user_id)
            LEFT JOIN {self._cnb('user_id')} USING (user_id)
            LEFT JOIN (SELECT user_id, list_reverse(max_by(item_id, {key}, $last_n)) AS last_items,
                         list_reverse(max_by(category_id, {key}, $last_n)) AS last_categories
                       FROM {self._last_rows('uid')} GROUP BY user_id) USING (user_id)"""

    def _item(self) -> str:
        return f"""SELECT item_id, category_id, {self._finish()}, {self._zero('users')}, {self._zero('geohashes')},
              coalesce(cnb, 0)::INTEGER AS carts_not_bought_1d, rank_in_category
            FROM (SELECT item_id, any_value(category_id) AS category_id, {self._aggregates()}
                  FROM idd WHERE day < {self.c}{self._in_p()} GROUP BY item_id)
            LEFT JOIN {self._distinct('users', 'uid', 'item_id', self._in_p())} USING (item_id)
            LEFT JOIN {self._distinct('geohashes', 'igeo', 'item_id')} USING (item_id)
            LEFT JOIN {self._cnb('item_id')} USING (item_id)
            LEFT JOIN (SELECT item_id, rank() OVER (PARTITION BY category_id ORDER BY coalesce(act_{self.k}, 0) DESC)
                         ::INTEGER AS rank_in_category
                       FROM il WHERE last_{self.k} IS NOT NULL) USING (item_id)"""

    def _category(self) -> str:
        return f"""SELECT category_id, {self._finish()}, {self._zero('users')}, {self._zero('items')},
              coalesce(cnb, 0)::INTEGER AS carts_not_bought_1d
            FROM (SELECT category_id, {self._aggregates()} FROM cd WHERE day < {self.c} GROUP BY category_id)
            LEFT JOIN {self._distinct('users', 'ucd', 'category_id')} USING (category_id)
            LEFT JOIN (SELECT category_id, {self._items_from_il()} FROM il WHERE last_{self.k} IS NOT NULL
                       GROUP BY category_id) USING (category_id)
            LEFT JOIN {self._cnb('category_id')} USING (category_id)"""

    def _user_item(self) -> str:
        return f"""SELECT user_id, item_id, category_id, {self._finish()}, cnb AS cart_not_bought_1d,
              coalesce((t_cart_1d % 1440) // 60, -1)::TINYINT AS cart_hour_1d, rank_in_user, recency_rank_in_user
            FROM ui_feat
            JOIN (SELECT user_id, item_id,
                    rank() OVER (PARTITION BY user_id ORDER BY actions DESC)::INTEGER AS rank_in_user,
                    rank() OVER (PARTITION BY user_id ORDER BY t_any DESC)::INTEGER AS recency_rank_in_user
                  FROM ui_recent) USING (user_id, item_id)"""

    def _user_category(self) -> str:
        recent = f"day >= {_lit(self.cutoff - dt.timedelta(days=self.pair_days))} AND day < {self.c}"
        return f"""SELECT user_id, category_id, {self._finish()}, {self._zero('items')},
              coalesce(cnb, 0)::INTEGER AS carts_not_bought_1d
            FROM (SELECT user_id, category_id, {self._aggregates()}
                  FROM ucd SEMI JOIN (SELECT user_id, category_id FROM ucd WHERE {recent}) USING (user_id, category_id)
                  WHERE day < {self.c} GROUP BY user_id, category_id)
            LEFT JOIN {self._distinct('items', 'uid', 'user_id, category_id')} USING (user_id, category_id)
            LEFT JOIN {self._cnb('user_id, category_id')} USING (user_id, category_id)"""
