"""Arrow columns -> model input tensors, the one conversion shared by ``train`` and ``predict``.

An ``InputSpec`` (saved as ``input_spec.json`` beside checkpoints and exports) lists
the columns (of parquet or ORC files) a model reads and how each becomes a tensor:

============ ============================ ==========================================
kind         column type                  tensor(s)
============ ============================ ==========================================
int          integer                      ``x[name]``: int64 [B]
string       string                       int64 [B], the stable hash of ``rectool.hashing``
float        integer or floating          float32 [B]
float_vector list of ``width`` numbers    float32 [B, width] (a multi-dimensional dense input)
int_list     list<integer>                ``x[name]``: int64 [B, width] padded with 0,
                                          ``x[name + "__len"]``: int64 [B]
string_list  list<string>                 the same, values hashed
============ ============================ ==========================================

A scalar kind (``int``, ``string``, ``float``, and the label) also reads a list column
holding one value a row (RecIS writes ids and labels as 1-element lists): ``[[7], [8]]``
is read as ``[7, 8]``; an empty list is a missing value, two values or more a one-line
error naming the column and the row. Every row of a ``float_vector`` column must hold
``width`` values. An ``int_list`` / ``string_list`` with a ``separator`` also reads a
string column of joined ids (TorchEasyRec's ``"1;2;3"``): tokens are trimmed, empty ones
skipped (``""`` is an empty sequence), and an ``int_list``'s tokens must be integers.

Lists keep their last ``width`` values (``keep="last"``, most recent last) or their
first. Nulls take the column default. A column bound to ``num_buckets`` without
``modulo`` is range-checked here, so an out-of-range id is a one-line error naming the
feature and the value. Example::

    spec = InputSpec(columns=[ColumnSpec("user_id", "int"), ColumnSpec("hist", "int_list", width=3),
                              ColumnSpec("dense1", "float_vector", width=2)])
    to_tensors(pa.table({"user_id": [[7]], "hist": [[1, 2, 3, 4]], "dense1": [[0.5, 1.0]]}), spec)
    # {"user_id": tensor([7]), "hist": tensor([[2, 3, 4]]), "hist__len": tensor([3]),
    #  "dense1": tensor([[0.5, 1.0]])}
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from typing import Literal

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from rectool.badinput import quote
from rectool.errors import UserError
from rectool.hashing import hash_strings

ColumnKind = Literal["int", "string", "float", "float_vector", "int_list", "string_list"]
SCALAR_KINDS = ("int", "string", "float")
LEN_SUFFIX = "__len"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: ColumnKind
    width: int | None = None
    keep: Literal["last", "first"] = "last"
    default: float = 0
    num_buckets: int | None = None      # range-check ids (num_buckets without modulo)
    feature: str | None = None          # the feature that set the range, for messages
    separator: str | None = None        # int_list / string_list: a string column of ids joined by it


@dataclass(frozen=True)
class InputSpec:
    columns: list[ColumnSpec] = field(default_factory=list)
    label: str | None = None
    label_kind: Literal["binary", "multiclass"] = "binary"
    weight: str | None = None

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> InputSpec:
        raw = json.loads(text)
        return cls(columns=[ColumnSpec(**c) for c in raw["columns"]], label=raw.get("label"),
                   label_kind=raw.get("label_kind", "binary"), weight=raw.get("weight"))


def is_list(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)


def kind_of(arrow_type: pa.DataType) -> ColumnKind | None:
    """How a column of this type is fed to a model (None: not supported). A list of numbers is a
    ``float_vector`` here; ``train.schema`` reads a 1-element list as its scalar."""
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if is_list(t):
        inner = kind_of(t.value_type)
        return {"int": "int_list", "string": "string_list", "float": "float_vector"}.get(inner or "")
    return None


@numba.njit(cache=True)
def pad_lists(offsets: np.ndarray, values: np.ndarray, width: int, keep_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Ragged lists -> ([B, width] left-aligned, zero padded; [B] lengths).

    ``pad_lists([0, 3, 4], [1, 2, 3, 9], 2, True)`` -> ``[[2, 3], [9, 0]]``, ``[2, 1]``.
    """
    n = offsets.size - 1
    out = np.zeros((n, width), dtype=np.int64)
    lengths = np.empty(n, dtype=np.int64)
    for i in range(n):
        start, end = offsets[i], offsets[i + 1]
        m = min(end - start, width)
        first = end - m if keep_last else start
        for j in range(m):
            out[i, j] = values[first + j]
        lengths[i] = m
    return out, lengths


