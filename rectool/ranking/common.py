"""Shared plumbing of the ranking stages: days, the events input, the item subset P, DuckDB.

``parse_days("2014-12-17,2014-12-18", "--label-days")`` -> ``[date(2014,12,17), date(2014,12,18)]``
``open_events(path)`` checks an events dataset (kind, columns) and returns its parquet files;
``Events.view(con)`` makes them the DuckDB view ``ev_files`` (with the ``dt`` partition).
``read_item_subset(path, flag)`` reads P from a converted items dataset or from the raw
Tianchi item file (CSV with header or TSV without) and returns distinct ``item_id`` int64.
``duck_session(threads, memory_limit, temp_dir, inputs)`` opens an in-memory DuckDB with those
limits and a spill directory that is removed afterwards; a corrupt file of ``inputs`` found by
a query is a one-line error naming it (``rectool.badinput``).

Values reach DuckDB only as bound parameters, never pasted into SQL text: paths go in as
Python lists (``read_parquet($files)``, or a view made from a relation), days as
``day_param(day)`` (``$day_2014_12_18::DATE``); ``bound(sql, **values)`` gives a statement
the parameters it names::

    sql = f"SELECT count(*) FROM ev_files WHERE dt < {day_param(day)} AND behavior = $behavior"
    con.execute(sql, bound(sql, behavior=4))
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rectool.artifacts import check_kind, expand_paths, open_dataset, require_columns
from rectool.badinput import Inputs, quote, read_table, reading
from rectool.errors import UserError

EVENT_COLUMNS = ("user_id", "item_id", "category_id", "behavior", "time")
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def parse_day(text: str, flag: str) -> dt.date:
    """``"2014-12-18"`` -> ``date(2014, 12, 18)``; a one-line error naming the flag otherwise."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"{flag} {text!r}: not a day; write it as YYYY-MM-DD, e.g. 2014-12-18") from None


