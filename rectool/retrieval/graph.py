"""``rectool hnsw graph``: the HNSW graph of an index as compact CSR arrays (for NANN).

Choice: parse hnswlib's saved file, not its pickled state
    ``index.bin`` is read through ``np.memmap`` and decoded by numba kernels, so
    extraction never loads the index: memory is the output arrays plus pages the OS
    can drop. ``hnswlib.Index.__getstate__`` would copy the whole index (vectors
    included, ~0.5 GB for 1M x 64) into a Python tuple first. The pickled state is
    still the independent second reading the tests compare with.

hnswlib's file layout (``HierarchicalNSW::saveIndex``, 0.8.x; little-endian)
    header, 96 bytes: offsetLevel0, max_elements, cur_element_count,
    size_data_per_element, label_offset, offsetData (u64 each), maxlevel (i32),
    enterpoint_node (u32), maxM, maxM0, M (u64), mult (f64), ef_construction (u64);
    then ``cur_element_count`` level-0 records of ``size_data_per_element`` bytes:
    [u16 count, u8 flags (bit 0: deleted), u8 -][u32 neighbours x maxM0][vector][u64 label];
    then per element: u32 byte size of its upper levels (0 on level 0 only), and that
    many bytes: levels 1..L, each [u32 count][u32 neighbours x maxM].

Node ids
    Graph nodes are hnswlib *labels*, which ``hnsw build`` makes the dense row numbers
    of ``ids.npy`` (hnswlib's internal ids follow insertion order across threads and
    are renumbered away). So ``ids[node]`` is the item id of a node, for every level.

Outputs (``--output DIR``)
    ``ids.npy``               int64 (N,): item id of each node
    ``node_level.npy``        int8 (N,): top level of each node (a node is on levels 0..L)
    ``level{l}_indptr.npy``   int64 (N + 1,), ``level{l}_indices.npy`` int32: neighbours of
                              node v on level l are ``indices[indptr[v]:indptr[v + 1]]``
                              (empty for nodes below level l), for each ``--levels`` l
    ``enter_points.npy``      int32: the nodes on levels >= 2 (the items NANN scores first;
                              the nodes of the top level when the graph has fewer levels)
    ``_meta.json``            kind ``hnsw_graph``: levels, max_level, entry_point, count,
                              edges per level, M, maxM0, space, dim

Example::

    rectool hnsw graph --index data/index --output data/graph --levels 0,1
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rectool.artifacts import atomic_dir, check_kind, write_meta
from rectool.errors import UserError
from rectool.retrieval.formats import GRAPH_KIND, INDEX_KIND
from rectool.retrieval.kernels import level_csr, scan_link_lists

INDEX_FILE = "index.bin"
IDS_FILE = "ids.npy"
HEADER = np.dtype([
    ("offset_level0", "<u8"), ("max_elements", "<u8"), ("count", "<u8"), ("size_data_per_element", "<u8"),
    ("label_offset", "<u8"), ("offset_data", "<u8"), ("max_level", "<i4"), ("enterpoint_node", "<u4"),
    ("max_m", "<u8"), ("max_m0", "<u8"), ("m", "<u8"), ("mult", "<f8"), ("ef_construction", "<u8"),
])  # 96 bytes, packed


@dataclass(frozen=True)
class HnswGraph:
    """An HNSW graph over nodes 0..N-1 (``ids[node]`` = item id); CSR neighbours per level."""

    ids: np.ndarray  # int64 (N,)
    node_level: np.ndarray  # int8 (N,)
    indptr: dict[int, np.ndarray]  # level -> int64 (N + 1,)
    indices: dict[int, np.ndarray]  # level -> int32
    entry_point: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.ids)

    @property
    def max_level(self) -> int:
        return int(self.node_level.max()) if len(self.node_level) else 0

    def level_nodes(self, level: int) -> np.ndarray:
        """Nodes present on ``level`` (int32, ascending)."""
        return np.flatnonzero(self.node_level >= level).astype(np.int32)

    def enter_points(self) -> np.ndarray:
        """Nodes on levels >= 2; with fewer levels, the nodes of the top level."""
        return self.level_nodes(min(2, self.max_level))

    def neighbours(self, level: int, node: int) -> np.ndarray:
        if level not in self.indptr:
            raise KeyError(f"level {level} was not extracted; extract it with --levels")
        ptr = self.indptr[level]
        return self.indices[level][ptr[node]:ptr[node + 1]]


# ----------------------------------------------------------------------------- extraction


def check_levels(levels: Sequence[int]) -> list[int]:
    """The levels to extract, sorted and distinct; a one-line error unless there is one or more, each >= 0."""
    parsed = [int(x) for x in levels]
    if not parsed or min(parsed) < 0:
        raise UserError(f"--levels {','.join(map(str, parsed))}: give one or more levels >= 0, e.g. 0,1")
    return sorted(set(parsed))


def extract_graph(index_dir: str | os.PathLike[str], levels: Sequence[int] = (0, 1)) -> HnswGraph:
    """Read the graph of a ``hnsw build`` index directory (see the module docstring)."""
    wanted = check_levels(levels)
    directory = Path(os.fspath(index_dir))
    meta = check_kind(directory, INDEX_KIND, "--index")
    path, ids_path = directory / INDEX_FILE, directory / IDS_FILE
    if meta is None or not path.is_file() or not ids_path.is_file():
        raise UserError(f"--index {directory}: not an index written by rectool hnsw build (needs {INDEX_FILE}, "
                        f"{IDS_FILE} and _meta.json)")
    buf = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))
    if buf.shape[0] < HEADER.itemsize:
        raise UserError(f"--index {directory}: {INDEX_FILE} is truncated; rebuild the index")
    head = buf[:HEADER.itemsize].view(HEADER)[0]
    n, record = int(head["count"]), int(head["size_data_per_element"])
    max_m, max_m0 = int(head["max_m"]), int(head["max_m0"])
    dim = int(meta.get("dim", -1))
    expected_record = 4 + 4 * max_m0 + 4 * dim + 8
    if int(head["offset_level0"]) != 0 or record != expected_record or int(head["label_offset"]) != record - 8:
        raise UserError(f"--index {directory}: {INDEX_FILE} does not have hnswlib 0.8's layout for dim {dim}; "
                        "rebuild the index with this rectool")
    level0_start = HEADER.itemsize
    links_start = level0_start + n * record
    size_links = 4 + 4 * max_m
    block, node_level_internal, end = scan_link_lists(buf, links_start, n, size_links)
    if end != buf.shape[0]:
        raise UserError(f"--index {directory}: {INDEX_FILE} is truncated or not an hnswlib 0.8 index; rebuild it")
    level0 = buf[level0_start:links_start].reshape(n, record)
    labels = np.ascontiguousarray(level0[:, record - 8:]).view("<u8").ravel().astype(np.int64)
    if n and (labels.max() >= n or labels.min() < 0 or np.bincount(labels, minlength=n).max() != 1):
        raise UserError(f"--index {directory}: labels are not the row numbers 0..{n - 1}; build the index with "
                        "rectool hnsw build")
    ids = np.load(ids_path)
    if len(ids) != n:
        raise UserError(f"--index {directory}: {IDS_FILE} has {len(ids)} ids for {n} items; rebuild the index")
    node_level = np.empty(n, dtype=np.int8)
    node_level[labels] = node_level_internal
    indptr: dict[int, np.ndarray] = {}
    indices: dict[int, np.ndarray] = {}
    for level in wanted:
        if level == 0:
            list_pos = level0_start + np.arange(n, dtype=np.int64) * record
        else:
            list_pos = np.where(node_level_internal >= level, block + (level - 1) * size_links, -1)
        indptr[level], indices[level], bad = level_csr(buf, list_pos, labels)
        if bad >= 0:
            raise UserError(f"--index {directory}: level {level} links to node {bad} of {n}; the file is corrupt, "
                            "rebuild the index")
    info = {"space": meta.get("space"), "dim": dim, "M": int(head["m"]), "max_m0": max_m0,
            "ef_construction": int(head["ef_construction"]), "count": n}
    entry = int(labels[int(head["enterpoint_node"])]) if n else -1
    return HnswGraph(ids.astype(np.int64), node_level, indptr, indices, entry, info)


# ----------------------------------------------------------------------------- files


def write_graph(graph: HnswGraph, output: str | os.PathLike[str], overwrite: bool = False,
                inputs: Sequence[Any] = ()) -> dict[str, Any]:
    """Write a graph as ``.npy`` arrays + ``_meta.json``; returns the summary figures."""
    levels = sorted(graph.indptr)
    enter = graph.enter_points()
    summary: dict[str, Any] = {"nodes": graph.n_nodes, "max_level": graph.max_level, "levels": levels,
                               "enter_points": len(enter)}
    for level in levels:
        summary[f"edges_level{level}"] = int(graph.indptr[level][-1])
    for level in range(graph.max_level + 1):
        summary[f"nodes_level{level}"] = int(np.sum(graph.node_level >= level))
    with atomic_dir(output, overwrite) as tmp:
        np.save(tmp / IDS_FILE, graph.ids)
        np.save(tmp / "node_level.npy", graph.node_level)
        np.save(tmp / "enter_points.npy", enter)
        for level in levels:
            np.save(tmp / f"level{level}_indptr.npy", graph.indptr[level])
            np.save(tmp / f"level{level}_indices.npy", graph.indices[level])
        write_meta(tmp, kind=GRAPH_KIND, inputs=inputs, rows=graph.n_nodes, entry_point=graph.entry_point,
                   **graph.meta, **{k: v for k, v in summary.items() if k != "nodes"})
    return summary


def load_graph(path: str | os.PathLike[str], mmap: bool = True) -> HnswGraph:
    """A graph written by ``rectool hnsw graph`` (arrays memory-mapped unless ``mmap=False``)."""
    directory = Path(os.fspath(path))
    meta = check_kind(directory, GRAPH_KIND, "--graph")
    if meta is None:
        raise UserError(f"--graph {directory}: no _meta.json; give a directory written by rectool hnsw graph")
    mode = "r" if mmap else None
    try:
        levels = [int(x) for x in meta["levels"]]
        ids = np.load(directory / IDS_FILE, mmap_mode=mode)
        node_level = np.load(directory / "node_level.npy", mmap_mode=mode)
        indptr = {lv: np.load(directory / f"level{lv}_indptr.npy", mmap_mode=mode) for lv in levels}
        indices = {lv: np.load(directory / f"level{lv}_indices.npy", mmap_mode=mode) for lv in levels}
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"--graph {directory}: incomplete graph directory ({exc}); write it again with "
                        "rectool hnsw graph") from exc
    info = {k: meta.get(k) for k in ("space", "dim", "M", "max_m0", "ef_construction", "count")}
    return HnswGraph(ids, node_level, indptr, indices, int(meta["entry_point"]), info)


def graph_from_index(index_dir: str | os.PathLike[str], output: str | os.PathLike[str],
                     levels: Sequence[int] = (0, 1), overwrite: bool = False) -> dict[str, Any]:
    """``rectool hnsw graph``: extract and write; returns the summary figures."""
    graph = extract_graph(index_dir, levels)
    return write_graph(graph, output, overwrite, inputs=[index_dir])

