"""``rectool convert``: raw CSV/TSV logs (plain or gzip), ORC or parquet to parquet, streaming.

Inputs
    One or more files or globs in one of the layouts of ``rectool.ingest.formats``
    (the online Tianchi parts A and B are simply two inputs). The delimiter and
    the header line are detected per file when the format leaves them open.
    ``.orc`` and ``.parquet`` files (or directories of them) are read by column name
    (``rectool.ingest.columnar``): the format's raw names are the source columns.

Outputs
    ``events``: a dataset hive-partitioned by day, ``OUT/dt=2014-12-18/part-0.parquet``
    (zstd), schema ``user_id int64, item_id int64, category_id int64, behavior int8,
    time timestamp[ms], geohash string`` (+ extra generic columns); without times it
    is one flat dataset.
    ``items``: ``OUT/part-00000.parquet`` with ``item_id, category_id, geohashes``,
    one row per item.
    Both carry ``_meta.json`` (rows per day, bad rows and their first examples).

Memory stays flat however large the input: files are read in blocks by Arrow's
streaming CSV reader (parsing on all cores), each block is brought to the output schema by
``rectool.ingest.normalise`` and written by ``pyarrow.dataset``; the line layouts
(``user-lines``, ``pairs``) are read by ``rectool.ingest.lines``, ORC/parquet in batches
by ``rectool.ingest.columnar``. A delimiter of several characters (MovieLens-1M's ``::``)
reaches Arrow's reader as one (``rectool.ingest.delimiters``).

Bad rows
    ``error`` (default) stops at the first bad row with ``file:line: reason: text``
    (``file: row N: ...`` for ORC/parquet);
    ``skip`` drops bad rows, counts them and keeps the first examples in
    ``_meta.json``. Nothing is left at the output path when a conversion fails.

Example::

    rectool convert --format tianchi-user data/raw/offline/tianchi_fresh_comp_train_user.csv \\
        --output data/events
"""

from __future__ import annotations

import gzip
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, get_args

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rectool import console
from rectool.artifacts import PartitionedWriter, PartWriter, atomic_dir, expand_paths, write_meta
from rectool.badinput import quote
from rectool.errors import UserError
from rectool.faults import fault_point
from rectool.ingest.badrows import BadRowMode, BadRows, ConvertStats, is_gzip
from rectool.ingest.columnar import ColumnarFile, check_columns, columnar_batches, columnar_inputs
from rectool.ingest.delimiters import STAND_IN, Replacing, reader_delimiter
from rectool.ingest.formats import BUILTIN_FORMATS, ITEMS_SCHEMA, FormatSpec, load_format
from rectool.ingest.normalise import INT, Normalised, arrow_read_types, as_plain, normalise, order_columns

if TYPE_CHECKING:
    from rectool.ingest.lines import LineFormat

BLOCK_SIZE = 2 << 20
SourceT = TypeVar("SourceT", "RawFile", ColumnarFile)
BOM = "\ufeff"


# ----------------------------------------------------------------------------- input files


@dataclass
class RawFile:
    """One input file with what was sniffed from its first line."""

    path: Path
    gzip: bool
    delimiter: str
    header: bool
    size: int

    def open_stream(self) -> tuple[pa.NativeFile, pa.NativeFile | Replacing]:
        """(raw file for progress, decompressed stream for the reader; a delimiter of several
        characters becomes one there)."""
        raw = pa.OSFile(str(self.path), "rb")
        stream = pa.CompressedInputStream(raw, "gzip") if self.gzip else raw
        if len(self.delimiter) > 1:
            return raw, Replacing(stream, self.delimiter.encode())
        return raw, stream

    def lines(self) -> Iterator[bytes]:
        opener = gzip.open if self.gzip else open
        with opener(self.path, "rb") as fh:  # type: ignore[operator]
            yield from fh


