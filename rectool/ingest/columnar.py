"""ORC and parquet inputs of ``rectool convert``: columns by name, read in batches.

Inputs
    Files whose suffix is ``.orc`` (RecIS writes ``data_{i}.orc`` with ``pyarrow.orc``) or
    ``.parquet``/``.pq``, given as files, globs or directories (every such file below a
    directory, hidden and ``_`` names skipped). A format's raw column names — a built-in
    format's, or the ``columns`` of a generic spec — name the source columns; ``rename``
    maps them to rectool's, so a file with ``uid, adgroup_id, ts`` converts with::

        kind: events
        columns: [{name: uid, type: int64}, {name: adgroup_id, type: int64},
                  {name: ts, type: timestamp, format: unix_s}]
        rename: {uid: user_id, adgroup_id: item_id, ts: time}

Outputs
    Record batches in the layout of Arrow's CSV reader, for ``rectool.ingest.normalise``:
    only the spec's columns, empty strings as nulls. Numbers, text and timestamps are
    converted there as their type says; a value that does not convert is a bad row, named
    ``file: row N`` (1-based within the file) with its values as ``name=value, ...``.

Memory stays flat: parquet is read ``BATCH_ROWS`` rows at a time, ORC one stripe at a time
(cut into ``BATCH_ROWS`` slices).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from rectool import console
from rectool.badinput import first_line
from rectool.errors import UserError
from rectool.ingest.badrows import BadRowMode, ConvertStats
from rectool.ingest.formats import ColumnSpec, FormatSpec
from rectool.ingest.normalise import normalise, order_columns

ColumnarKind = Literal["orc", "parquet"]
SUFFIXES: dict[str, ColumnarKind] = {".orc": "orc", ".parquet": "parquet", ".pq": "parquet"}
BATCH_ROWS = 65_536
_MAX_NAMES = 20


def input_kind(path: Path) -> ColumnarKind | None:
    """``orc`` or ``parquet`` by the file's suffix; None for text logs."""
    return SUFFIXES.get(path.suffix.lower())


@dataclass
class ColumnarFile:
    path: Path
    kind: ColumnarKind
    size: int


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _directory(path: Path) -> list[Path]:
    meta = path / "_meta.json"
    if meta.is_file():
        try:
            kind = json.loads(meta.read_text()).get("kind", "?")
        except (OSError, ValueError, AttributeError):
            kind = "?"
        raise UserError(f"input {path}: is a directory that rectool wrote (kind {kind}), already converted; give "
                        "the raw logs, or ORC/parquet files of your own")
    found = sorted(f for f in path.rglob("*") if input_kind(f) and f.is_file() and not _hidden(f, path))
    if not found:
        raise UserError(f"input {path}: is a directory; give the raw files (a glob such as '{path}/*.csv' works) or "
                        "a directory of .orc or .parquet files")
    return found


def columnar_inputs(paths: list[Path]) -> list[ColumnarFile] | None:
    """The ORC/parquet files the inputs name (files by suffix, directories by what they hold), or
    None when the inputs are text logs; one kind of input per conversion."""
    columnar: list[Path] = []
    text: list[Path] = []
    for p in paths:
        if p.is_dir():
            columnar += _directory(p)
        elif input_kind(p):
            columnar.append(p)
        else:
            text.append(p)
    if not columnar:
        return None
    if text:
        raise UserError(f"inputs mix text logs ({text[0]}) and ORC/parquet files ({columnar[0]}); convert them "
                        "in two runs")
    return [ColumnarFile(p, input_kind(p), p.stat().st_size) for p in columnar]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- checks


def _names(schema: pa.Schema) -> str:
    names = schema.names
    return ", ".join(names[:_MAX_NAMES]) + (f" ... ({len(names)} columns)" if len(names) > _MAX_NAMES else "")


def _fits(t: pa.DataType, c: ColumnSpec) -> bool:
    """Can a source column of type ``t`` hold values of ``c``? (values are checked as they convert)"""
    if pa.types.is_dictionary(t):
        t = t.value_type
    text = pa.types.is_string(t) or pa.types.is_large_string(t)
    number = pa.types.is_integer(t) or pa.types.is_floating(t)
    if pa.types.is_null(t) or text:
        return True
    if c.type == "string":
        return number or pa.types.is_boolean(t)
    if c.type == "timestamp":
        return pa.types.is_timestamp(t) or pa.types.is_date(t) or (number and bool(c.format)
                                                                    and c.format.startswith("unix"))
    if c.type in ("behavior", "behavior_code"):
        return pa.types.is_integer(t)
    return number or pa.types.is_boolean(t)


