"""``rectool hnsw build`` and search: an hnswlib index over an embedding table.

Inputs
    An embedding table (``rectool.retrieval.formats``): ``item_id int64,
    item_emb fixed_size_list<float32>[d]`` (+ reserved columns, ignored here); column
    names are flags. Streamed in batches; ids are checked for duplicates first.

Outputs (``--output DIR``)
    ``index.bin``   hnswlib's own file (``hnswlib.Index.load_index`` reads it)
    ``ids.npy``     int64 (N,): the item id of each hnswlib label; labels are the dense
                    row numbers 0..N-1, in input order (old items first after ``--add-to``)
    ``_meta.json``  kind ``hnsw_index``: space, dim, M, ef_construction, count, seed,
                    id_field, embedding_field, added, base (the ``--add-to`` index)

    ``--add-to OLD`` loads OLD, adds the new items and writes a new directory with old +
    new items (OLD is untouched; the same path with ``--overwrite`` replaces it
    atomically). Space, M and efConstruction come from OLD.

Search
    ``hnsw_search(index, queries, k, ef)`` returns a ``TopK`` of item ids with scores
    ``score = 1 - distance`` for ``ip`` and ``cosine`` (the inner product / cosine) and
    ``-distance`` for ``l2`` (minus the squared distance): higher is better everywhere.
    ``exclude`` (item ids per query, e.g. the user's history) over-fetches k + |exclude|
    and filters.

Example::

    rectool hnsw build --input data/item_emb --space ip --m 32 --ef-construction 200 --output data/index
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from rectool import console
from rectool.artifacts import atomic_dir, check_kind, write_meta
from rectool.badinput import read_table
from rectool.errors import UserError
from rectool.retrieval.choices import Space
from rectool.retrieval.formats import (
    INDEX_KIND,
    ITEM_EMB,
    ITEM_ID,
    IdMap,
    Ragged,
    TopK,
    int_column,
    open_embeddings,
)
from rectool.retrieval.graph import IDS_FILE, INDEX_FILE

SPACES: tuple[str, ...] = get_args(Space)


@dataclass
class HnswIndex:
    """A loaded index: the hnswlib object, the label -> item id map and ``_meta.json``."""

    index: Any  # hnswlib.Index
    ids: np.ndarray
    meta: dict[str, Any]
    where: str = "the index"  # how messages name it: "--index out/index"

    @property
    def space(self) -> str:
        return str(self.meta["space"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def count(self) -> int:
        return len(self.ids)


def load_index(path: str | os.PathLike[str], max_elements: int = 0, threads: int = 0,
               what: str = "--index") -> HnswIndex:
    """Load a ``hnsw build`` directory; ``max_elements`` > count leaves room to add items."""
    import hnswlib

    directory = Path(os.fspath(path))
    meta = check_kind(directory, INDEX_KIND, what)
    if meta is None or not (directory / INDEX_FILE).is_file() or not (directory / IDS_FILE).is_file():
        raise UserError(f"{what} {directory}: not an index written by rectool hnsw build (needs {INDEX_FILE}, "
                        f"{IDS_FILE} and _meta.json)")
    ids = np.load(directory / IDS_FILE).astype(np.int64, copy=False)
    index = hnswlib.Index(space=meta["space"], dim=int(meta["dim"]))
    try:
        index.load_index(str(directory / INDEX_FILE), max_elements=max(max_elements, len(ids)))
    except RuntimeError as exc:
        raise UserError(f"{what} {directory}: hnswlib cannot read {INDEX_FILE} ({exc}); rebuild the index") from exc
    if index.get_current_count() != len(ids):
        raise UserError(f"{what} {directory}: {IDS_FILE} has {len(ids)} ids, the index {index.get_current_count()} "
                        "items; rebuild the index")
    index.set_num_threads(threads if threads > 0 else -1)
    return HnswIndex(index, ids, meta, f"{what} {directory}")


def _check_new_ids(new_ids: np.ndarray, old_ids: np.ndarray, source: str) -> None:
    both = np.concatenate([old_ids, new_ids])
    order = np.argsort(both, kind="stable")
    ordered = both[order]
    dup = np.flatnonzero(ordered[1:] == ordered[:-1])
    if dup.size:
        item = int(ordered[dup[0]])
        if order[dup[0]] < len(old_ids):
            raise UserError(f"{source}: item {item} is already in the --add-to index; give only new items")
        raise UserError(f"{source}: item {item} appears more than once; de-duplicate the embedding table")


def build_index(input: str | os.PathLike[str], output: str | os.PathLike[str], *,
                embedding_field: str = ITEM_EMB, id_field: str = ITEM_ID, space: Space | None = None,
                m: int | None = None, ef_construction: int | None = None, threads: int = 0,
                add_to: str | os.PathLike[str] | None = None, overwrite: bool = False,
                batch_size: int = 65_536, seed: int = 100) -> dict[str, Any]:
    """Build (or extend, with ``add_to``) an hnswlib index; returns the summary figures.

    Defaults for a new index: space ``ip``, M 16, efConstruction 200. With ``add_to`` they
    come from the existing index, and a different value given here is an error.
    """
    import hnswlib

    source = open_embeddings(input, embedding_field, id_field)
    where = f"--input {os.fspath(input)}"
    if source.rows == 0:
        raise UserError(f"{where}: the table has no rows; nothing to index")
    old: HnswIndex | None = None
    if add_to is not None:
        old = load_index(add_to, max_elements=0, what="--add-to")
        given = {"--space": (space, old.space), "--m": (m, old.meta.get("M")),
                 "--ef-construction": (ef_construction, old.meta.get("ef_construction"))}
        for flag, (value, existing) in given.items():
            if value is not None and value != existing:
                raise UserError(f"{flag} {value}: the --add-to index was built with {existing}; leave the flag out "
                                "or build a new index")
        if source.dim != old.dim:
            raise UserError(f"{where}: embedding dims differ: the table has {source.dim}, the --add-to index "
                            f"{old.dim}; embed the new items with the same model")
        space, m, ef_construction = old.space, int(old.meta["M"]), int(old.meta["ef_construction"])  # type: ignore
    # the defaults only where a value is missing: --m 0 is refused like --m 1, not read as "the default"
    space = space if space is not None else "ip"
    m = m if m is not None else 16
    ef_construction = ef_construction if ef_construction is not None else 200
    if space not in SPACES:
        raise UserError(f"--space {space}: choose ip, l2 or cosine")
    if m < 2:
        raise UserError(f"--m {m}: HNSW M (links per node) must be at least 2")
    if ef_construction < 1:
        raise UserError(f"--ef-construction {ef_construction}: give at least 1")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: give at least 1")
    old_ids = old.ids if old is not None else np.zeros(0, dtype=np.int64)
    new_ids = read_table(source.dataset, where, columns=[id_field])[id_field]
    _check_new_ids(int_column(new_ids, where, id_field), old_ids, where)

    total = len(old_ids) + source.rows
    if old is not None:
        index = old.index
        index.resize_index(total)
    else:
        index = hnswlib.Index(space=space, dim=source.dim)
        index.init_index(max_elements=total, ef_construction=ef_construction, M=m, random_seed=seed)
    n_threads = threads if threads > 0 else -1
    parts = [old_ids]
    label = len(old_ids)
    with console.Stopwatch() as watch, console.progress("hnsw build", total=source.rows) as bar:
        for ids, vectors in source.batches(batch_size):
            index.add_items(vectors, np.arange(label, label + len(ids), dtype=np.int64), num_threads=n_threads)
            parts.append(ids)
            label += len(ids)
            bar.advance(len(ids))
    all_ids = np.concatenate(parts)
    with atomic_dir(output, overwrite) as tmp:
        index.save_index(str(tmp / INDEX_FILE))
        np.save(tmp / IDS_FILE, all_ids)
        summary = {"items": int(len(all_ids)), "added": int(source.rows), "dim": source.dim, "space": space,
                   "M": m, "ef_construction": ef_construction, "build_s": round(watch.seconds, 2),
                   "items_per_s": round(source.rows / max(watch.seconds, 1e-9), 1)}
        write_meta(tmp, kind=INDEX_KIND, inputs=[input] + ([add_to] if add_to is not None else []),
                   rows=int(len(all_ids)), count=int(len(all_ids)), dim=source.dim, space=space, M=m,
                   ef_construction=ef_construction, seed=seed, id_field=id_field, embedding_field=embedding_field,
                   added=int(source.rows), base=os.fspath(add_to) if add_to is not None else None,
                   files=[INDEX_FILE, IDS_FILE])
    return summary


# ----------------------------------------------------------------------------- search


def distances_to_scores(space: str, distances: np.ndarray) -> np.ndarray:
    """hnswlib distances -> scores, higher is better: ``1 - d`` (ip, cosine), ``-d`` (l2)."""
    d = np.asarray(distances, dtype=np.float32)
    return -d if space == "l2" else np.float32(1.0) - d


def hnsw_search(index: HnswIndex, queries: np.ndarray, k: int, ef: int | None = None,
                exclude: Ragged | None = None, threads: int = 0, batch_size: int = 65_536) -> TopK:
    """Top-``k`` item ids per query row (``ef`` defaults to max(k, 10)); ``exclude[u]`` item
    ids are never returned for query u (the search over-fetches and filters)."""
    from rectool.retrieval.kernels import filter_rows

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.dim:
        raise UserError(f"{index.where}: the query embeddings have shape {queries.shape}, the index dimension is "
                        f"{index.dim}; use the user tower exported with the item tower of this index")
    if k < 1:
        raise UserError(f"k {k}: ask for at least one item")
    n = queries.shape[0]
    excl = IdMap(index.ids).rows_ragged(exclude) if exclude is not None else None
    if excl is not None and len(excl) != n:
        raise ValueError(f"{len(excl)} exclusion lists for {n} queries")
    k_out = min(k, index.count)
    item_ids = np.full((n, k_out), -1, dtype=np.int64)
    scores = np.full((n, k_out), -np.inf, dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    n_threads = threads if threads > 0 else -1
    # over-fetch k + |exclude| rounded up to a power of two: queries with similar needs share a call
    extra = excl.lengths() if excl is not None else np.zeros(n, dtype=np.int64)
    padded = np.where(extra > 0, 2 ** np.ceil(np.log2(np.maximum(extra, 1))).astype(np.int64), 0)
    fetch_of = np.minimum(index.count, k_out + padded)
    for fetch in np.unique(fetch_of):
        group = np.flatnonzero(fetch_of == fetch)
        index.index.set_ef(int(max(ef or 10, fetch)))
        for lo in range(0, len(group), batch_size):
            rows_q = group[lo:lo + batch_size]
            try:
                labels, dist = index.index.knn_query(queries[rows_q], k=int(fetch), num_threads=n_threads)
            except RuntimeError as exc:
                raise UserError(f"hnsw search found fewer than {fetch} items for some query ({exc}); raise --ef "
                                "or rebuild the index with a larger --m") from exc
            batch_scores = distances_to_scores(index.space, dist)
            labels = labels.astype(np.int64, copy=False)
            if not extra[rows_q].any():
                rows, sc, lens = labels, batch_scores, np.full(len(rows_q), k_out, np.int64)
            else:
                sub = excl.take(rows_q)  # type: ignore[union-attr]  # extra > 0 only with exclusions
                rows, sc, lens = filter_rows(labels, batch_scores, k_out, sub.offsets, sub.values)
            valid = np.arange(k_out) < lens[:, None]
            item_ids[rows_q] = np.where(valid, index.ids[np.maximum(rows[:, :k_out], 0)], -1)
            scores[rows_q] = np.where(valid, sc[:, :k_out], -np.inf)
            lengths[rows_q] = lens
    return TopK(item_ids, scores, lengths)