def _first_line(path: Path, compressed: bool) -> str:
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as fh:  # type: ignore[operator]
            # a UTF-8 byte order mark (Excel writes one) is not part of the first column's name
            return fh.readline(1 << 20).decode("utf-8", errors="replace").rstrip("\r\n").removeprefix(BOM)
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read ({exc}); is it a complete gzip or text file?") from exc


def _suggest_format(fields: list[str]) -> str:
    lowered = [f.strip().lower() for f in fields]
    for name, spec in BUILTIN_FORMATS.items():
        if lowered == [c.name for c in spec.columns]:
            return f"; this looks like --format {name}"
    return ""


def sniff(path: Path, spec: FormatSpec, fmt_name: str) -> RawFile:
    compressed = is_gzip(path)
    line = _first_line(path, compressed)
    n_cols = len(spec.columns)
    if spec.delimiter != "auto":
        delim = spec.delimiter
    else:
        fitting = [d for d in (",", "\t", "|", ";", " ") if line.count(d) == n_cols - 1]
        delim = fitting[0] if fitting else ("\t" if "\t" in line else ",")
    fields = line.split(delim)
    expected = [c.name for c in spec.columns]
    looks_like_header = fields[0].strip().lower() == expected[0] or (
        bool(fields[0].strip()) and not INT.match(fields[0]) and all(not INT.match(f) for f in fields))
    header = looks_like_header if spec.header == "auto" else bool(spec.header)
    if header and [f.strip().lower() for f in fields] != expected:
        raise UserError(f"{path}: line 1 has header columns {quote(line)} but --format {fmt_name} expects "
                        f"{','.join(expected)}{_suggest_format(fields)}")
    if not header and line and len(fields) != n_cols:
        raise UserError(f"{path}: line 1 has {len(fields)} field(s) split by {delim!r} but --format {fmt_name} "
                        f"expects {n_cols} ({','.join(expected)}): {quote(line)}{_suggest_format(fields)}")
    return RawFile(path, compressed, delim, header, path.stat().st_size)


# ----------------------------------------------------------------------------- bad rows


def _first_bad_row(raw: RawFile, spec: FormatSpec) -> dict | None:
    """Slow path after Arrow rejected a block in error mode: re-read the file the forgiving way
    (as in skip mode, with the same checks) and return the earliest bad row with its line."""
    probe = ConvertStats(bad=BadRows("skip", max_examples=64))
    for _ in _batches([raw], spec, "skip", probe, console._NullBar()):
        if probe.bad.examples:
            break
    probe.bad.locate_examples()
    located = [ex for ex in probe.bad.examples if ex["line"] is not None] or probe.bad.examples
    return min(located, key=lambda ex: ex["line"] or 0) if located else None


def _day_labels(table: pa.Table) -> pa.DictionaryArray:
    """The ``dt`` partition of every row: a dictionary of day strings, formatted once per distinct day."""
    days = pc.dictionary_encode(pc.cast(table.column("time"), pa.date32())).combine_chunks()
    labels = pc.strftime(pc.cast(days.dictionary, pa.timestamp("s")), format="%Y-%m-%d")
    return pa.DictionaryArray.from_arrays(days.indices, labels)


# ----------------------------------------------------------------------------- the stream


