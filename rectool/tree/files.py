"""TorchEasyRec-compatible tree files: writers, and a reader for ``serving_tree``.

All text files are UTF-8, ``\\n``-terminated, in level order (root first, then each
level left to right, i.e. by ascending code):

``node_table.txt``
    header ``id:int64<TAB>weight:float<TAB>feature:string``; first row
    ``-1<TAB>1.0<TAB>-1,<root id>[,<root attrs>]`` (graph-learn's entry to the root); then
    per node ``<id><TAB>1.0<TAB><level>,<id>[,<attrs>,...][,<raw attrs>,...]`` (the values of
    each group joined by the attribute delimiter, ``,`` unless ``--attr-delimiter`` says otherwise).
``edge_table.txt``
    header ``src_id:int64<TAB>dst_id:int64<TAB>weight:float``; per leaf (level order), one
    row ``<leaf id><TAB><ancestor id><TAB>1.0`` per ancestor except the root, nearest first.
``predict_edge_table.txt``
    same header; ``-1<TAB><root id><TAB>1.0``, then ``<parent id><TAB><child id><TAB>1.0``
    for every non-root node.
``serving_tree``
    ``<levels> <n_cluster>``, then ``<code> <node id>`` per node.
``node_feature/part-0.parquet``
    one row per node: ``<item id field> int64`` (node id) and the attribute columns.

Example: 2 items 10, 11, binary tree -> ``serving_tree`` is ``2 2\\n0 12\\n1 11\\n2 10\\n``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rectool.artifacts import write_parquet
from rectool.errors import UserError
from rectool.tree.structure import Tree, assemble

NODE_HEADER = "id:int64\tweight:float\tfeature:string\n"
EDGE_HEADER = "src_id:int64\tdst_id:int64\tweight:float\n"
TABLE_FILES = ("node_table.txt", "edge_table.txt", "predict_edge_table.txt", "node_feature")
SERVING_TREE = "serving_tree"
_EDGE_CHUNK = 1 << 18


def _write_rows(fh, columns: dict[str, pa.Array], delimiter: str = "\t") -> None:
    options = pacsv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none")
    pacsv.write_csv(pa.table(columns), fh, options)


def _ones(n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int8)), pa.array(["1.0"]))


def write_node_table(tree: Tree, features: pa.Array | None, path: Path) -> None:
    """``features``: per node the attribute part of the feature column (None: no attributes)."""
    ids = pa.array(tree.node_ids)
    head = pc.binary_join_element_wise(pc.cast(pa.array(tree.levels), pa.string()), pc.cast(ids, pa.string()), ",")
    feature = head if features is None else pc.binary_join_element_wise(head, features, ",")
    root_feature = "-1," + feature[0].as_py().split(",", 1)[1]
    with open(path, "wb") as fh:
        fh.write(NODE_HEADER.encode())
        fh.write(f"-1\t1.0\t{root_feature}\n".encode())
        _write_rows(fh, {"id": ids, "w": _ones(tree.num_nodes), "f": feature})


def write_edge_table(tree: Tree, path: Path) -> None:
    levels = tree.num_levels
    with open(path, "wb") as fh:
        fh.write(EDGE_HEADER.encode())
        if levels < 3:  # only the root above the leaves
            return
        for a in range(tree.leaf_start, tree.num_nodes, _EDGE_CHUNK):
            leaves = np.arange(a, min(a + _EDGE_CHUNK, tree.num_nodes), dtype=np.int64)
            path_idx = tree.ancestors(leaves)[:, levels - 2:0:-1]  # parent first, root excluded
            src = np.repeat(tree.node_ids[leaves], levels - 2)
            dst = tree.node_ids[path_idx.ravel()]
            _write_rows(fh, {"s": pa.array(src), "d": pa.array(dst), "w": _ones(src.size)})


def write_predict_edge_table(tree: Tree, path: Path) -> None:
    with open(path, "wb") as fh:
        fh.write(EDGE_HEADER.encode())
        fh.write(f"-1\t{tree.node_ids[0]}\t1.0\n".encode())
        _write_rows(fh, {"s": pa.array(tree.node_ids[tree.parents[1:]]), "d": pa.array(tree.node_ids[1:]),
                         "w": _ones(tree.num_nodes - 1)})


def write_serving_tree(tree: Tree, path: Path) -> None:
    with open(path, "wb") as fh:
        fh.write(f"{tree.num_levels} {tree.n_cluster}\n".encode())
        _write_rows(fh, {"c": pa.array(tree.codes), "i": pa.array(tree.node_ids)}, delimiter=" ")


def write_node_feature(table: pa.Table, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_parquet(table, directory / "part-0.parquet")


def write_tables(tree: Tree, node_table: pa.Table, features: pa.Array | None, directory: Path) -> None:
    """The four TorchEasyRec tables (``TABLE_FILES``) into ``directory``."""
    write_node_table(tree, features, directory / "node_table.txt")
    write_edge_table(tree, directory / "edge_table.txt")
    write_predict_edge_table(tree, directory / "predict_edge_table.txt")
    write_node_feature(node_table, directory / "node_feature")


def read_serving_tree(path: str | os.PathLike[str]) -> Tree:
    """A ``Tree`` from a TorchEasyRec ``serving_tree`` file (e.g. one TorchEasyRec wrote)."""
    p = Path(os.fspath(path))
    if p.is_dir():
        p = p / SERVING_TREE
    try:
        with open(p, "rb") as fh:
            first = fh.readline().split()
            body = pacsv.read_csv(fh, read_options=pacsv.ReadOptions(column_names=["code", "id"]),
                                  parse_options=pacsv.ParseOptions(delimiter=" "),
                                  convert_options=pacsv.ConvertOptions(column_types={"code": pa.int64(),
                                                                                     "id": pa.int64()}))
        n_cluster = int(first[1])
    except (OSError, IndexError, ValueError, pa.ArrowInvalid) as exc:
        raise UserError(f"{p}: not a serving_tree file ('<levels> <n_cluster>' then '<code> <id>' lines): "
                        f"{exc}") from exc
    try:
        tree = assemble(body["code"].to_numpy(), body["id"].to_numpy(), n_cluster)
    except ValueError as exc:
        raise UserError(f"{p}: the codes do not form a tree with all leaves on the last level ({exc})") from exc
    if tree.num_levels != int(first[0]):
        raise UserError(f"{p}: header says {int(first[0])} levels, the codes give {tree.num_levels}")
    return tree
