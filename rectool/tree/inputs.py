"""Reading the item table for ``tree init`` / ``tree cluster``, with one-line errors for bad input.

Inputs: a parquet item table (directory, file or glob; ``open_dataset``) with one row per
item: the id column (int, or string with ``hash_ids``), for ``init`` a category column,
for ``cluster`` an embedding column (``fixed_size_list<float>[d]`` or ``list<float>`` of one
length), and optional attribute columns.

    items = read_items("items/", "item_id", ["category_id", "brand"], hash_ids=False)
    ids = item_ids(items, "item_id", hash_ids=False, source="items/")
    emb = embedding_matrix(items, "item_emb", source="items/")   # float32 [items, d]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rectool.artifacts import open_dataset, require_columns
from rectool.badinput import first_line, read_table
from rectool.errors import UserError
from rectool.hashing import hash_strings


def split_fields(spec: str | None) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None or "" -> []."""
    return [f.strip() for f in (spec or "").split(",") if f.strip()]


def read_items(path: str, columns: list[str]) -> pa.Table:
    ds = open_dataset(path, "--item-input-path")
    unique = list(dict.fromkeys(columns))
    require_columns(ds.schema, unique, path)
    try:
        return read_table(ds, f"--item-input-path {path}", columns=unique)
    except (pa.ArrowInvalid, OSError) as exc:  # no file at fault (read_table names a broken one)
        raise UserError(f"--item-input-path {path}: cannot read columns {', '.join(unique)} ({first_line(exc)})") \
            from exc


def item_ids(items: pa.Table, field: str, hash_ids: bool, source: str) -> np.ndarray:
    """int64 item ids; string ids need ``hash_ids``; nulls and repeated ids are errors."""
    col = items[field].combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if col.null_count:
        row = int(pc.index(col.is_valid(), False).as_py())
        raise UserError(f"{source}: --item-id-field {field} is null in row {row}; drop rows without an id")
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        if not hash_ids:
            raise UserError(f"{source}: --item-id-field {field} holds strings; pass --hash-ids to hash them "
                            "to int64 (rectool.hashing) or give an integer column")
        ids = hash_strings(col)
    elif pa.types.is_integer(col.type):
        if pa.types.is_uint64(col.type) and pc.max(col).as_py() > np.iinfo(np.int64).max:
            raise UserError(f"{source}: --item-id-field {field} has ids above the int64 maximum; renumber them")
        ids = col.to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        raise UserError(f"{source}: --item-id-field {field} is {col.type}; item ids must be integers "
                        "(or strings with --hash-ids)")
    ordered = np.sort(ids)
    dup = np.flatnonzero(ordered[1:] == ordered[:-1])
    if dup.size:
        first = int(ordered[dup[0]])
        raise UserError(f"{source}: item id {first} appears more than once ({dup.size} repeats in all); "
                        "the item table needs one row per item: deduplicate it"
                        + (" (or the string ids collide after hashing)" if hash_ids else ""))
    return ids


def embedding_matrix(items: pa.Table, field: str, source: str) -> np.ndarray:
    """float32 [items, d] from a ``fixed_size_list<float>[d]`` or equal-length ``list<float>`` column."""
    col = items[field].combine_chunks()
    t = col.type
    is_list = pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
    if not is_list or not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        raise UserError(f"{source}: --embedding-field {field} is {t}; expected fixed_size_list<float32>[d] "
                        "or list<float>")
    if col.null_count:
        row = int(pc.index(col.is_valid(), False).as_py())
        raise UserError(f"{source}: --embedding-field {field} is null in row {row}; every item needs an embedding")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    dim = int(lengths[0]) if lengths.size else 0
    bad = np.flatnonzero(lengths != dim)
    if bad.size:
        raise UserError(f"{source}: --embedding-field {field} has {int(lengths[bad[0]])} values in row "
                        f"{int(bad[0])} but {dim} in row 0; all embeddings need the same dimension")
    if dim == 0:
        raise UserError(f"{source}: --embedding-field {field} holds empty embeddings")
    values = pc.list_flatten(col)
    if values.null_count:
        raise UserError(f"{source}: --embedding-field {field} holds null values inside embeddings")
    emb = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        raise UserError(f"{source}: --embedding-field {field} holds NaN or inf in row {int(np.argmin(finite))}; "
                        "fix the embeddings")
    return emb
