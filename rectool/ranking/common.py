"""Shared plumbing of the ranking stages: days and the item subset P.

``parse_day("2014-12-18", "--label-days")`` -> ``date(2014, 12, 18)`` (the item parser of the day
list options: ``rectool.cli`` splits them); ``days_before(day, n, flag)`` refuses a span no
calendar holds. ``read_item_subset(path, flag)`` reads P from a converted items dataset or from
the raw Tianchi item file (CSV with header or TSV without) and returns distinct ``item_id`` int64.

The DuckDB session, the events reader and the bound parameters (``bound``, ``day_param``,
re-exported here) are shared with the next-item pipeline: ``rectool.duck``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rectool.artifacts import check_kind, expand_paths, open_dataset, require_columns
from rectool.badinput import quote, read_table
from rectool.duck import bound, day_param
from rectool.errors import UserError

__all__ = ["MAX_DAYS", "bound", "day_param", "days_before", "parse_day", "read_item_subset"]
MAX_DAYS = 36_500  # a span of days beyond this (a century) is a typo, and would leave the calendar


def parse_day(text: str, flag: str) -> dt.date:
    """``"2014-12-18"`` -> ``date(2014, 12, 18)``; a one-line error naming the flag otherwise."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"{flag} {text!r}: not a day; write it as YYYY-MM-DD, e.g. 2014-12-18") from None


def days_before(day: dt.date, days: int, flag: str) -> dt.date:
    """``day`` minus ``days``; a span no calendar holds is a one-line error naming ``flag``."""
    try:
        return day - dt.timedelta(days=days)
    except OverflowError:
        raise UserError(f"{flag} {days}: {days} days before {day} is outside the calendar; give fewer days") from None


def read_item_subset(path: str | os.PathLike[str], flag: str) -> pa.Array:
    """Distinct item ids of P, from an items dataset (parquet) or the raw item file (CSV/TSV)."""
    text = os.fspath(path)
    found = expand_paths(text, flag)
    raw = [p for p in found if p.is_file() and p.suffix.lower() in (".csv", ".txt", ".tsv")]
    if raw:
        ids = pa.chunked_array([_raw_item_ids(p, flag) for p in raw], pa.int64())
    else:
        check_kind(text, "items", flag)
        ds = open_dataset(text, flag)
        require_columns(ds.schema, ["item_id"], text, "give the items dataset written by `rectool convert "
                                                      "--format tianchi-item` or the raw item file")
        ids = read_table(ds, f"{flag} {text}", columns=["item_id"]).column("item_id")
        if not pa.types.is_integer(ids.type):
            raise UserError(f"{flag} {text}: item_id is {ids.type}, expected int64 ids")
        ids = ids.cast(pa.int64())
    unique = pc.unique(ids.combine_chunks().drop_null())
    if len(unique) == 0:
        raise UserError(f"{flag} {text}: the item subset is empty; give the item file P")
    return unique


def _raw_item_ids(path: Path, flag: str) -> pa.Array:
    """First column of a raw Tianchi item file, header detected."""
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8-sig", errors="replace").strip()  # -sig: a byte order mark is no name
    delimiter = "\t" if "\t" in first else ","
    head = first.split(delimiter)[0].strip()
    has_header = not head.lstrip("-").isdigit()
    if has_header and head.lower() != "item_id":
        raise UserError(f"{flag} {path}: first column is {quote(head)}, expected item_id (the item file P, "
                        "item_id,item_geohash,item_category)")
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(skip_rows=1 if has_header else 0, autogenerate_column_names=True),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(include_columns=["f0"], column_types={"f0": pa.int64()}),
        )
    except pa.ArrowInvalid as exc:
        raise UserError(f"{flag} {path}: item ids are not all integers ({str(exc).splitlines()[0]})") from exc
    return table.column("f0").combine_chunks()