def parse_days(text: str, flag: str) -> list[dt.date]:
    """A comma-separated list of days, sorted and deduplicated."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise UserError(f"{flag}: no day given; write days as YYYY-MM-DD separated by commas")
    return sorted({parse_day(p, flag) for p in parts})


_DAY_PARAM = re.compile(r"\$day_(\d{4})_(\d{2})_(\d{2})\b")
_NAMED_PARAM = re.compile(r"\$([A-Za-z_]\w*)")
MAX_DAYS = 36_500  # a span of days beyond this (a century) is a typo, and would leave the calendar


def day_param(day: dt.date) -> str:
    """A day in SQL text as a bound parameter, ``$day_2014_12_18::DATE`` (``bound`` gives its value)."""
    return f"$day_{day:%Y_%m_%d}::DATE"


def bound(sql: str, **values: object) -> dict[str, object]:
    """The named parameters ``sql`` uses: the days written by ``day_param``, and ``values`` (DuckDB
    refuses a parameter the statement does not use, so only those it names are passed)."""
    days = {f"day_{y}_{m}_{d}": dt.date(int(y), int(m), int(d)) for y, m, d in _DAY_PARAM.findall(sql)}
    return {name: days[name] if name in days else values[name] for name in set(_NAMED_PARAM.findall(sql))}


def days_before(day: dt.date, days: int, flag: str) -> dt.date:
    """``day`` minus ``days``; a span no calendar holds is a one-line error naming ``flag``."""
    try:
        return day - dt.timedelta(days=days)
    except OverflowError:
        raise UserError(f"{flag} {days}: {days} days before {day} is outside the calendar; give fewer days") from None


@dataclass(frozen=True)
class Events:
    """An events dataset as DuckDB reads it."""

    path: str
    files: list[str]
    first_day: dt.date
    last_day: dt.date
    flag: str = "--events"

    @property
    def hive(self) -> bool:
        """Whether every file sits in a ``dt=YYYY-MM-DD`` folder (as ``convert`` writes them)."""
        return all("/dt=" in f.replace(os.sep, "/") for f in self.files)

    @property
    def inputs(self) -> tuple[str, list[str]]:
        """``(label, files)`` for ``duck_session(inputs=...)``: a corrupt file is named in one line."""
        return f"{self.flag} {self.path}", self.files

    def view(self, con: Any, name: str = "ev_files") -> str:
        """Create the view ``name`` over the files (with their ``dt`` partition when there is one);
        the paths go to DuckDB as a list, not as SQL text. Returns ``name``."""
        con.read_parquet(self.files, hive_partitioning=self.hive).create_view(name)
        return name


def open_events(path: str | os.PathLike[str], flag: str = "--events") -> Events:
    """Check an events dataset written by ``convert`` and find its day range."""
    text = os.fspath(path)
    if text == "-":
        raise UserError(f"{flag} -: events must be a directory or files on disk (DuckDB reads them out of core)")
    check_kind(text, "events", flag)
    ds = open_dataset(text, flag)
    require_columns(ds.schema, EVENT_COLUMNS, text, "give the events dataset written by `rectool convert`")
    if not pa.types.is_timestamp(ds.schema.field("time").type):
        raise UserError(f"{flag} {text}: column time is {ds.schema.field('time').type}, expected a timestamp; "
                        "convert the log with `rectool convert`")
    files = [os.path.abspath(f) for f in ds.files]  # type: ignore[attr-defined]
    con = quiet_duckdb()
    try:
        with reading((f"{flag} {text}", files)):
            first, last = con.execute("SELECT min(time)::DATE, max(time)::DATE FROM read_parquet($files)",
                                      {"files": files}).fetchall()[0]
    finally:
        con.close()
    if first is None:
        raise UserError(f"{flag} {text}: holds no events; convert a non-empty log")
    return Events(text, files, first, last, flag)


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


def quiet_duckdb(**config: object) -> Any:
    """A DuckDB connection without its own progress bar (stderr belongs to rectool.console)."""
    import duckdb

    con = duckdb.connect(config=config)
    con.execute("SET enable_progress_bar = false").fetchall()
    return con


def check_memory_limit(text: str) -> str:
    if not _MEMORY.match(text):
        raise UserError(f"--memory-limit {text!r}: write an amount such as 4GB or 512MB")
    return text.replace(" ", "")


def _sweep_spills(base: Path | None) -> None:
    """Spill folders of DuckDB sessions whose process was killed (their pid is in the name)."""
    for folder in Path(base if base is not None else tempfile.gettempdir()).glob("rectool-duckdb-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def duck_session(threads: int | None = None, memory_limit: str = "2GB",
                 temp_dir: str | os.PathLike[str] | None = None, inputs: Inputs = ()) -> Iterator[Any]:
    """An in-memory DuckDB limited to ``threads`` and ``memory_limit`` that spills to a private
    folder under ``temp_dir`` (removed on exit, also on errors). A query that fails on a truncated
    or corrupt file of ``inputs`` (``(label, files)`` pairs) is a one-line error naming the file."""
    import duckdb

    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    limit = check_memory_limit(memory_limit)
    base = Path(temp_dir) if temp_dir is not None else None
    if base is not None:
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--temp-dir {base}: cannot create it ({exc.strerror})") from exc
    _sweep_spills(base)
    spill = Path(tempfile.mkdtemp(prefix=f"rectool-duckdb-{os.getpid()}-", dir=base))
    con = quiet_duckdb(memory_limit=limit, temp_directory=str(spill), preserve_insertion_order=False,
                       **({"threads": threads} if threads else {}))
    try:
        with reading(*inputs):
            yield con
    except duckdb.OutOfMemoryException as exc:
        raise UserError(f"DuckDB ran out of memory within --memory-limit {limit} ({str(exc).splitlines()[0]}); "
                        "raise --memory-limit or lower --threads") from exc
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
