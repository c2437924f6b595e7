"""CLI group ``rectool tree``: ``init`` (category-ordered initial tree) and ``cluster`` (k-means tree)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rectool import console
from rectool.cli.options import OverwriteOpt, QuietOpt, SeedOpt, comma_list, count_option

ItemInputOpt = Annotated[str, typer.Option("--item-input-path", help="Item table: parquet directory, file or glob.",
                                           show_default=False)]
ItemIdOpt = Annotated[str, typer.Option("--item-id-field", help="Column of item ids (int64, or strings with "
                                        "--hash-ids).", show_default=False)]
AttrOpt = Annotated[str | None, typer.Option("--attr-fields", help="Comma-separated categorical attribute columns "
                                             "(non-leaf nodes take the mode).")]
RawAttrOpt = Annotated[str | None, typer.Option("--raw-attr-fields", help="Comma-separated numeric attribute "
                                                "columns (non-leaf nodes take the mean).")]
NClusterOpt = Annotated[int, count_option("--n-cluster", least=2, help="Branching factor of the tree.")]
NodeEdgeOpt = Annotated[Path | None, typer.Option("--node-edge-output-file", help="Directory for node_table.txt, "
                                                  "edge_table.txt, predict_edge_table.txt and node_feature/ "
                                                  "[the tree output directory].")]
TreeDirOpt = Annotated[Path, typer.Option("--tree-output-dir", help="Directory for the compact tree (compact/), "
                                          "serving_tree and _meta.json.", show_default=False)]
HashIdsOpt = Annotated[bool, typer.Option("--hash-ids", help="Hash string item ids to int64 (rectool.hashing).")]


def init(
    item_input_path: ItemInputOpt,
    item_id_field: ItemIdOpt,
    cate_id_field: Annotated[str, typer.Option("--cate-id-field", help="Column of item categories; items are "
                                               "ordered by (category, id).", show_default=False)],
    tree_output_dir: TreeDirOpt,
    attr_fields: AttrOpt = None,
    raw_attr_fields: RawAttrOpt = None,
    n_cluster: NClusterOpt = 2,
    node_edge_output_file: NodeEdgeOpt = None,
    attr_delimiter: Annotated[str, typer.Option("--attr-delimiter", help="Joins the attribute values in "
                                                "node_table.txt's feature column; the TDM sampler's attr_delimiter "
                                                "splits them.")] = ",",
    hash_ids: HashIdsOpt = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build the initial TDM tree: items sorted by (category, id), split recursively into near-equal parts."""
    from rectool.tree.build import init_tree

    console.set_quiet(quiet)
    result = init_tree(item_input_path, item_id_field, cate_id_field, tree_output_dir, node_edge_output_file,
                       comma_list(attr_fields), comma_list(raw_attr_fields), n_cluster, hash_ids, overwrite,
                       attr_delimiter)
    console.summary("tree init", {"output": str(tree_output_dir), **result})
    console.emit_path(tree_output_dir)


def cluster(
    item_input_path: ItemInputOpt,
    item_id_field: ItemIdOpt,
    embedding_field: Annotated[str, typer.Option("--embedding-field", help="Column of item embeddings: "
                                                 "fixed_size_list<float32>[d] or list<float>.", show_default=False)],
    tree_output_dir: TreeDirOpt,
    attr_fields: AttrOpt = None,
    raw_attr_fields: RawAttrOpt = None,
    n_cluster: NClusterOpt = 2,
    node_edge_output_file: NodeEdgeOpt = None,
    parallel: Annotated[int, count_option("--parallel", help="Worker processes building sub-trees.")] = 1,
    seed: SeedOpt = 0,
    hash_ids: HashIdsOpt = False,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build a learnt TDM tree by balanced recursive k-means on item embeddings."""
    from rectool.tree.build import cluster_tree

    console.set_quiet(quiet)
    result = cluster_tree(item_input_path, item_id_field, embedding_field, tree_output_dir, node_edge_output_file,
                          comma_list(attr_fields), comma_list(raw_attr_fields), n_cluster, parallel, seed,
                          hash_ids, overwrite)
    console.summary("tree cluster", {"output": str(tree_output_dir), **result})
    console.emit_path(tree_output_dir)
