"""``tree init`` and ``tree cluster``: build a TDM tree from items and write every tree file.

Inputs
    A parquet item table, one row per item: ``item_id_field`` (int64; strings with
    ``hash_ids``), and ``cate_id_field`` (init) or ``embedding_field`` (cluster:
    ``fixed_size_list<float32>[d]`` or ``list<float>``), plus optional ``attr_fields``
    (categorical) and ``raw_attr_fields`` (numeric).

Trees
    init: items sorted by (category as text, nulls as "", then item id), as TorchEasyRec
    does, split recursively into ``n_cluster`` near-equal parts (``rectool.tree.kernels.init_codes``).
    cluster: balanced recursive k-means on the embeddings (``rectool.tree.kmeans``).
    Both then pull leaves to the last level (``rectool.tree.structure``).

Outputs
    ``tree_output_dir/``: ``compact/*.npy`` (compact arrays, ``load_tree``), ``serving_tree`` and
    ``_meta.json`` (kind ``tree``); ``node_edge_output_file/`` (the same directory unless
    another is given): ``node_table.txt``, ``edge_table.txt``, ``predict_edge_table.txt``,
    ``node_feature/part-0.parquet`` (formats in ``rectool.tree.files``). Both are written
    atomically.

Example::

    rectool tree init --item-input-path items/ --item-id-field item_id --cate-id-field category_id \\
        --attr-fields category_id --tree-output-dir tree/

``attr_delimiter`` (``--attr-delimiter``, default ``,``) joins the attribute values inside
the ``feature`` column of ``node_table.txt``, as TorchEasyRec's ``attr_delimiter``.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rectool import console
from rectool.artifacts import atomic_dir, write_meta
from rectool.embeddings import vectors
from rectool.errors import UserError
from rectool.tree import attrs as node_attrs
from rectool.tree import files
from rectool.tree.inputs import item_ids, read_items
from rectool.tree.kernels import init_codes
from rectool.tree.structure import Tree, tree_from_codes


def _check_common(n_cluster: int, tree_output_dir: str | os.PathLike[str],
                  node_edge_output_file: str | os.PathLike[str] | None, overwrite: bool) -> tuple[Path, Path]:
    if n_cluster < 2:
        raise UserError(f"--n-cluster {n_cluster}: a tree needs a branching factor of at least 2")
    tree_dir = Path(os.fspath(tree_output_dir))
    table_dir = Path(os.fspath(node_edge_output_file)) if node_edge_output_file else tree_dir
    a, b = tree_dir.resolve(), table_dir.resolve()
    if a != b and (a in b.parents or b in a.parents):
        raise UserError(f"--node-edge-output-file {table_dir} and --tree-output-dir {tree_dir}: one is inside the "
                        "other; give the same directory or two separate ones")
    for out in {tree_dir, table_dir}:
        if out.exists() and not overwrite:  # fail before the work, not after it
            raise UserError(f"output {out} already exists; pass --overwrite to replace it or choose another path")
    return tree_dir, table_dir


def _write(tree: Tree, items: pa.Table, row_leaf: np.ndarray, id_field: str, attr_fields: list[str],
           raw_attr_fields: list[str], tree_dir: Path, table_dir: Path, overwrite: bool,
           meta: dict[str, Any], attr_delimiter: str = ",") -> dict[str, float]:
    t0 = time.perf_counter()
    node_table = node_attrs.node_attribute_table(tree, items, row_leaf - tree.leaf_start, id_field, attr_fields,
                                                 raw_attr_fields)
    features = node_attrs.feature_strings(node_table, attr_fields, raw_attr_fields, attr_delimiter)
    t1 = time.perf_counter()
    rows = {"items": tree.num_leaves, "nodes": tree.num_nodes}
    same = tree_dir.resolve() == table_dir.resolve()
    with contextlib.ExitStack() as stack:
        tmp_tree = stack.enter_context(atomic_dir(tree_dir, overwrite))
        tmp_tables = tmp_tree if same else stack.enter_context(atomic_dir(table_dir, overwrite))
        tree.save(tmp_tree)
        files.write_serving_tree(tree, tmp_tree / files.SERVING_TREE)
        console.log(f"writing node, edge and predict-edge tables to {table_dir}")
        files.write_tables(tree, node_table, features, tmp_tables)
        extra = dict(meta, n_cluster=tree.n_cluster, levels=tree.num_levels, level_sizes=tree.level_sizes.tolist(),
                     item_id_field=id_field, attr_fields=attr_fields, raw_attr_fields=raw_attr_fields,
                     attr_delimiter=attr_delimiter, tables_dir=os.fspath(table_dir))
        write_meta(tmp_tree, kind="tree", rows=rows, schema=node_table.schema, **extra)
        if not same:
            write_meta(tmp_tables, kind="tree-tables", rows=rows, schema=node_table.schema, **extra)
    return {"attrs_s": round(t1 - t0, 3), "write_s": round(time.perf_counter() - t1, 3)}


def _summary(tree: Tree, timings: dict[str, float]) -> dict[str, Any]:
    return {"items": tree.num_leaves, "nodes": tree.num_nodes, "levels": tree.num_levels,
            "n_cluster": tree.n_cluster, **timings}


def init_tree(item_input_path: str, item_id_field: str, cate_id_field: str,
              tree_output_dir: str | os.PathLike[str], node_edge_output_file: str | os.PathLike[str] | None = None,
              attr_fields: list[str] | None = None, raw_attr_fields: list[str] | None = None, n_cluster: int = 2,
              hash_ids: bool = False, overwrite: bool = False, attr_delimiter: str = ",") -> dict[str, Any]:
    """Build the initial tree (category order) and write it; returns summary figures.

    ``attr_delimiter`` joins the attribute values in ``node_table.txt`` (TorchEasyRec's
    ``attr_delimiter``, which its TDM sampler splits them on)."""
    attr_fields, raw_attr_fields = list(attr_fields or []), list(raw_attr_fields or [])
    node_attrs.check_attr_delimiter(attr_delimiter)
    tree_dir, table_dir = _check_common(n_cluster, tree_output_dir, node_edge_output_file, overwrite)
    t0 = time.perf_counter()
    items = read_items(item_input_path, [item_id_field, cate_id_field, *attr_fields, *raw_attr_fields])
    node_attrs.check_attr_types(items.schema, attr_fields, raw_attr_fields, item_input_path)
    node_attrs.check_attr_values(items, attr_fields, item_input_path, attr_delimiter)
    ids = item_ids(items, item_id_field, hash_ids, item_input_path)
    cate = items[cate_id_field].combine_chunks()
    if pa.types.is_dictionary(cate.type):
        cate = cate.dictionary_decode()
    try:
        cate_text = pc.cast(cate, pa.string()).fill_null("")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise UserError(f"{item_input_path}: --cate-id-field {cate_id_field} is {cate.type}; give a column of "
                        "integer or string categories") from exc
    t1 = time.perf_counter()
    order = pc.sort_indices(pa.table({"c": cate_text, "i": ids}), sort_keys=[("c", "ascending"),
                                                                              ("i", "ascending")]).to_numpy()
    codes = init_codes(ids.size, n_cluster)
    items, ids = items.take(pa.array(order)), ids[order]
    tree = tree_from_codes(ids, codes, n_cluster)
    t2 = time.perf_counter()
    console.log(f"initial tree: {tree.num_leaves:,} items, {tree.num_levels} levels, {tree.num_nodes:,} nodes")
    timings = _write(tree, items, tree.leaf_index(ids), item_id_field, attr_fields, raw_attr_fields, tree_dir,
                     table_dir, overwrite, dict(method="init", inputs=[item_input_path],
                                                cate_id_field=cate_id_field, hash_ids=hash_ids), attr_delimiter)
    return _summary(tree, {"read_s": round(t1 - t0, 3), "build_s": round(t2 - t1, 3), **timings})


def cluster_tree(item_input_path: str, item_id_field: str, embedding_field: str,
                 tree_output_dir: str | os.PathLike[str], node_edge_output_file: str | os.PathLike[str] | None = None,
                 attr_fields: list[str] | None = None, raw_attr_fields: list[str] | None = None, n_cluster: int = 2,
                 parallel: int = 1, seed: int = 0, hash_ids: bool = False, overwrite: bool = False,
                 attr_delimiter: str = ",") -> dict[str, Any]:
    """Build the learnt tree (balanced recursive k-means on embeddings) and write it."""
    from rectool.tree.kmeans import DEFAULT_ITERS, DEFAULT_SAMPLE_CAP, balanced_kmeans_codes

    attr_fields, raw_attr_fields = list(attr_fields or []), list(raw_attr_fields or [])
    node_attrs.check_attr_delimiter(attr_delimiter)
    tree_dir, table_dir = _check_common(n_cluster, tree_output_dir, node_edge_output_file, overwrite)
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: give at least 1 worker process")
    t0 = time.perf_counter()
    items = read_items(item_input_path, [item_id_field, embedding_field, *attr_fields, *raw_attr_fields])
    node_attrs.check_attr_types(items.schema, attr_fields, raw_attr_fields, item_input_path)
    node_attrs.check_attr_values(items, attr_fields, item_input_path, attr_delimiter)
    ids = item_ids(items, item_id_field, hash_ids, item_input_path)
    emb = vectors(items[embedding_field], ids, item_input_path, embedding_field)
    items = items.drop_columns([embedding_field]) if embedding_field not in (item_id_field, *attr_fields) else items
    t1 = time.perf_counter()
    console.log(f"clustering {emb.shape[0]:,} x {emb.shape[1]} embeddings with {parallel} worker(s)")
    codes = balanced_kmeans_codes(emb, n_cluster=n_cluster, seed=seed, parallel=parallel)
    tree = tree_from_codes(ids, codes, n_cluster)
    t2 = time.perf_counter()
    console.log(f"learnt tree: {tree.num_leaves:,} items, {tree.num_levels} levels, {tree.num_nodes:,} nodes")
    meta = dict(method="cluster", inputs=[item_input_path], embedding_field=embedding_field, dim=emb.shape[1],
                seed=seed, parallel=parallel, kmeans_iters=DEFAULT_ITERS, kmeans_sample_cap=DEFAULT_SAMPLE_CAP,
                hash_ids=hash_ids)
    timings = _write(tree, items, tree.leaf_index(ids), item_id_field, attr_fields, raw_attr_fields, tree_dir,
                     table_dir, overwrite, meta, attr_delimiter)
    return _summary(tree, {"read_s": round(t1 - t0, 3), "cluster_s": round(t2 - t1, 3), **timings})