def _batches(files: list[RawFile], spec: FormatSpec, mode: BadRowMode, stats: ConvertStats,
             bar: console._Bar | console._NullBar) -> Iterator[pa.Table]:
    typed = mode == "error"
    col_types = arrow_read_types(spec, typed)
    offset_s = int(round(spec.utc_offset_hours * 3600))
    for raw in files:
        def on_invalid(row: pacsv.InvalidRow, raw: RawFile = raw) -> str:
            if mode == "error":
                return "error"
            text = row.text if len(raw.delimiter) == 1 else row.text.replace(STAND_IN, raw.delimiter)
            stats.bad.add(raw.path, f"expected {row.expected_columns} fields, got {row.actual_columns}", text)
            return "skip"

        read_opts = pacsv.ReadOptions(column_names=spec.raw_names, skip_rows=1 if raw.header else 0,
                                      block_size=BLOCK_SIZE, use_threads=True)
        parse_opts = pacsv.ParseOptions(delimiter=reader_delimiter(raw.delimiter), invalid_row_handler=on_invalid,
                                        newlines_in_values=False)
        conv_opts = pacsv.ConvertOptions(column_types=col_types, strings_can_be_null=True,
                                         quoted_strings_can_be_null=True)
        source, stream = raw.open_stream()
        rows_before = 0
        last_pos = 0
        try:
            reader = pacsv.open_csv(stream, read_options=read_opts, parse_options=parse_opts,
                                    convert_options=conv_opts)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                norm = normalise(batch, spec, typed, offset_s)
                if norm.bad is not None:
                    _handle_bad(norm, batch, raw, spec, mode, rows_before, stats)
                rows_before += batch.num_rows
                table = order_columns(norm.table, spec)
                stats.rows += table.num_rows
                pos = source.tell()
                bar.advance(pos - last_pos)
                last_pos = pos
                if table.num_rows:
                    yield table
        except pa.ArrowInvalid as exc:
            if "Empty CSV file" in str(exc):
                continue
            if mode == "skip":
                raise UserError(f"{raw.path}: {str(exc).splitlines()[0]}") from exc
            found = _first_bad_row(raw, spec)
            if found is None:
                raise UserError(f"{raw.path}: {str(exc).splitlines()[0]}; fix the file or pass --on-bad-rows skip") \
                    from exc
            stats.bad.fail(raw.path, found["line"], found["reason"], found["text"])
        except (OSError, EOFError) as exc:
            raise UserError(f"{raw.path}: read failed ({str(exc).splitlines()[0]}); is the file complete?") from exc
        finally:
            source.close()
        bar.advance(raw.size - last_pos)
        stats.files += 1
        stats.bytes += raw.size


def _handle_bad(norm: Normalised, batch: pa.RecordBatch, raw: RawFile, spec: FormatSpec, mode: BadRowMode,
                rows_before: int, stats: ConvertStats) -> None:
    bad_idx = pc.indices_nonzero(norm.bad).to_numpy()
    def text_of(i: int) -> str:
        return raw.delimiter.join("" if v is None else str(v)
                                  for v in (as_plain(batch.column(c.name))[int(i)].as_py() for c in spec.columns))
    def reason_of(i: int) -> str:
        return next((r for m, r in norm.reasons if m[int(i)].as_py()), "bad row")
    if mode == "error":
        i = int(bad_idx[0])
        line, text = _data_row(raw, rows_before + i)
        stats.bad.fail(raw.path, line, reason_of(i), text if text is not None else text_of(i))
    room = max(0, stats.bad.max_examples - len(stats.bad.examples))
    for i in bad_idx[:room]:
        stats.bad.add(raw.path, reason_of(i), text_of(i))
    stats.bad.count += len(bad_idx) - min(len(bad_idx), room)


def _data_row(raw: RawFile, index: int) -> tuple[int | None, str | None]:
    """(line number, text) of data row ``index`` (0-based): the reader skips the header and blank
    lines, so the row's line is found by counting the lines that are rows."""
    rows = 0
    for no, line in enumerate(raw.lines(), start=1):
        text = line.rstrip(b"\r\n")
        if (no == 1 and raw.header) or not text:
            continue
        if rows == index:
            return no, text.decode("utf-8", errors="replace")
        rows += 1
    return None, None


# ----------------------------------------------------------------------------- entry point


