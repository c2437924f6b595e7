"""One raw batch of ``rectool convert`` -> the output schema, with the rows it refuses and why.

In: a record batch as Arrow's CSV reader gives it (``arrow_read_types``: typed columns in error
mode, strings in skip mode) or as ``rectool.ingest.columnar`` reads an ORC/parquet file (each
column of its own type), and the ``FormatSpec`` of its layout. Each column is converted by
what it holds: numbers are cast, text is parsed value by value, timestamp columns are kept.
Out (``normalise``): the
columns of ``rectool.ingest.formats.EVENTS_SCHEMA`` (the item subset: ``item_id, category_id,
geohash``), behaviours as codes 1-4, times as timestamps shifted by the format's UTC offset,
ids required; the mask of bad rows and a reason per check, so that ``convert`` can stop at the
first one or count them::

    (skip mode) user_id="7", item_id="x", behavior_type="cart"  ->  table with no row, bad [True],
    reasons [..., (mask, "column item_id is not a number of type int64"), ...]

``order_columns`` puts the events schema first (cast to its types), extra generic columns after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rectool.ingest.formats import BEHAVIOR_NAMES, EVENTS_SCHEMA, ColumnSpec, FormatSpec

INT = re.compile(r"^\s*-?\d+\s*$")
_FLOAT = r"^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|nan|NaN|inf|-inf)\s*$"


def arrow_read_types(spec: FormatSpec, typed: bool) -> dict[str, pa.DataType]:
    """Column types for Arrow's reader: typed (fast path) or all strings (skip mode)."""
    types: dict[str, pa.DataType] = {}
    for c in spec.columns:
        few_values = c.type == "behavior" or (c.type == "timestamp" and c.format and "%M" not in c.format
                                              and "%S" not in c.format and not c.format.startswith("unix"))
        if c.type == "behavior_code" and typed:
            types[c.name] = pa.int8()
        elif few_values or c.type == "behavior_code":
            types[c.name] = pa.dictionary(pa.int32(), pa.string())  # parse the few distinct values once
        elif typed and c.type in ("int64", "int32", "float64", "float32"):
            types[c.name] = {"int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(),
                             "float32": pa.float32()}[c.type]
        elif typed and c.type == "timestamp" and c.format in ("unix_s", "unix_ms"):
            types[c.name] = pa.int64()
        else:
            types[c.name] = pa.string()
    return types


def _behavior_codes(values: pa.Array) -> pa.Array:
    """Map the distinct raw behaviour values ('1'..'4' or pv/fav/cart/buy) to codes, 0 if unknown."""
    codes = []
    for v in values.to_pylist():
        s = (v or "").strip().lower()
        if s in ("1", "2", "3", "4"):
            codes.append(int(s))
        else:
            codes.append(BEHAVIOR_NAMES.get(s, 0))
    return pa.array(codes, pa.int8())


def as_plain(arr: pa.Array) -> pa.Array:
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


_STRING_TYPES = {"int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(), "float32": pa.float32(),
                 "unix": pa.int64()}


def _convert_strings(arr: pa.Array, kind: str) -> tuple[pa.Array, pa.Array]:
    """(typed array, valid mask) from a string column (skip mode): bad numbers become invalid.

    The checks match what the typed reader of error mode accepts: integers (unix times too, which
    it reads as int64) that fit their type; ``1e23`` or ``99999999999999999999`` as an id is a bad row.
    """
    arr = as_plain(arr)
    pattern = INT.pattern if kind.startswith("int") or kind == "unix" else _FLOAT
    ok = pc.fill_null(pc.match_substring_regex(arr, pattern), False)
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), True)
    cleaned = pc.if_else(ok, pc.utf8_trim_whitespace(arr), pa.scalar(None, pa.string()))
    target = _STRING_TYPES[kind]
    try:
        typed = pc.cast(cleaned, target)
    except pa.ArrowInvalid:  # an integer the type cannot hold: find those values one by one (bad rows only)
        fits = [v is None or _fits(v, target) for v in cleaned.to_pylist()]
        ok = pc.and_(ok, pa.array(fits))
        typed = pc.cast(pc.if_else(ok, cleaned, pa.scalar(None, pa.string())), target)
    return typed, pc.or_(ok, empty)


