"""The tables retrieval reads and writes, defined once and used by every retrieval stage.

Embedding table (``rectool embed`` writes it; ``hnsw build`` and ``brute`` read it)
    ``item_id int64, item_emb fixed_size_list<float32>[d]`` + reserved attribute columns.
    ``list<float>`` columns of one length and other float widths are accepted too; the
    vectors are decoded and checked by ``rectool.embeddings`` (shared with ``tree cluster``).

Recall format (every retrieval method and baseline writes it; ``eval-topk`` reads it)
    ``user_id int64, item_ids list<int64>, scores list<float32>`` (best first), optional
    ``n_scored int64`` (items the method scored for that user), then reserved columns
    copied from the user input. One row per user; ``_meta.json`` kind ``recalls``.

Truth table (what ``eval-topk`` compares with)
    ``user_id int64, item_ids list<int64>`` (the set of true items of a user), or the long
    form ``user_id int64, item_id int64`` with one row per pair. Rows of one user are
    merged and duplicates dropped. An item column named otherwise is named by
    ``item_column`` (``--truth-column``): a list column is the list form, else the long form.

In memory
    ``Ragged``     variable-length lists as CSR: row i is ``values[offsets[i]:offsets[i+1]]``.
    ``UserLists``  sorted unique user ids + one list each (``read_truth``, ``read_recalls``).
    ``TopK``       what every search function returns: (n, k) item ids (-1 padded), scores
                   (-inf padded), lengths, and optionally items scored per user.
    ``RecallWriter`` / ``write_recalls``  stream ``TopK`` batches into a recall dataset.
    ``open_embeddings``  validated, streaming access to an embedding table.

Example::

    topk = hnsw_search(index, user_emb, k=200, ef=400)          # rectool.retrieval.hnsw
    write_recalls("recalls/", user_ids, topk, inputs=["index/"], method="hnsw")
    truth = read_truth("truth/")                                 # UserLists
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from rectool.artifacts import PartWriter, atomic_dir, check_kind, open_dataset, require_columns, write_meta
from rectool.badinput import count_rows, guarded, read_table, reading
from rectool.embeddings import list_size, vectors
from rectool.errors import UserError

USER_ID = "user_id"
ITEM_ID = "item_id"
ITEM_IDS = "item_ids"
ITEM_EMB = "item_emb"
SCORES = "scores"
N_SCORED = "n_scored"

RECALLS_KIND = "recalls"
INDEX_KIND = "hnsw_index"
GRAPH_KIND = "hnsw_graph"
METRICS_KIND = "topk_metrics"

ID_LIST = pa.list_(pa.int64())
SCORE_LIST = pa.list_(pa.float32())


def embedding_schema(dim: int, extra_fields: Sequence[pa.Field] = ()) -> pa.Schema:
    """``item_id int64, item_emb fixed_size_list<float32>[dim]`` + reserved columns."""
    return pa.schema([pa.field(ITEM_ID, pa.int64()), pa.field(ITEM_EMB, pa.list_(pa.float32(), dim)),
                      *extra_fields])


def recall_schema(extra_fields: Sequence[pa.Field] = (), n_scored: bool = False) -> pa.Schema:
    """``user_id, item_ids, scores`` [+ ``n_scored``] + reserved columns."""
    fields = [pa.field(USER_ID, pa.int64()), pa.field(ITEM_IDS, ID_LIST), pa.field(SCORES, SCORE_LIST)]
    if n_scored:
        fields.append(pa.field(N_SCORED, pa.int64()))
    return pa.schema(fields + list(extra_fields))


# ----------------------------------------------------------------------------- in-memory forms


@dataclass(frozen=True)
class Ragged:
    """Variable-length lists as CSR arrays.

    ``Ragged.from_lists([[3, 1], [], [7]])`` has ``offsets [0, 2, 2, 3]`` and ``values [3, 1, 7]``.
    """

    offsets: np.ndarray  # int64, len n + 1, offsets[0] == 0
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[Any]], dtype: Any = np.int64) -> Ragged:
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter((v for x in lists for v in x), dtype=dtype, count=int(offsets[-1]))
        return cls(offsets, values)

    @classmethod
    def from_lengths(cls, lengths: np.ndarray, values: np.ndarray) -> Ragged:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(offsets, values)

    def slice(self, start: int, stop: int) -> Ragged:
        """Rows ``start:stop`` as their own ``Ragged`` (offsets from 0)."""
        a, b = self.offsets[start], self.offsets[stop]
        return Ragged(self.offsets[start:stop + 1] - a, self.values[a:b])

    def to_lists(self) -> list[list[Any]]:
        return [self.row(i).tolist() for i in range(len(self))]

    def take(self, rows: np.ndarray) -> Ragged:
        """The lists of ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.lengths()[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # position p of the output reads values[starts[row(p)] + (p - offsets[row(p)])]
        index = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], lengths)
        return Ragged(offsets, self.values[index])

    def to_arrow(self, type: pa.DataType = ID_LIST) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32 if self.offsets[-1] < 2**31 else
                                                                     np.int64)),
                                        pa.array(self.values, type=type.value_type), type=type)


