"""The one decoder of embedding columns: Arrow list column -> checked float32 [rows, d] matrix.

Input: a column of ``fixed_size_list<float*>[d]``, or ``list<float*>`` / ``large_list<float*>``
whose lists all have one length, with one item id per row. Output: a C-contiguous float32
matrix, one row per item. Every check fails in one line naming the source (the file or
directory given), the field and the first offending row and item:

- the column is not a list of floats;
- an embedding is null;
- the lists differ in length (from each other, or from the table's dimension ``dim``);
- there is no row (when ``dim`` is not given), or the dimension is 0;
- an embedding holds a null, NaN or infinite value.

``rectool.retrieval.formats.open_embeddings`` (``hnsw build``, ``retrieve --method brute``)
streams embedding tables through it batch by batch; ``rectool.tree.build.cluster_tree``
(``tree cluster``) decodes the item table's column in one go.

Example::

    col = pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32(), 2))
    vectors(col, np.array([7, 8]), "items/", "item_emb")   # [[1, 2], [3, 4]] float32
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rectool.errors import UserError


def is_list_of_floats(field_type: pa.DataType) -> bool:
    """Whether ``field_type`` can hold embeddings: a fixed-size or variable list of floats."""
    is_list = (pa.types.is_fixed_size_list(field_type) or pa.types.is_list(field_type)
               or pa.types.is_large_list(field_type))
    return is_list and pa.types.is_floating(field_type.value_type)


def list_size(field_type: pa.DataType, source: str, field: str) -> int | None:
    """The dimension a column type fixes: ``d`` for ``fixed_size_list<float>[d]``, None for a
    variable list of floats; a ``UserError`` for anything else."""
    if not is_list_of_floats(field_type):
        raise UserError(f"{source}: --embedding-field {field} is {field_type}; expected fixed_size_list<float32>[d] "
                        "or list<float>")
    return int(field_type.list_size) if pa.types.is_fixed_size_list(field_type) else None


def vectors(column: pa.Array | pa.ChunkedArray, ids: np.ndarray, source: str, field: str, *,
            dim: int | None = None, first_row: int = 0) -> np.ndarray:
    """float32 [rows, d] from an embedding column, every check of the module docstring applied.

    ``ids`` are the rows' item ids (named in errors, with the row number ``first_row + i``);
    ``dim`` is the table's dimension when known (a batch of a larger table), else row 0's.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    size = list_size(column.type, source, field)
    if column.null_count:
        i = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise UserError(f"{source}: --embedding-field {field} is null in row {first_row + i} (item {ids[i]}); "
                        "every item needs an embedding: drop the row or fill it")
    if dim is None:
        dim = 0 if len(column) == 0 else size if size is not None else int(pc.list_value_length(column)[0].as_py())
    if size is None or size != dim:
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if (wrong := np.flatnonzero(lengths != dim)).size:
            i = int(wrong[0])
            raise UserError(f"{source}: --embedding-field {field}: embedding dims differ: item {ids[i]} has "
                            f"{int(lengths[i])} values in row {first_row + i} but {dim} in row 0; all embeddings "
                            "need the same dimension")
    if dim == 0:
        raise UserError(f"{source}: --embedding-field {field} holds no embeddings (no rows, or lists of 0 values); "
                        "give embeddings written by rectool embed")
    flat = pc.list_flatten(column)
    if flat.null_count:
        i = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0]) // dim
        raise UserError(f"{source}: --embedding-field {field} holds a null value in row {first_row + i} "
                        f"(item {ids[i]}); fill the nulls inside the embeddings")
    matrix = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        i = int(np.argmin(finite))
        raise UserError(f"{source}: --embedding-field {field} holds NaN or inf in row {first_row + i}: item {ids[i]} "
                        "has a NaN or infinite value; fix the embeddings (e.g. re-run embed)")
    return np.ascontiguousarray(matrix)