def convert(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], fmt: str = "tianchi-user",
            schema: str | os.PathLike[str] | None = None, on_bad_rows: BadRowMode = "error",
            overwrite: bool = False, behavior: int | None = None) -> dict:
    """Convert raw logs to an events or items dataset; returns the summary figures.

    ``behavior`` (1-4) is the behaviour of every row for layouts without a behaviour column.
    """
    from rectool.ingest.lines import LINE_FORMATS  # here: numba (its tokenizer) only when converting

    if on_bad_rows not in get_args(BadRowMode):
        raise UserError(f"--on-bad-rows {on_bad_rows}: choose error or skip")
    if behavior is not None and behavior not in (1, 2, 3, 4):
        raise UserError(f"--behavior {behavior}: choose 1 (browse), 2 (collect), 3 (cart) or 4 (buy)")
    spec = None
    if fmt in LINE_FORMATS:
        if schema is not None:
            raise UserError(f"--schema is only used with --format generic (got --format {fmt})")
    else:
        spec = load_format(fmt, schema)
        if behavior is not None:
            if any(c.type in ("behavior", "behavior_code") for c in spec.columns):
                raise UserError(f"--behavior: --format {fmt} has its own behaviour column")
            spec = spec.model_copy(update={"behavior_default": behavior})
    if not inputs:
        raise UserError("no input files given; pass one or more files or globs")
    paths = [p for spec_ in inputs for p in expand_paths(spec_, "input")]
    columnar = columnar_inputs(paths)
    if spec is None:
        if columnar is not None:
            raise UserError(f"--format {fmt} reads text lines; {columnar[0].path} is a {columnar[0].kind} file: "
                            "convert it with --format generic --schema SPEC.yaml naming its columns")
        return _convert_lines(paths, output, fmt, on_bad_rows, overwrite, behavior or 1)  # type: ignore[arg-type]
    stats = ConvertStats(bad=BadRows(on_bad_rows))
    stream: Callable[[console._Bar | console._NullBar], Iterator[pa.Table]]
    if columnar is not None:
        for f in columnar:
            if f.size:
                check_columns(f, spec, fmt)
        sources = _non_empty(columnar)
        stream = lambda bar: columnar_batches(sources, spec, on_bad_rows, stats, bar)  # noqa: E731
    else:
        files = _non_empty([sniff(p, spec, fmt) for p in paths])
        stream = lambda bar: _batches(files, spec, on_bad_rows, stats, bar)  # noqa: E731
        sources = files
    total_bytes = sum(f.size for f in sources)
    with atomic_dir(output, overwrite) as tmp, console.Stopwatch() as sw:
        with console.progress(f"convert {fmt}", total=total_bytes, unit="B") as bar:
            if spec.kind == "items":
                rows_out, out_schema = _write_items(stream(bar), tmp)
            else:
                rows_out, out_schema = _write_events(stream(bar), tmp, stats)
        stats.bad.locate_examples()
        write_meta(tmp, kind=spec.kind, inputs=[str(p) for p in paths], rows=rows_out, schema=out_schema,
                   format=fmt, rows_read=stats.rows + stats.bad.count, rows_per_day=stats.rows_per_day,
                   bad_rows={"mode": on_bad_rows, "count": stats.bad.count, "examples": stats.bad.examples})
    days = sorted(stats.rows_per_day)
    return {
        "output": str(output), "kind": spec.kind, "files": stats.files, "input_mb": round(stats.bytes / 1e6, 1),
        "rows_read": stats.rows + stats.bad.count, "rows_written": rows_out, "bad_rows": stats.bad.count,
        "days": len(days), "first_day": days[0] if days else "-", "last_day": days[-1] if days else "-",
        "seconds": round(sw.seconds, 2), "mb_per_s": round(stats.bytes / 1e6 / max(sw.seconds, 1e-9), 1),
    }


def _non_empty(files: list[SourceT]) -> list[SourceT]:
    """The inputs with data; an empty one is skipped with a warning, all empty is an error."""
    if all(f.size == 0 for f in files):  # nothing to convert: one line, not a warning per file then an error
        raise UserError(f"{files[0].path}: the file is empty{' (as are all inputs)' if len(files) > 1 else ''}; "
                        "give a log with rows")
    for f in files:
        if f.size == 0:
            console.warn(f"{f.path} is empty; skipping it")
    return [f for f in files if f.size > 0]


