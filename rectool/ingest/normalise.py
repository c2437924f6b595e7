"""One raw batch of ``rectool convert`` -> the output schema, with the rows it refuses and why.

In: a record batch as Arrow's CSV reader gives it (``arrow_read_types``: typed columns in error
mode, strings in skip mode) and the ``FormatSpec`` of its layout. Out (``normalise``): the
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

from rectool.ingest.formats import BEHAVIOR_NAMES, EVENTS_SCHEMA, FormatSpec

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


@dataclass
class Normalised:
    table: pa.Table
    bad: pa.Array | None                # boolean mask over the input batch, or None
    reasons: list[tuple[pa.Array, str]]  # (mask, reason) pairs to explain bad rows


def normalise(batch: pa.RecordBatch, spec: FormatSpec, typed: bool, offset_s: int) -> Normalised:
    """One raw batch -> the output schema (+ ``dt`` partition for timed events)."""
    out: dict[str, pa.Array] = {}
    reasons: list[tuple[pa.Array, str]] = []
    n = batch.num_rows
    for c in spec.columns:
        arr = batch.column(c.name)
        name = spec.output_name(c.name)
        if c.type in ("behavior", "behavior_code"):
            if pa.types.is_dictionary(arr.type):
                codes = pc.take(_behavior_codes(arr.dictionary), arr.indices)
            else:  # already int8 codes: anything outside 1-4 is bad
                codes = pc.if_else(pc.and_(pc.greater_equal(arr, 1), pc.less_equal(arr, 4)), arr,
                                   pa.scalar(0, pa.int8()))
            bad = pc.fill_null(pc.equal(codes, 0), True)
            reasons.append((bad, f"{c.name} is not one of 1-4 or pv/fav/cart/buy"))
            out[name] = codes
        elif c.type == "timestamp":
            if c.format in ("unix_s", "unix_ms"):
                if typed:
                    secs, ok = arr, pa.array([True] * n)
                else:
                    secs, ok = _convert_strings(arr, "unix")
                    reasons.append((pc.invert(ok), f"{c.name} is not a unix timestamp"))
                if c.format == "unix_ms":
                    secs = pc.divide(secs, 1000)
                secs = pc.add(secs, offset_s)
                out[name] = pc.cast(secs, pa.timestamp("s"))
            else:
                plain = arr
                if pa.types.is_dictionary(arr.type):  # parse each distinct value once
                    parsed = pc.strptime(arr.dictionary, format=c.format, unit="s", error_is_null=True)
                    times = pc.take(parsed, arr.indices)
                else:
                    times = pc.strptime(plain, format=c.format, unit="s", error_is_null=True)
                bad = pc.and_(pc.is_null(times), pc.is_valid(arr))
                reasons.append((pc.fill_null(bad, False), f"{c.name} does not match format {c.format!r}"))
                out[name] = times
        elif c.type == "string":  # the reader already turned empty fields into nulls
            out[name] = as_plain(arr)
        else:
            if typed:
                out[name] = arr
            else:
                typed_arr, ok = _convert_strings(arr, c.type)
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