def _tensor(values: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor of an Arrow-backed (read-only) array; batches are copied when they are
    assembled, so these tensors are never written to and torch's warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(values)


def _plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _ints(arr: pa.Array, default: float) -> np.ndarray:
    if arr.null_count:
        arr = arr.fill_null(int(default))
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _row(i: int, n: int, base: int | None) -> str:
    return f"row {base + i}" if base is not None else f"row {i} of a {n}-row batch"


def _values(n: int) -> str:
    return f"{n} value" + ("" if n == 1 else "s")


def _lengths(arr: pa.Array) -> np.ndarray:
    """Values per row of a list array, -1 for a null row."""
    return np.asarray(pc.list_value_length(arr).fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def single_values(arr: pa.Array, name: str, reader: str, source: str, base: int | None = None) -> pa.Array:
    """One value a row of a list column: ``[[7], [], None]`` -> ``[7, None, None]``."""
    n = len(arr)
    lengths = _lengths(arr)
    over = np.flatnonzero(lengths > 1)
    if over.size:
        i = int(over[0])
        raise UserError(f"{source}: column {name}: {_row(i, n, base)} holds {_values(lengths[i])}; {reader} reads one "
                        "value a row (a list column must hold 1-element lists; use a sequence feature for lists)")
    flat = _plain(arr.flatten())
    if len(flat) == n:
        return flat
    has = lengths == 1
    return flat.take(pa.array(np.cumsum(has) - 1, mask=~has))


def _vectors(arr: pa.Array, col: ColumnSpec, source: str, base: int | None) -> torch.Tensor:
    """[B, width] float32 of a list column whose every row holds ``width`` numbers (a null row: the default)."""
    width, n = int(col.width or 1), len(arr)
    if not is_list(arr.type):
        raise UserError(f"{source}: column {col.name} is {arr.type}; the model reads it as a list of {width} numbers")
    lengths = None
    if not (pa.types.is_fixed_size_list(arr.type) and arr.type.list_size == width and not arr.null_count):
        lengths = _lengths(arr)
        bad = np.flatnonzero((lengths != width) & (lengths >= 0))
        if bad.size:
            i = int(bad[0])
            raise UserError(f"{source}: column {col.name}: {_row(i, n, base)} holds {_values(lengths[i])}, expected "
                            f"{width}; every row of a list column read by a raw feature holds {width} values")
    flat = pc.cast(_plain(arr.flatten()), pa.float32())
    if flat.null_count:
        flat = flat.fill_null(float(col.default))
    values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)
    if lengths is None or len(values) == n:
        return _tensor(values)
    out = np.full((n, width), col.default, dtype=np.float32)
    out[lengths >= 0] = values
    return torch.from_numpy(out)


def _split(arr: pa.Array, col: ColumnSpec, source: str) -> tuple[np.ndarray, pa.Array]:
    """Offsets and tokens of a string column of ``separator``-joined ids: ``["1;2", "", None, "3"]`` ->
    ``[0, 2, 2, 2, 3]``, ``[1, 2, 3]`` (int64 for an ``int_list``, strings for a ``string_list``)."""
    parts = pc.split_pattern(arr, pattern=col.separator)
    per_row = np.maximum(_lengths(parts), 0)
    tokens = pc.utf8_trim_whitespace(parts.flatten())
    keep = np.asarray(pc.greater(pc.utf8_length(tokens), 0).to_numpy(zero_copy_only=False), dtype=bool)
    rows = np.repeat(np.arange(len(arr)), per_row)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=len(arr)), out=offsets[1:])
    tokens = tokens.filter(pa.array(keep))
    if col.kind == "string_list":
        return offsets, tokens
    try:
        return offsets, pc.cast(tokens, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok = np.asarray(pc.match_substring_regex(tokens, r"^[+-]?[0-9]+$").to_numpy(zero_copy_only=False), dtype=bool)
        bad = tokens[int(np.argmin(ok))].as_py() if not ok.all() else "an id beyond int64"
        raise UserError(f"{source}: column {col.name}: {quote(bad)} in a '{col.separator}'-separated sequence is not "
                        "an integer id; give the feature hash_bucket_size to hash string ids") from None


def _list_tensors(arr: pa.Array, col: ColumnSpec, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    if col.separator is not None and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        offsets, flat = _split(arr, col, source)
    else:
        if not is_list(arr.type):
            raise UserError(f"{source}: column {col.name} is {arr.type}; the model reads it as a list of ids")
        if pa.types.is_fixed_size_list(arr.type):
            arr = arr.cast(pa.list_(arr.type.value_type))
        if arr.null_count:
            arr = pc.if_else(pc.is_null(arr), pa.scalar([], arr.type), arr)
        if arr.offset or isinstance(arr, pa.LargeListArray):
            arr = pa.concat_arrays([arr])  # normalise offsets to start at this slice
        offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        flat = _plain(arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])))
        offsets = offsets - offsets[0]
    values = hash_strings(flat) if col.kind == "string_list" else _ints(flat, col.default)
    padded, lengths = pad_lists(offsets, values, int(col.width or 1), col.keep == "last")
    return torch.from_numpy(padded), torch.from_numpy(lengths)


