"""``rectool features``: behaviour features per cut-off day, in DuckDB SQL, out of core.

Inputs
    An events dataset (``rectool convert``), optionally the item subset P (``--items``),
    one or more cut-off days. Features of cut-off ``c`` use only events with
    ``time < c 00:00`` (strictly before the cut-off day); a window of ``w`` days covers
    the days ``c-w .. c-1``, ``all`` the whole history before ``c``.

Outputs
    One table per group, hive-partitioned by cut-off (joined later by ``dataset``)::

        OUT/user/cutoff=2014-12-18/part-00000.parquet            key user_id
        OUT/item/cutoff=.../                                      key item_id (+ category_id)
        OUT/category/cutoff=.../                                  key category_id
        OUT/user_item/cutoff=.../                                 key user_id, item_id (+ category_id)
        OUT/user_category/cutoff=.../                             key user_id, category_id

    Every group has, per window ``W`` in ``1d 3d 7d all``: ``browse_W collect_W cart_W buy_W``
    (int32 counts), ``active_days_W`` (int32), ``buy_per_browse_W buy_per_cart_W
    cart_per_browse_W`` (float32, 0 when the denominator is 0); and ``hours_since_browse
    .._collect .._cart .._buy .._any`` (float32 hours from the last such action to the
    cut-off, ``NEVER_HOURS`` = 9999 when there is none). Per group also:

    ============= =========================================================================
    user          items_W, categories_W, geohashes_W (distinct counts), carts_not_bought_1d
                  (items carted on the last day and not bought since), last_items,
                  last_categories (list<int64>: the last ``--last-n`` distinct items by their
                  last action, most recent last, and their categories)
    item          users_W, geohashes_W, carts_not_bought_1d, rank_in_category (int32, 1 = the
                  most actions in the largest window among all items of its category)
    category      users_W, items_W, carts_not_bought_1d
    user_item     cart_not_bought_1d (int8: carted on the last day, no buy at or after that
                  cart), cart_hour_1d (int8 hour of the last cart on the last day, -1 if none),
                  rank_in_user, recency_rank_in_user (int32: rank among the user's recent
                  pairs by actions in the largest window / by last action; 1 = first)
    user_category items_W, carts_not_bought_1d
    ============= =========================================================================

    With ``--items``, the item and user_item tables hold only items of P (ranks in a
    category are still among all items). The user_item and user_category tables hold
    the *recent* pairs, with an action in the last ``--pair-days`` days (default: the
    largest finite window); their ``all`` features still cover the whole history.
    ``_meta.json`` (kind ``features``) lists cut-offs, windows, pair_days, the keys and
    the columns of every group.

How
    One pass over the events builds daily rollups (``feature_sql``); every cut-off then
    aggregates them with plain sums. DuckDB spills to ``--temp-dir`` beyond
    ``--memory-limit``, so the log may be larger than memory.

Example::

    rectool features --events data/events --items data/items \\
        --cutoffs 2014-12-17,2014-12-18,2014-12-19 --output data/features
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence

import pyarrow.parquet as pq

from rectool import console
from rectool.artifacts import atomic_dir, schema_summary, write_meta
from rectool.duck import Events, bound, duck_session, open_events
from rectool.errors import UserError
from rectool.faults import fault_point
from rectool.ranking.common import MAX_DAYS, read_item_subset
from rectool.ranking.feature_sql import NEVER_HOURS, CutoffSql, rollup_sql, suffix

GROUPS = {  # group -> key columns (the join keys used by ``dataset``)
    "user": ("user_id",),
    "item": ("item_id",),
    "category": ("category_id",),
    "user_item": ("user_id", "item_id"),
    "user_category": ("user_id", "category_id"),
}
PREFIX = {"user": "u_", "item": "i_", "category": "c_", "user_item": "ui_", "user_category": "uc_"}
DEFAULT_WINDOWS: tuple[int | None, ...] = (1, 3, 7, None)


def window(text: str) -> int | None:
    """One item of ``--windows`` (``rectool.cli.options.parse_list`` splits them): ``"7"`` -> 7 days,
    ``"all"`` -> None (all history); anything else, or a number of days outside 1-``MAX_DAYS``, is a
    one-line error."""
    part = text.strip().lower()
    if part == "all":
        return None
    if part.isdigit() and 0 < int(part) <= MAX_DAYS:
        return int(part)
    raise UserError(f"--windows: {text!r} is neither a number of days (1-{MAX_DAYS}) nor 'all'")


def windows_in_order(windows: Iterable[int | None]) -> list[int | None]:
    """``[None, 7, 1, 3, 7]`` -> ``[1, 3, 7, None]``: distinct, finite ones ascending, all history last."""
    given = list(windows)
    if not given:
        raise UserError("--windows: give at least one window, e.g. 1,3,7,all")
    finite = sorted({w for w in given if w is not None})
    return [*finite, *([None] if None in given else [])]


def parse_windows(text: str) -> list[int | None]:
    """``"1,3,7,all"`` -> ``[1, 3, 7, None]``, for Python callers. The CLI splits ``--windows`` once,
    with ``rectool.cli.options.parse_list`` and ``window``; ``build_features`` puts them in order."""
    return windows_in_order(window(part) for part in text.split(",") if part.strip())


def fill_value(column: str) -> float:
    """What ``dataset`` puts where a candidate has no row in a group table."""
    if "hours_since_" in column:
        return NEVER_HOURS
    if column.endswith("cart_hour_1d"):
        return -1.0
    return 0.0


# ----------------------------------------------------------------------------- entry point


def default_cutoffs(events: Events) -> list[dt.date]:
    """The last two days of the log (label days) and the day after it (the target day)."""
    last = events.last_day
    days = [last - dt.timedelta(days=1), last, last + dt.timedelta(days=1)]
    return [d for d in days if d > events.first_day]


def build_features(events: str | os.PathLike[str], output: str | os.PathLike[str],
                   cutoffs: Sequence[dt.date] | None = None, items: str | os.PathLike[str] | None = None,
                   windows: Sequence[int | None] = DEFAULT_WINDOWS, pair_days: int | None = None, last_n: int = 50,
                   threads: int | None = None, memory_limit: str = "2GB",
                   temp_dir: str | os.PathLike[str] | None = None, overwrite: bool = False) -> dict:
    """Write the feature tables of every cut-off; returns the summary figures."""
    ev = open_events(events)
    cuts = sorted(set(cutoffs)) if cutoffs else default_cutoffs(ev)
    if not cuts:
        raise UserError(f"--events {events}: the log covers one day only ({ev.first_day}); features need "
                        "events before a cut-off")
    for c in cuts:
        if c <= ev.first_day:
            raise UserError(f"--cutoffs {c}: no events before it (the log starts {ev.first_day}); choose a later day")
        if c > ev.last_day + dt.timedelta(days=1):
            console.warn(f"cut-off {c} is more than a day after the log ends ({ev.last_day}): recent windows are empty")
    windows = windows_in_order(windows)
    finite = [w for w in windows if w is not None]
    pair_days = pair_days if pair_days is not None else (max(finite) if finite else 7)
    if not 1 <= pair_days <= MAX_DAYS:
        raise UserError(f"--pair-days {pair_days}: give 1 to {MAX_DAYS} days")
    if last_n < 1:
        raise UserError(f"--last-n {last_n}: give at least 1")
    p_items = read_item_subset(items, "--items") if items is not None else None
    rows: dict[str, dict[str, int]] = {g: {} for g in GROUPS}
    schemas: dict[str, dict[str, str]] = {}
    with console.Stopwatch() as sw, atomic_dir(output, overwrite) as tmp, \
            duck_session(threads, memory_limit, temp_dir, inputs=[ev.inputs], beside=output) as con, \
            console.progress("features", total=1 + len(cuts) * (1 + len(GROUPS))) as bar:
        if p_items is not None:
            import pyarrow as pa

            con.register("p_items_arrow", pa.table({"item_id": p_items}))
            con.execute("CREATE TEMP TABLE p_items AS SELECT DISTINCT item_id FROM p_items_arrow").fetchall()
        for stmt in rollup_sql(ev, cuts, windows, p_items is not None, source=ev.view(con)):
            con.execute(stmt, bound(stmt)).fetchall()
        bar.advance(1)
        for k, c in enumerate(cuts):
            q = CutoffSql(k, c, windows, pair_days, last_n, p_items is not None)
            bar.update(info=str(c))
            for stmt in q.prepare():
                con.execute(stmt, bound(stmt)).fetchall()
            bar.advance(1)
            for group in GROUPS:
                folder = tmp / group / f"cutoff={c.isoformat()}"
                folder.mkdir(parents=True)
                path = folder / "part-00000.parquet"
                copy = f"COPY ({q.output(group)}) TO $path (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 262144)"
                con.execute(copy, bound(copy, path=str(path), **q.params)).fetchall()
                rows[group][c.isoformat()] = pq.ParquetFile(path).metadata.num_rows
                schemas.setdefault(group, schema_summary(pq.read_schema(path)))
                bar.advance(1)
            fault_point("features.cutoff")
        write_meta(tmp, kind="features", inputs=[os.fspath(events)] + ([os.fspath(items)] if items else []),
                   rows=rows, schema=None, cutoffs=[c.isoformat() for c in cuts],
                   windows=[suffix(w) for w in windows], pair_days=pair_days, last_n=last_n,
                   items=os.fspath(items) if items else None, keys={g: list(k) for g, k in GROUPS.items()},
                   groups=schemas, events_first_day=ev.first_day.isoformat(),
                   events_last_day=ev.last_day.isoformat())
    return {"output": os.fspath(output), "cutoffs": ", ".join(c.isoformat() for c in cuts),
            "windows": ", ".join(suffix(w) for w in windows), "pair_days": pair_days,
            **{f"rows {g}": sum(r.values()) for g, r in rows.items()},
            "columns": sum(len(s) for s in schemas.values()), "seconds": round(sw.seconds, 2)}