@dataclass(frozen=True)
class UserLists:
    """Sorted, unique ``user_ids`` and one list per user (``lists.row(i)`` belongs to ``user_ids[i]``)."""

    user_ids: np.ndarray  # int64, sorted, unique
    lists: Ragged
    n_scored: np.ndarray | None = None  # recall files only: items scored per user

    def __len__(self) -> int:
        return len(self.user_ids)

    def rows_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id, -1 where the user is absent."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(self.user_ids) == 0:
            return np.full(len(user_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.user_ids, user_ids), len(self.user_ids) - 1)
        return np.where(self.user_ids[pos] == user_ids, pos, -1).astype(np.int64)


@dataclass(frozen=True)
class TopK:
    """Top-K per user: what ``hnsw_search``, ``brute_*`` and ``nann_search`` return.

    ``item_ids[u, :lengths[u]]`` are user u's items best first (-1 after), ``scores`` the
    same shape (-inf after); ``n_scored[u]`` the items scored for u (None when not counted).
    """

    item_ids: np.ndarray  # (n, k) int64
    scores: np.ndarray  # (n, k) float32
    lengths: np.ndarray  # (n,) int64
    n_scored: np.ndarray | None = None  # (n,) int64

    def __len__(self) -> int:
        return len(self.lengths)

    def items(self) -> Ragged:
        mask = np.arange(self.item_ids.shape[1]) < self.lengths[:, None]
        return Ragged.from_lengths(self.lengths, self.item_ids[mask])

    def score_lists(self) -> Ragged:
        mask = np.arange(self.scores.shape[1]) < self.lengths[:, None]
        return Ragged.from_lengths(self.lengths, self.scores[mask].astype(np.float32, copy=False))

    def to_arrow(self, user_ids: np.ndarray, extra: Mapping[str, pa.Array] | None = None,
                 schema: pa.Schema | None = None) -> pa.RecordBatch:
        """One recall-format batch: ``user_id, item_ids, scores`` [+ ``n_scored``] + ``extra``."""
        if len(user_ids) != len(self):
            raise ValueError(f"{len(user_ids)} user ids for {len(self)} result rows")
        columns: dict[str, pa.Array] = {
            USER_ID: pa.array(np.asarray(user_ids, dtype=np.int64)),
            ITEM_IDS: self.items().to_arrow(ID_LIST),
            SCORES: self.score_lists().to_arrow(SCORE_LIST),
        }
        if self.n_scored is not None:
            columns[N_SCORED] = pa.array(np.asarray(self.n_scored, dtype=np.int64))
        columns.update(extra or {})
        batch = pa.RecordBatch.from_pydict(columns)
        return batch if schema is None else batch.select(schema.names).cast(schema)


class IdMap:
    """Item ids <-> dense rows (index labels, graph nodes, embedding rows).

    ``IdMap(np.array([30, 10, 20])).rows(np.array([20, 99]))`` -> ``[2, -1]``.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Row of each item id, -1 for ids not in the map."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(len(item_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, item_ids), len(self.ids) - 1)
        return np.where(self._sorted[pos] == item_ids, self._order[pos], -1).astype(np.int64)

    def rows_ragged(self, lists: Ragged) -> Ragged:
        """Each list's items as sorted rows, unknown ids dropped (for exclusion kernels)."""
        from rectool.retrieval.kernels import sort_rows

        rows = self.rows(lists.values)
        known = rows >= 0
        running = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(known, out=running[1:])
        kept = running[lists.offsets[1:]] - running[lists.offsets[:-1]]
        out = Ragged.from_lengths(kept, rows[known])
        return Ragged(out.offsets, sort_rows(out.offsets, out.values))