def _check_range(values: np.ndarray, col: ColumnSpec, source: str) -> None:
    if col.num_buckets is None or values.size == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= col.num_buckets:
        bad = lo if lo < 0 else hi
        raise UserError(f"{source}: column {col.name}: id {bad} is outside num_buckets={col.num_buckets} of feature "
                        f"{col.feature}; raise num_buckets, set modulo: true, or use hash_bucket_size")


def to_tensors(data: pa.Table | pa.RecordBatch, spec: InputSpec, source: str = "input",
               with_label: bool = True, row_base: int | None = None) -> dict[str, torch.Tensor]:
    """Model inputs (and ``label``/``weight`` when present and asked for) from Arrow data; ``row_base``,
    the file row of the first row, lets a message name a bad row by its place in ``source``."""
    out: dict[str, torch.Tensor] = {}
    names = set(data.schema.names)
    missing = [c.name for c in spec.columns if c.name not in names]
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(missing)} that the model reads; "
                        f"it has {', '.join(data.schema.names)}")
    for col in spec.columns:
        arr = _plain(data.column(col.name))
        if col.kind in SCALAR_KINDS and is_list(arr.type):
            arr = single_values(arr, col.name, "an id or raw feature", source, row_base)
        if col.kind == "int":
            values = _ints(arr, col.default)
            _check_range(values, col, source)
            out[col.name] = _tensor(values)
        elif col.kind == "string":
            out[col.name] = _tensor(hash_strings(arr))
        elif col.kind == "float":
            if arr.null_count:
                arr = arr.fill_null(float(col.default))
            out[col.name] = _tensor(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float32))
        elif col.kind == "float_vector":
            out[col.name] = _vectors(arr, col, source, row_base)
        else:
            values, lengths = _list_tensors(arr, col, source)
            if col.kind == "int_list":
                _check_range(values.numpy(), col, source)
            out[col.name], out[col.name + LEN_SUFFIX] = values, lengths
    if with_label and spec.label is not None and spec.label in names:
        label = _plain(data.column(spec.label))
        if is_list(label.type):
            label = single_values(label, spec.label, "the label", source, row_base)
        if label.null_count:
            raise UserError(f"{source}: label column {spec.label} has {label.null_count} null value(s)")
        y = label.to_numpy(zero_copy_only=False)
        out["label"] = _tensor(np.asarray(y, dtype=np.int64 if spec.label_kind == "multiclass"
                                                   else np.float32))
    if with_label and spec.weight is not None and spec.weight in names:
        w = _plain(data.column(spec.weight))
        if is_list(w.type):
            w = single_values(w, spec.weight, "the sample weight", source, row_base)
        w = w.fill_null(1.0)
        out["weight"] = _tensor(np.asarray(w.to_numpy(zero_copy_only=False), dtype=np.float32))
    return out


def example_tensors(spec: InputSpec, batch: int = 4) -> dict[str, torch.Tensor]:
    """Zero tensors of the dtypes and shapes ``to_tensors`` gives for ``spec`` (an export's example inputs)."""
    out: dict[str, torch.Tensor] = {}
    for c in spec.columns:
        if c.kind in ("int", "string"):
            out[c.name] = torch.zeros(batch, dtype=torch.int64)
        elif c.kind == "float":
            out[c.name] = torch.zeros(batch, dtype=torch.float32)
        elif c.kind == "float_vector":
            out[c.name] = torch.zeros(batch, int(c.width or 1), dtype=torch.float32)
        else:
            out[c.name] = torch.zeros(batch, int(c.width or 1), dtype=torch.int64)
            out[c.name + LEN_SUFFIX] = torch.ones(batch, dtype=torch.int64)
    return out


def warm_kernels() -> None:
    """Compile (or load from the cache) this module's numba kernels once, before worker processes start:
    several processes compiling the same kernel at once can corrupt numba's on-disk cache."""
    pad_lists(np.zeros(2, np.int64), np.zeros(1, np.int64), 1, True)
    hash_strings(["warm"])