def _convert_lines(paths: list[Path], output: str | os.PathLike[str], fmt: LineFormat, mode: BadRowMode,
                   overwrite: bool, behavior: int) -> dict:
    from rectool.ingest.lines import read_line_format

    stats = ConvertStats(bad=BadRows(mode))

    def stream(bar: console._Bar | console._NullBar) -> Iterator[pa.Table]:
        for path in paths:
            def on_bad(line: int, reason: str, text: str, path: Path = path) -> None:
                if mode == "error":
                    stats.bad.fail(path, line, reason, text)
                stats.bad.add(path, reason, text, line)

            opener = gzip.open if is_gzip(path) else open
            for table in read_line_format(path, fmt, opener, behavior, on_bad):
                stats.rows += table.num_rows
                yield table
            bar.advance(path.stat().st_size)
            stats.files += 1
            stats.bytes += path.stat().st_size

    with atomic_dir(output, overwrite) as tmp, console.Stopwatch() as sw:
        with console.progress(f"convert {fmt}", total=sum(p.stat().st_size for p in paths), unit="B") as bar:
            rows_out, out_schema = _write_events(stream(bar), tmp, stats)
        write_meta(tmp, kind="events", inputs=[str(p) for p in paths], rows=rows_out, schema=out_schema, format=fmt,
                   rows_read=stats.rows + stats.bad.count, ordered_by="seq",
                   bad_rows={"mode": mode, "count": stats.bad.count, "examples": stats.bad.examples})
    return {"output": str(output), "kind": "events", "files": stats.files, "input_mb": round(stats.bytes / 1e6, 1),
            "rows_read": stats.rows + stats.bad.count, "rows_written": rows_out, "bad_rows": stats.bad.count,
            "seconds": round(sw.seconds, 2)}


def _write_events(stream: Iterator[pa.Table], tmp: Path, stats: ConvertStats) -> tuple[int, pa.Schema]:
    first = next(stream, None)
    if first is None:
        raise UserError("the input holds no data rows; check the files and --format")
    timed = "time" in first.column_names
    schema = first.schema
    if not timed:  # no calendar: one flat dataset
        with PartWriter(tmp, schema) as writer:
            writer.write(first)
            for t in stream:
                writer.write(t)
                fault_point("convert.batch")
        return writer.rows, schema

    with PartitionedWriter(tmp, schema, "dt") as writer:
        for table in itertools.chain([first], stream):
            writer.write(table, _day_labels(table))
            fault_point("convert.batch")
    stats.rows_per_day = dict(sorted(writer.rows_per_partition.items()))
    return sum(stats.rows_per_day.values()), schema


def _write_items(stream: Iterator[pa.Table], tmp: Path) -> tuple[int, pa.Schema]:
    """Deduplicate the item subset: one row per item, its category and its distinct geohashes."""
    import duckdb

    tables = list(stream)
    if not tables:
        raise UserError("the item file holds no data rows; check the files and --format")
    raw = pa.concat_tables(tables)  # noqa: F841 (read by DuckDB through its name)
    con = duckdb.connect()
    items = con.sql("""
        SELECT item_id, min(category_id) AS category_id, count(DISTINCT category_id) AS n_categories,
               coalesce(list(DISTINCT geohash ORDER BY geohash) FILTER (WHERE geohash IS NOT NULL), [])
                   AS geohashes
        FROM raw GROUP BY item_id ORDER BY item_id""").to_arrow_table()
    n_conflict = pc.sum(pc.greater(items.column("n_categories"), 1)).as_py() or 0
    if n_conflict:
        console.warn(f"{n_conflict} item(s) appear with more than one category; keeping the smallest id")
    items = items.drop_columns(["n_categories"]).cast(ITEMS_SCHEMA)
    with PartWriter(tmp, ITEMS_SCHEMA) as writer:
        writer.write(items)
    return items.num_rows, ITEMS_SCHEMA