def _schema(f: ColumnarFile) -> pa.Schema:
    try:
        if f.kind == "orc":
            import pyarrow.orc as orc

            return orc.ORCFile(str(f.path)).schema
        import pyarrow.parquet as pq

        return pq.read_schema(str(f.path))
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise UserError(f"{f.path}: cannot read it as {f.kind.upper()} ({first_line(exc)}); is it a complete "
                        f"{f.kind} file?") from exc


def check_columns(f: ColumnarFile, spec: FormatSpec, fmt: str) -> None:
    """Every column the spec reads is in the file, with a type that can hold it."""
    schema = _schema(f)
    missing = [n for n in spec.raw_names if n not in schema.names]
    if missing:
        raise UserError(f"{f.path}: has no column {', '.join(missing)} (--format {fmt} reads "
                        f"{', '.join(spec.raw_names)} by name); it has {_names(schema)}; map its columns with "
                        "--format generic --schema SPEC.yaml (columns by name, rename to rectool's)")
    for c in spec.columns:
        t = schema.field(c.name).type
        if not _fits(t, c):
            what = f"timestamp ({c.format})" if c.type == "timestamp" else c.type
            raise UserError(f"{f.path}: column {c.name} is {t}, which --format {fmt} cannot read as {what}")


# ----------------------------------------------------------------------------- reading


def _raw_batches(f: ColumnarFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
    if f.kind == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(str(f.path)) as pf:
            yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        return
    import pyarrow.orc as orc

    reader = orc.ORCFile(str(f.path))
    for stripe in range(reader.nstripes):
        batch = reader.read_stripe(stripe, columns=columns)
        for start in range(0, batch.num_rows, BATCH_ROWS):
            yield batch.slice(start, BATCH_ROWS)


def _prepared(batch: pa.RecordBatch, spec: FormatSpec) -> pa.RecordBatch:
    """The spec's columns in its order; text as ``string`` with empty values null (as the CSV reader)."""
    arrays = []
    for c in spec.columns:
        arr = batch.column(c.name)
        value_type = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
        if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
            if pa.types.is_dictionary(arr.type):
                arr = arr.dictionary_decode()
            arr = pc.cast(arr, pa.string())
            arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=spec.raw_names)


def _row_text(batch: pa.RecordBatch, i: int) -> str:
    return ", ".join(f"{name}={batch.column(k)[i].as_py()}" for k, name in enumerate(batch.schema.names))


def _bad_rows(bad: pa.Array, reasons: list[tuple[pa.Array, str]], raw: pa.RecordBatch, path: Path, rows_before: int,
              mode: BadRowMode, stats: ConvertStats) -> None:
    """Stop at the first bad row of a batch (error mode), or count them, keeping the first as examples."""
    bad_idx = pc.indices_nonzero(bad).to_numpy()

    def reason_of(i: int) -> str:
        return next((r for m, r in reasons if m[i].as_py()), "bad row")

    if mode == "error":
        i = int(bad_idx[0])
        stats.bad.fail(path, None, reason_of(i), _row_text(raw, i), row=rows_before + i + 1)
    room = max(0, stats.bad.max_examples - len(stats.bad.examples))
    for i in bad_idx[:room].tolist():
        stats.bad.add(path, reason_of(i), _row_text(raw, i), row=rows_before + i + 1)
    stats.bad.count += len(bad_idx) - min(len(bad_idx), room)


def columnar_batches(files: list[ColumnarFile], spec: FormatSpec, mode: BadRowMode, stats: ConvertStats,
                     bar: console._Bar | console._NullBar) -> Iterator[pa.Table]:
    """Normalised tables from every file, in order; bad rows stop the run or are counted."""
    offset_s = int(round(spec.utc_offset_hours * 3600))
    for f in files:
        row = 0
        advanced = 0
        try:
            total = _row_count(f)
            for raw in _raw_batches(f, spec.raw_names):
                batch = _prepared(raw, spec)
                norm = normalise(batch, spec, False, offset_s)
                if norm.bad is not None:
                    _bad_rows(norm.bad, norm.reasons, raw, f.path, row, mode, stats)
                row += batch.num_rows
                table = order_columns(norm.table, spec)
                stats.rows += table.num_rows
                done = f.size * row // max(total, 1)
                bar.advance(done - advanced)
                advanced = done
                if table.num_rows:
                    yield table
        except (pa.ArrowException, OSError, EOFError) as exc:
            raise UserError(f"{f.path}: read failed near row {row + 1} ({first_line(exc)}); is the "
                            f"{f.kind} file complete?") from exc
        bar.advance(f.size - advanced)
        stats.files += 1
        stats.bytes += f.size


def _row_count(f: ColumnarFile) -> int:
    if f.kind == "orc":
        import pyarrow.orc as orc

        return int(orc.ORCFile(str(f.path)).nrows)
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(str(f.path)).metadata.num_rows)
