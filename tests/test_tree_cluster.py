"""``tree cluster``: balanced k-means sizes, determinism across workers, quality, CLI and bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectool.tree.kmeans import balanced_kmeans_codes
from rectool.tree.structure import load_tree, tree_from_codes


def _blobs(n_items, dim=8, k=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim)).astype(np.float32) * 4
    label = rng.integers(0, k, n_items)
    return (centers[label] + rng.standard_normal((n_items, dim)).astype(np.float32) * 0.5), label


def _leaf_counts(tree):
    counts = np.zeros(tree.num_nodes, dtype=np.int64)
    counts[tree.leaf_start:] = 1
    for i in range(tree.num_nodes - 1, 0, -1):
        counts[tree.parents[i]] += counts[i]
    return counts


@pytest.mark.parametrize("n_items,n", [(2, 2), (5, 2), (1000, 2), (1023, 2), (3001, 2), (10, 3), (1000, 3), (777, 4)])
def test_every_split_is_balanced(n_items, n):
    emb, _ = _blobs(n_items)
    tree = tree_from_codes(np.arange(n_items), balanced_kmeans_codes(emb, n, seed=1), n)
    counts = _leaf_counts(tree)
    co = tree.child_offsets
    for i in range(tree.leaf_start):
        m = counts[i]
        kids = counts[co[i]:co[i + 1]]
        assert kids.size == min(n, m) and kids.sum() == m
        assert set(kids.tolist()) <= {m // n, -(-m // n)}, (i, m, kids)
    assert tree.num_levels - 1 == int(np.ceil(np.log(n_items) / np.log(n) - 1e-9))


def test_codes_do_not_depend_on_workers_and_follow_the_seed():
    emb, _ = _blobs(3000)
    one = balanced_kmeans_codes(emb, 2, seed=5, parallel=1)
    assert np.array_equal(one, balanced_kmeans_codes(emb, 2, seed=5, parallel=2))
    assert np.array_equal(one, balanced_kmeans_codes(emb, 2, seed=5, parallel=3))
    assert not np.array_equal(one, balanced_kmeans_codes(emb, 2, seed=6, parallel=1))
    three = balanced_kmeans_codes(emb, 3, seed=5, parallel=1)
    assert np.array_equal(three, balanced_kmeans_codes(emb, 3, seed=5, parallel=2))


def test_separated_clusters_land_in_separate_subtrees():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 8, dtype=np.float32) * 20
    emb = np.repeat(centers, 256, axis=0) + rng.standard_normal((1024, 8)).astype(np.float32)
    tree = tree_from_codes(np.arange(1024), balanced_kmeans_codes(emb, 2, seed=0, sample_cap=300), 2)
    anc = tree.ancestors(np.arange(tree.leaf_start, tree.num_nodes))[:, 2]  # level-2 node of every leaf
    blob = tree.leaf_item_ids // 256
    for node in np.unique(anc):
        assert np.unique(blob[anc == node]).size == 1  # each quarter of the tree is one blob


def test_leaf_size_groups_rows():
    emb, _ = _blobs(1000)
    codes = balanced_kmeans_codes(emb, 2, seed=0, leaf_size=32)
    sizes = np.unique(codes, return_counts=True)[1]
    assert sizes.size == 32 and set(sizes.tolist()) <= {31, 32}


def _items(path, n_items=300, dim=6, list_type=None, **extra):
    emb, label = _blobs(n_items, dim)
    flat = pa.array(emb.ravel())
    col = (pa.FixedSizeListArray.from_arrays(flat, dim) if list_type is None
           else pa.ListArray.from_arrays(pa.array(np.arange(0, n_items * dim + 1, dim, dtype=np.int32)), flat))
    table = pa.table({"item_id": np.arange(n_items, dtype=np.int64) * 2 + 1, "emb": col, "cate": label,
                      "price": np.arange(n_items, dtype=np.float32), **extra})
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("list_type", [None, "list"])
def test_cli_cluster(tmp_path, cli, list_type):
    src = _items(tmp_path / "emb.parquet", list_type=list_type)
    res = cli("tree", "cluster", "--item-input-path", src, "--item-id-field", "item_id", "--embedding-field", "emb",
              "--attr-fields", "cate", "--raw-attr-fields", "price", "--tree-output-dir", tmp_path / "tree",
              "--parallel", "2", "--seed", "3", "-q")
    assert res.stdout.strip() == str(tmp_path / "tree")
    tree = load_tree(tmp_path / "tree")
    assert sorted(tree.leaf_item_ids.tolist()) == list(range(1, 600, 2))
    meta = json.loads((tmp_path / "tree" / "_meta.json").read_text())
    assert meta["kind"] == "tree" and meta["method"] == "cluster" and meta["dim"] == 6 and meta["seed"] == 3
    lines = (tmp_path / "tree" / "node_table.txt").read_text().splitlines()
    assert len(lines) == 2 + tree.num_nodes and lines[2].startswith(f"{tree.node_ids[0]}\t1.0\t0,")
    edges = (tmp_path / "tree" / "edge_table.txt").read_text().splitlines()
    assert len(edges) == 1 + tree.num_leaves * (tree.num_levels - 2)
    feat = pq.read_table(tmp_path / "tree" / "node_feature")
    assert feat.column_names == ["item_id", "cate", "price"] and feat.num_rows == tree.num_nodes
    assert feat.schema.field("price").type == pa.float32()


def test_cli_cluster_bad_input(tmp_path, cli):
    base = ["tree", "cluster", "--item-id-field", "item_id", "--tree-output-dir", tmp_path / "tree", "-q"]

    def error(src, *args):
        res = cli(*base, "--item-input-path", src, *args, expect=2)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not (tmp_path / "tree").exists()
        return res.stderr

    good = _items(tmp_path / "good.parquet")
    assert "missing column(s) vec" in error(good, "--embedding-field", "vec")
    assert "expected fixed_size_list" in error(good, "--embedding-field", "cate")
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"item_id": [1, 2, 3], "emb": pa.array([[1.0, 2.0], [1.0, 2.0], [3.0]])}), ragged)
    assert "has 1 values in row 2 but 2 in row 0" in error(ragged, "--embedding-field", "emb")
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"item_id": [1, 2, 3], "emb": pa.array([[1.0], None, [3.0]])}), nulls)
    assert "is null in row 1" in error(nulls, "--embedding-field", "emb")
    nan = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"item_id": [1, 2, 3], "emb": pa.array([[1.0], [float("nan")], [3.0]])}), nan)
    assert "NaN or inf in row 1" in error(nan, "--embedding-field", "emb")
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.table({"item_id": [1, 2, 1], "emb": pa.array([[1.0], [2.0], [3.0]])}), dup)
    assert "item id 1 appears more than once" in error(dup, "--embedding-field", "emb")
    assert "'--parallel'" in error(good, "--embedding-field", "emb", "--parallel", "0")  # the option's range