def no_exclusion(n: int) -> Ragged:
    return Ragged(np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))


def union_topk(parts: Sequence[TopK], k: int) -> TopK:
    """Per user, the best ``k`` of the union of several results (e.g. one per MIND interest):
    an item found more than once keeps its best score; ``n_scored`` adds up."""
    from rectool.retrieval.kernels import union_rows

    if not parts:
        raise ValueError("union_topk needs at least one result")
    ids = np.concatenate([p.item_ids for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1).astype(np.float32, copy=False)
    out_ids, out_scores, lengths = union_rows(ids, scores, k)
    counted = [p.n_scored for p in parts if p.n_scored is not None]
    return TopK(out_ids, out_scores, lengths, np.sum(counted, axis=0) if counted else None)


def empty_topk(n: int, k: int, count_scored: bool = False) -> TopK:
    return TopK(np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32),
                np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64) if count_scored else None)


# ----------------------------------------------------------------------------- writing recalls


class RecallWriter:
    """Streams ``TopK`` batches into ``directory`` as recall-format parquet parts.

        with atomic_dir(out) as tmp, RecallWriter(tmp, n_scored=True) as w:
            for users, topk in batches:
                w.write(users, topk)
            write_meta(tmp, kind=RECALLS_KIND, rows=w.rows, schema=w.schema)
    """

    def __init__(self, directory: Path, n_scored: bool = False, extra_fields: Sequence[pa.Field] = ()) -> None:
        self.schema = recall_schema(extra_fields, n_scored)
        self._parts = PartWriter(directory, self.schema)

    @property
    def rows(self) -> int:
        return self._parts.rows

    def write(self, user_ids: np.ndarray, topk: TopK, extra: Mapping[str, pa.Array] | None = None) -> None:
        if (N_SCORED in self.schema.names) != (topk.n_scored is not None):
            raise ValueError("n_scored is given for some batches only")
        self._parts.write(topk.to_arrow(user_ids, extra, self.schema))

    def close(self) -> None:
        self._parts.close()

    def __enter__(self) -> RecallWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_recalls(output: str | os.PathLike[str], user_ids: np.ndarray, topk: TopK, *, overwrite: bool = False,
                  inputs: Sequence[Any] = (), extra: Mapping[str, pa.Array] | None = None,
                  **meta: Any) -> dict[str, Any]:
    """Write one ``TopK`` as a recall dataset with ``_meta.json`` (kind ``recalls``); returns a summary."""
    extra_fields = [pa.field(name, arr.type) for name, arr in (extra or {}).items()]
    with atomic_dir(output, overwrite) as tmp:
        with RecallWriter(tmp, n_scored=topk.n_scored is not None, extra_fields=extra_fields) as writer:
            writer.write(user_ids, topk, extra)
        summary = {"users": writer.rows, "mean_list_length": float(topk.lengths.mean()) if len(topk) else 0.0}
        if topk.n_scored is not None:
            summary["mean_items_scored"] = float(topk.n_scored.mean()) if len(topk) else 0.0
        write_meta(tmp, kind=RECALLS_KIND, inputs=inputs, rows=writer.rows, schema=writer.schema,
                   k=int(topk.item_ids.shape[1]), **summary, **meta)
    return summary


# ----------------------------------------------------------------------------- reading lists