def _fits(text: str, target: pa.DataType) -> bool:
    try:
        pc.cast(pa.array([text]), target)
    except pa.ArrowInvalid:
        return False
    return True


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _numbers(arr: pa.Array, kind: str) -> tuple[pa.Array, pa.Array | None]:
    """(typed array, valid mask or None when every value is valid): numbers as they come (Arrow's
    typed CSV reader, an ORC/parquet column) are cast; text is parsed and checked value by value."""
    arr = as_plain(arr)
    if _is_text(arr.type):
        return _convert_strings(pc.cast(arr, pa.string()), kind)
    target = _STRING_TYPES[kind]
    if arr.type == target:
        return arr, None
    try:
        return pc.cast(arr, target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # 1.5 as an id, 300 as an int32 ...: bad rows
        return _convert_strings(pc.cast(arr, pa.string()), kind)


def _behaviors(arr: pa.Array) -> pa.Array:
    """Codes 1-4 (0: unknown) from names or codes, as a dictionary, text or integers."""
    if pa.types.is_dictionary(arr.type) and _is_text(arr.type.value_type):
        return pc.take(_behavior_codes(pc.cast(arr.dictionary, pa.string())), arr.indices)
    arr = as_plain(arr)
    if pa.types.is_integer(arr.type):  # anything outside 1-4 is bad
        in_range = pc.and_(pc.greater_equal(arr, 1), pc.less_equal(arr, 4))
        return pc.cast(pc.if_else(in_range, arr, pa.scalar(0, arr.type)), pa.int8())
    encoded = pc.dictionary_encode(pc.cast(arr, pa.string()))
    return pc.take(_behavior_codes(encoded.dictionary), encoded.indices)


def _native_times(arr: pa.Array, offset_s: int) -> pa.Array:
    """A timestamp or date column of a columnar input: zoned times to the dataset's local time
    (UTC + offset), zone-less times and dates as they are."""
    if pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
        utc = pc.cast(arr, pa.timestamp(arr.type.unit))
        return pc.cast(pc.add(pc.cast(utc, pa.timestamp("s"), safe=False),
                              pa.scalar(offset_s, pa.duration("s"))), pa.timestamp("ms"))
    return pc.cast(arr, pa.timestamp("ms"), safe=False)


def _times(arr: pa.Array, c: ColumnSpec, offset_s: int, reasons: list[tuple[pa.Array, str]]) -> pa.Array:
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        return _native_times(arr, offset_s)
    if c.format in ("unix_s", "unix_ms"):
        secs, ok = _numbers(arr, "unix")
        if ok is not None:
            reasons.append((pc.invert(ok), f"{c.name} is not a unix timestamp"))
        if c.format == "unix_ms":
            secs = pc.divide(secs, 1000)
        return pc.cast(pc.add(secs, offset_s), pa.timestamp("s"))
    if pa.types.is_dictionary(arr.type):  # parse each distinct value once
        parsed = pc.strptime(pc.cast(arr.dictionary, pa.string()), format=c.format, unit="s", error_is_null=True)
        times = pc.take(parsed, arr.indices)
    else:
        times = pc.strptime(pc.cast(arr, pa.string()), format=c.format, unit="s", error_is_null=True)
    bad = pc.and_(pc.is_null(times), pc.is_valid(arr))
    reasons.append((pc.fill_null(bad, False), f"{c.name} does not match format {c.format!r}"))
    return times


@dataclass
class Normalised:
    table: pa.Table
    bad: pa.Array | None                # boolean mask over the input batch, or None
    reasons: list[tuple[pa.Array, str]]  # (mask, reason) pairs to explain bad rows


def normalise(batch: pa.RecordBatch, spec: FormatSpec, typed: bool, offset_s: int) -> Normalised:
    """One raw batch -> the output schema (+ ``dt`` partition for timed events).

    Each column is converted by what it holds, not by ``typed``: numbers are cast, text is
    parsed value by value with a reason for each bad one (Arrow's untyped reader in skip mode,
    a string column of an ORC/parquet file). ``typed`` says which reader the batch comes from.
    """
    out: dict[str, pa.Array] = {}
    reasons: list[tuple[pa.Array, str]] = []
    n = batch.num_rows
    for c in spec.columns:
        arr = batch.column(c.name)
        name = spec.output_name(c.name)
        if c.type in ("behavior", "behavior_code"):
            codes = _behaviors(arr)
            bad = pc.fill_null(pc.equal(codes, 0), True)
            reasons.append((bad, f"{c.name} is not one of 1-4 or pv/fav/cart/buy"))
            out[name] = codes
        elif c.type == "timestamp":
            out[name] = _times(arr, c, offset_s, reasons)
        elif c.type == "string":  # the CSV reader already turned empty fields into nulls
            plain = as_plain(arr)
            out[name] = plain if pa.types.is_string(plain.type) else pc.cast(plain, pa.string())
        else:
            typed_arr, ok = _numbers(arr, c.type)
            if ok is not None:
                reasons.append((pc.invert(ok), f"column {c.name} is not a number of type {c.type}"))
            out[name] = typed_arr
    # required fields: ids must be present
    for required in ("user_id", "item_id") if spec.kind == "events" else ("item_id",):
        reasons.append((pc.is_null(out[required]), f"{required} is empty"))
    if spec.kind == "events":
        if "time" in out:
            reasons.append((pc.is_null(out["time"]), "time is empty"))
        if "behavior" not in out:
            out["behavior"] = pa.array([spec.behavior_default or 1] * n, pa.int8()) if n else pa.array([], pa.int8())
        if "category_id" not in out:
            out["category_id"] = pa.nulls(n, pa.int64())
        if "geohash" not in out:
            out["geohash"] = pa.nulls(n, pa.string())
    else:
        out.setdefault("category_id", pa.nulls(n, pa.int64()))
        out.setdefault("geohash", pa.nulls(n, pa.string()))
    bad_any = None
    for mask, _ in reasons:
        bad_any = mask if bad_any is None else pc.or_(bad_any, mask)
    table = pa.table(out)
    if bad_any is not None and pc.any(bad_any).as_py():
        table = table.filter(pc.invert(bad_any))
    else:
        bad_any = None
    return Normalised(table, bad_any, reasons)


def order_columns(table: pa.Table, spec: FormatSpec) -> pa.Table:
    """Events schema first (cast to its types), extra generic columns after."""
    if spec.kind != "events":
        return table
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in EVENTS_SCHEMA if f.name != "time" or "time" in table.column_names]
    names = [f.name for f in EVENTS_SCHEMA if f.name != "time" or "time" in table.column_names]
    extra = [c for c in table.column_names if c not in names]
    return pa.table(cols + [table.column(c) for c in extra], names=names + extra)
