"""Reading the item table for ``tree init`` / ``tree cluster``, with one-line errors for bad input.

Inputs: a parquet item table (directory, file or glob; ``open_dataset``) with one row per
item: the id column (int, or string with ``hash_ids``), for ``init`` a category column,
for ``cluster`` an embedding column (``fixed_size_list<float>[d]`` or ``list<float>`` of one
length, decoded and checked by ``rectool.embeddings.vectors``), and optional attribute columns.

    items = read_items("items/", ["item_id", "category_id", "brand"])
    ids = item_ids(items, "item_id", hash_ids=False, source="items/")
    emb = vectors(items["item_emb"], ids, "items/", "item_emb")   # float32 [items, d]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rectool.artifacts import open_dataset, require_columns
from rectool.badinput import first_line, read_table
from rectool.errors import UserError
from rectool.hashing import hash_strings


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
