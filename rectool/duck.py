"""DuckDB for both pipelines: one session, one events reader, values as bound parameters.

``rectool features`` / ``dataset --task ranking`` and ``dataset --task next-item`` read events
datasets written by ``rectool convert`` with the same two functions, so ``--threads``,
``--memory-limit`` and ``--temp-dir`` mean the same everywhere:

``open_events(paths, flag, columns)`` checks one or more events datasets (kind, the ``columns``
asked for; with ``time`` among them also its type and the day range) and returns ``Events``;
``Events.view(con)`` makes its files the DuckDB view ``ev_files`` (with the ``dt`` partition)::

    ev = open_events("data/events")                     # ranking: every EVENT_COLUMN, the days
    ev.first_day, ev.last_day                           # date(2014, 11, 18), date(2014, 12, 18)
    both = open_events(["tb_buy", "tb_cart"], columns=("user_id", "item_id"))   # next-item: ids only

``duck_session(threads, memory_limit, temp_dir, inputs, beside=output)`` opens an in-memory DuckDB
with those limits and a private spill folder (under ``temp_dir``, else beside the output) that is
removed afterwards; running out of memory is a one-line error, and so is a corrupt file of
``inputs`` found by a query (``rectool.badinput``).

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from rectool.artifacts import check_kind, open_dataset, require_columns
from rectool.badinput import Inputs, reading
from rectool.errors import UserError
from rectool.scratch import scratch_dir
from rectool.tablefile import format_of

EVENT_COLUMNS = ("user_id", "item_id", "category_id", "behavior", "time")
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
_DAY_PARAM = re.compile(r"\$day_(\d{4})_(\d{2})_(\d{2})\b")
_NAMED_PARAM = re.compile(r"\$([A-Za-z_]\w*)")


# ----------------------------------------------------------------------------- bound parameters


def day_param(day: dt.date) -> str:
    """A day in SQL text as a bound parameter, ``$day_2014_12_18::DATE`` (``bound`` gives its value)."""
    return f"$day_{day:%Y_%m_%d}::DATE"


def bound(sql: str, **values: object) -> dict[str, object]:
    """The named parameters ``sql`` uses: the days written by ``day_param``, and ``values`` (DuckDB
    refuses a parameter the statement does not use, so only those it names are passed)."""
    days = {f"day_{y}_{m}_{d}": dt.date(int(y), int(m), int(d)) for y, m, d in _DAY_PARAM.findall(sql)}
    return {name: days[name] if name in days else values[name] for name in set(_NAMED_PARAM.findall(sql))}


# ----------------------------------------------------------------------------- the events reader


@dataclass(frozen=True)
class Events:
    """One or more events datasets (next-item may join several: buy + cart) as DuckDB reads them."""

    datasets: tuple[str, ...]               # the paths as given
    files: list[str]
    columns: tuple[str, ...]                # the columns every dataset has
    days: tuple[dt.date, dt.date] | None = None  # first and last day, when ``time`` was asked for
    flag: str = "--events"

    @property
    def path(self) -> str:
        return ", ".join(self.datasets)

    @property
    def first_day(self) -> dt.date:
        assert self.days is not None, "open_events(..., columns with 'time') finds the days"
        return self.days[0]

    @property
    def last_day(self) -> dt.date:
        assert self.days is not None, "open_events(..., columns with 'time') finds the days"
        return self.days[1]

    @property
    def hive(self) -> bool:
        """Whether every file sits in a ``dt=YYYY-MM-DD`` folder (as ``convert`` writes them)."""
        return all("/dt=" in f.replace(os.sep, "/") for f in self.files)

    @property
    def inputs(self) -> tuple[str, list[str]]:
        """``(label, files)`` for ``duck_session(inputs=...)``: a corrupt file is named in one line."""
        return f"{self.flag} {self.path}", self.files

    def view(self, con: Any, name: str = "ev_files") -> str:
        """Create the view ``name`` over the files (with their ``dt`` partition when there is one;
        several datasets matched by column name); the paths go to DuckDB as a list, not as SQL
        text. Returns ``name``."""
        con.read_parquet(self.files, hive_partitioning=self.hive,
                         union_by_name=len(self.datasets) > 1).create_view(name)
        return name


def open_events(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], flag: str = "--events",
                columns: Sequence[str] = EVENT_COLUMNS) -> Events:
    """Check events datasets written by ``convert`` for ``columns``; with ``time`` among them, check
    it is a timestamp and find the day range (a read of every file: a corrupt one is named)."""
    specs = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    if not specs:
        raise UserError(f"{flag}: give an events dataset written by `rectool convert`")
    files: list[str] = []
    common: list[str] | None = None
    for text in specs:
        if text == "-":
            raise UserError(f"{flag} -: events must be a directory or files on disk (DuckDB reads them out of core)")
        check_kind(text, "events", flag)
        ds = open_dataset(text, flag)
        orc_files = [f for f in ds.files if format_of(f) == "orc"]  # type: ignore[attr-defined]
        if orc_files:  # DuckDB scans parquet out of core; ORC goes through convert once
            raise UserError(f"{flag} {orc_files[0]}: events are read as parquet; turn the ORC table into events "
                            "with `rectool convert --format generic --schema COLUMNS.yaml` first")
        require_columns(ds.schema, columns, f"{flag} {text}", "give the events dataset written by `rectool convert`")
        if "time" in columns and not pa.types.is_timestamp(ds.schema.field("time").type):
            raise UserError(f"{flag} {text}: column time is {ds.schema.field('time').type}, expected a timestamp; "
                            "convert the log with `rectool convert`")
        files += [os.path.abspath(f) for f in ds.files]  # type: ignore[attr-defined]
        common = ds.schema.names if common is None else [c for c in common if c in ds.schema.names]
    events = Events(tuple(specs), files, tuple(common or ()), flag=flag)
    if "time" not in columns:
        return events
    con = quiet_duckdb()
    try:
        with reading(events.inputs):
            first, last = con.execute("SELECT min(time)::DATE, max(time)::DATE FROM read_parquet($files)",
                                      {"files": files}).fetchall()[0]
    finally:
        con.close()
    if first is None:
        raise UserError(f"{flag} {events.path}: holds no events; convert a non-empty log")
    return Events(events.datasets, files, events.columns, (first, last), flag)


# ----------------------------------------------------------------------------- the session


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


@contextlib.contextmanager
def duck_session(threads: int | None = None, memory_limit: str = "2GB",
                 temp_dir: str | os.PathLike[str] | None = None, inputs: Inputs = (),
                 beside: str | os.PathLike[str] | None = None) -> Iterator[Any]:
    """An in-memory DuckDB limited to ``threads`` and ``memory_limit`` that spills to a private
    folder under ``temp_dir`` (default: the folder of ``beside``, the output; else the system's
    temp folder), removed on exit, also on errors. A query that fails on a truncated or corrupt
    file of ``inputs`` (``(label, files)`` pairs) is a one-line error naming the file."""
    import duckdb

    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    limit = check_memory_limit(memory_limit)
    if temp_dir is None and beside is not None:
        temp_dir = Path(os.fspath(beside)).parent
    base = Path(temp_dir) if temp_dir is not None else None
    if base is not None:
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--temp-dir {base}: cannot create it ({exc.strerror})") from exc
    # spill folders of sessions whose process was killed go here too
    spill = scratch_dir(base if base is not None else Path(tempfile.gettempdir()), "rectool-duckdb")
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
