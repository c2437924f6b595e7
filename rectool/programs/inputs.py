"""Arrow columns -> model input tensors, the one conversion shared by ``train`` and ``predict``.

An ``InputSpec`` (saved as ``input_spec.json`` beside checkpoints and exports) lists
the parquet columns a model reads and how each becomes a tensor:

=========== ============================ ==========================================
kind        parquet type                 tensor(s)
=========== ============================ ==========================================
int         integer                      ``x[name]``: int64 [B]
string      string                       int64 [B], the stable hash of ``rectool.hashing``
float       integer or floating          float32 [B]
int_list    list<integer>                ``x[name]``: int64 [B, width] padded with 0,
                                         ``x[name + "__len"]``: int64 [B]
string_list list<string>                 the same, values hashed
=========== ============================ ==========================================

Lists keep their last ``width`` values (``keep="last"``, most recent last) or their
first. Nulls take the column default. A column bound to ``num_buckets`` without
``modulo`` is range-checked here, so an out-of-range id is a one-line error naming the
feature and the value. Example::

    spec = InputSpec(columns=[ColumnSpec("user_id", "int"), ColumnSpec("hist", "int_list", width=3)])
    to_tensors(pa.table({"user_id": [7], "hist": [[1, 2, 3, 4]]}), spec)
    # {"user_id": tensor([7]), "hist": tensor([[2, 3, 4]]), "hist__len": tensor([3])}
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

from rectool.errors import UserError
from rectool.hashing import hash_strings

ColumnKind = Literal["int", "string", "float", "int_list", "string_list"]
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


def kind_of(arrow_type: pa.DataType) -> ColumnKind | None:
    """How a parquet column of this type is fed to a model (None: not supported)."""
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = kind_of(t.value_type)
        return {"int": "int_list", "string": "string_list"}.get(inner or "")
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


def _list_tensors(arr: pa.Array, col: ColumnSpec) -> tuple[torch.Tensor, torch.Tensor]:
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    if arr.null_count:
        arr = pc.if_else(pc.is_null(arr), pa.scalar([], arr.type), arr)
    if arr.offset or isinstance(arr, pa.LargeListArray):
        arr = pa.concat_arrays([arr])  # normalise offsets to start at this slice
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    flat = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
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
               with_label: bool = True) -> dict[str, torch.Tensor]:
    """Model inputs (and ``label``/``weight`` when present and asked for) from Arrow data."""
    out: dict[str, torch.Tensor] = {}
    names = set(data.schema.names)
    missing = [c.name for c in spec.columns if c.name not in names]
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(missing)} that the model reads; "
                        f"it has {', '.join(data.schema.names)}")
    for col in spec.columns:
        arr = _plain(data.column(col.name))
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
        else:
            values, lengths = _list_tensors(arr, col)
            if col.kind == "int_list":
                _check_range(values.numpy(), col, source)
            out[col.name], out[col.name + LEN_SUFFIX] = values, lengths
    if with_label and spec.label is not None and spec.label in names:
        label = _plain(data.column(spec.label))
        if label.null_count:
            raise UserError(f"{source}: label column {spec.label} has {label.null_count} null value(s)")
        y = label.to_numpy(zero_copy_only=False)
        out["label"] = _tensor(np.asarray(y, dtype=np.int64 if spec.label_kind == "multiclass"
                                                   else np.float32))
    if with_label and spec.weight is not None and spec.weight in names:
        w = _plain(data.column(spec.weight)).fill_null(1.0)
        out["weight"] = _tensor(np.asarray(w.to_numpy(zero_copy_only=False), dtype=np.float32))
    return out


def warm_kernels() -> None:
    """Compile (or load from the cache) this module's numba kernels once, before worker processes start:
    several processes compiling the same kernel at once can corrupt numba's on-disk cache."""
    pad_lists(np.zeros(2, np.int64), np.zeros(1, np.int64), 1, True)
    hash_strings(["warm"])