def _list_column(column: pa.ChunkedArray, dtype: Any, source: str, field: str) -> Ragged:
    """A list column as ``Ragged`` (null lists become empty; null elements are an error)."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise UserError(f"{source}: column {field} is {column.type}, expected a list; write it as list<int64>")
    lengths, values = [], []
    for chunk in column.chunks:
        lens = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = chunk.flatten()
        if flat.null_count:
            raise UserError(f"{source}: column {field} holds null elements; drop them before evaluation")
        lengths.append(lens)
        values.append(flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False))
    lens = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    vals = np.concatenate(values) if values else np.zeros(0, dtype=dtype)
    return Ragged.from_lengths(lens, vals)


def int_column(column: pa.ChunkedArray, source: str, field: str) -> np.ndarray:
    if not pa.types.is_integer(column.type):
        raise UserError(f"{source}: column {field} is {column.type}, expected integer ids; hash string ids first "
                        "(rectool.hashing)")
    if column.null_count:
        raise UserError(f"{source}: column {field} has {column.null_count} null value(s); drop those rows")
    return column.to_numpy().astype(np.int64, copy=False)


def _group(users: np.ndarray, items: np.ndarray) -> UserLists:
    """Long-form pairs to sorted users with sorted, de-duplicated item sets."""
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    keep = np.ones(len(users), dtype=bool)
    keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    users, items = users[keep], items[keep]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, dtype=np.int64)
    offsets = np.append(starts, len(users)).astype(np.int64)
    return UserLists(users[starts], Ragged(offsets, items))


# list columns that hold a user's items, in order of preference: a truth table, then the
# test inputs of a next-item dataset (every input item, then the model's history window)
LIST_COLUMNS = (ITEM_IDS, "seen_item_ids", "hist_item_ids")


def read_user_lists(path: str | os.PathLike[str], what: str = "--truth-path", item_column: str | None = None,
                    column_flag: str = "--truth-column") -> UserLists:
    """A table of item sets per user, in list form (``user_id, item_ids``; also ``seen_item_ids`` or
    ``hist_item_ids`` of next-item test inputs) or long form (``user_id, item_id``: events, pairs):
    users sorted, each set sorted and de-duplicated.

    ``item_column`` names the items' column when the table names it otherwise (``adgroup_ids``,
    ``clicked``): a list column is the list form, an integer column the long form."""
    ds = open_dataset(path, what)
    source = f"{what} {os.fspath(path)}"
    names = ds.schema.names
    require_columns(ds.schema, [USER_ID], source, f"a truth table has {USER_ID} and {ITEM_IDS} (or {ITEM_ID})")
    if item_column is not None:
        return _named_lists(ds, source, item_column, column_flag)
    list_column = next((c for c in LIST_COLUMNS if c in names), None)
    if list_column is not None:
        table = read_table(ds, source, columns=[USER_ID, list_column])
        users = int_column(table[USER_ID], source, USER_ID)
        lists = _list_column(table[list_column], np.int64, source, list_column)
        return _group(np.repeat(users, lists.lengths()), lists.values) if len(users) else \
            UserLists(np.zeros(0, np.int64), Ragged(np.zeros(1, np.int64), np.zeros(0, np.int64)))
    if ITEM_ID in names:
        table = read_table(ds, source, columns=[USER_ID, ITEM_ID])
        return _group(int_column(table[USER_ID], source, USER_ID), int_column(table[ITEM_ID], source, ITEM_ID))
    raise UserError(f"{source}: missing column {ITEM_IDS} (list form) or {ITEM_ID} (long form); it has "
                    f"{', '.join(names)}")


def _named_lists(ds: pads.Dataset, source: str, column: str, flag: str) -> UserLists:
    """The item sets of the column ``column``: list form when it holds lists, else long form."""
    if column == USER_ID or column not in ds.schema.names:
        raise UserError(f"{source}: {flag} {column}: no such item column; it has {', '.join(ds.schema.names)}")
    table = read_table(ds, source, columns=[USER_ID, column])
    users = int_column(table[USER_ID], source, USER_ID)
    if pa.types.is_list(table[column].type) or pa.types.is_large_list(table[column].type):
        lists = _list_column(table[column], np.int64, source, column)
        return _group(np.repeat(users, lists.lengths()), lists.values)
    return _group(users, int_column(table[column], source, column))


def read_truth(path: str | os.PathLike[str], what: str = "--truth-path", item_column: str | None = None) -> UserLists:
    """The truth table (list or long form) as sorted users with sorted item sets; ``item_column``
    names its item column (list or long form) when it is not ``item_ids``/``item_id``."""
    return read_user_lists(path, what, item_column)


def read_recalls(path: str | os.PathLike[str], what: str = "--recall-path") -> UserLists:
    """A recall dataset: users sorted, each list kept in its ranked order.

    Refuses a user listed twice and a list that repeats an item (they would count twice).
    """
    from rectool.retrieval.kernels import first_duplicate_in_rows

    check_kind(path, RECALLS_KIND, what)
    ds = open_dataset(path, what)
    source = f"{what} {os.fspath(path)}"
    require_columns(ds.schema, [USER_ID, ITEM_IDS], source,
                    f"a recall file has {USER_ID}, {ITEM_IDS}, {SCORES}; write it with a retrieval command")
    columns = [USER_ID, ITEM_IDS] + ([N_SCORED] if N_SCORED in ds.schema.names else [])
    table = read_table(ds, source, columns=columns)
    users = int_column(table[USER_ID], source, USER_ID)
    lists = _list_column(table[ITEM_IDS], np.int64, source, ITEM_IDS)
    n_scored = int_column(table[N_SCORED], source, N_SCORED) if N_SCORED in columns else None
    order = np.argsort(users, kind="stable")
    users = users[order]
    if len(users) > 1 and (dup := np.flatnonzero(users[1:] == users[:-1])).size:
        raise UserError(f"{source}: user {users[dup[0] + 1]} has {np.sum(users == users[dup[0] + 1])} rows; a recall "
                        "file has one row per user")
    lists = lists.take(order)
    row = first_duplicate_in_rows(lists.offsets, lists.values)
    if row >= 0:
        raise UserError(f"{source}: the list of user {users[row]} repeats an item; each item may appear once per user")
    return UserLists(users, lists, None if n_scored is None else n_scored[order])


# ----------------------------------------------------------------------------- embedding tables


@dataclass(frozen=True)
class EmbeddingSource:
    """A validated embedding table; ``batches()`` streams ``(ids int64 (b,), vectors float32 (b, d))``."""

    path: str
    dataset: pads.Dataset
    embedding_field: str
    id_field: str
    dim: int
    rows: int

    def batches(self, batch_size: int = 65_536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        source = f"--input {self.path}"
        columns = [self.id_field, self.embedding_field]
        row = 0  # of the whole table, for error messages
        for fragment in self.dataset.get_fragments():
            for batch in guarded(lambda f=fragment: f.to_batches(columns=columns, batch_size=batch_size),
                                 (source, [fragment.path])):
                if batch.num_rows == 0:
                    continue
                ids = int_column(pa.chunked_array([batch.column(0)]), source, self.id_field)
                yield ids, vectors(batch.column(1), ids, source, self.embedding_field, dim=self.dim, first_row=row)
                row += batch.num_rows


def open_embeddings(path: str | os.PathLike[str], embedding_field: str = ITEM_EMB,
                    id_field: str = ITEM_ID) -> EmbeddingSource:
    """Open an embedding table and check it: columns present, float vectors, one dimension throughout
    (each file's type and first row here; every row by ``rectool.embeddings.vectors`` as it streams)."""
    ds = open_dataset(path, "--input")
    source = f"--input {os.fspath(path)}"
    require_columns(ds.schema, [id_field, embedding_field], source,
                    f"an embedding table has {id_field} and {embedding_field} (see --id-field, --embedding-field); "
                    f"it has {', '.join(ds.schema.names)}")
    dim: int | None = None
    first_file = ""
    for fragment in ds.get_fragments():
        with reading((source, [fragment.path])):  # the footer of every file, the first rows of some
            field_type = fragment.physical_schema.field(embedding_field).type
        size = list_size(field_type, source, embedding_field)
        if size is None:  # variable lists: the first row gives the dimension
            with reading((source, [fragment.path])):
                first = fragment.head(1, columns=[embedding_field]).column(0)
            length = pc.list_value_length(first)[0].as_py() if len(first) else None  # None: no row, or null
            size = None if length is None else int(length)
        if size is None:
            continue
        if dim is None:
            dim, first_file = size, fragment.path
        elif size != dim:
            raise UserError(f"{source}: --embedding-field {embedding_field}: embedding dims differ: {fragment.path} "
                            f"has {size}, {first_file} has {dim}; embed all items with one model")
    if dim is None or dim == 0:
        raise UserError(f"{source}: --embedding-field {embedding_field}: the table holds no embedding; give a "
                        "non-empty table written by rectool embed")
    return EmbeddingSource(os.fspath(path), ds, embedding_field, id_field, dim, count_rows(ds, source))
