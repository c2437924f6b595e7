"""``rectool hnsw graph``: the extracted graph equals hnswlib's own links, read independently."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_helpers import clustered, write_embeddings

from rectool.artifacts import read_meta
from rectool.errors import UserError
from rectool.retrieval.graph import extract_graph, load_graph
from rectool.retrieval.hnsw import build_index, load_index


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("graph")
    vectors = clustered(2000, 12, seed=4)
    ids = np.arange(2000, dtype=np.int64) * 7 + 5
    # two threads: hnswlib's internal ids then differ from the labels, which the graph must undo
    build_index(write_embeddings(base / "emb.parquet", vectors, ids), base / "idx", m=6, ef_construction=60,
                threads=2)
    return base / "idx"


def _pickled_links(index_dir):
    """Every level's neighbour lists, keyed by label, from hnswlib's pickled state (not the file)."""
    state = load_index(index_dir).index.__getstate__()[0]
    n, size = state["cur_element_count"], state["size_data_per_element"]
    level0 = state["data_level0"][:n * size].view(np.uint8).reshape(n, size)
    labels = level0[:, state["label_offset"]:state["label_offset"] + 8].copy().view("<u8").ravel().astype(int)
    links: dict[int, dict[int, list[int]]] = {0: {}}
    for i in range(n):
        count = int(level0[i, :2].copy().view("<u2")[0])
        links[0][labels[i]] = labels[level0[i, 4:4 + 4 * count].copy().view("<u4")].tolist()
    upper = state["link_lists"].view(np.uint8)
    per_level = state["size_links_per_element"]
    pos = 0
    for i in range(n):
        for level in range(1, int(state["element_levels"][i]) + 1):
            block = upper[pos:pos + per_level]
            count = int(block[:2].copy().view("<u2")[0])
            links.setdefault(level, {})[labels[i]] = labels[block[4:4 + 4 * count].copy().view("<u4")].tolist()
            pos += per_level
    levels = np.empty(n, dtype=int)
    levels[labels] = state["element_levels"][:n]
    return links, levels, labels[state["enterpoint_node"]]


def test_extraction_equals_hnswlib_links(index_dir):
    links, levels, entry = _pickled_links(index_dir)
    top = int(levels.max())
    assert top >= 2, "the test graph should have enter points on level >= 2"
    graph = extract_graph(index_dir, levels=range(top + 1))
    assert np.array_equal(graph.node_level, levels) and graph.entry_point == entry
    assert np.array_equal(graph.ids, np.arange(2000) * 7 + 5)
    for level in range(top + 1):
        for node in range(graph.n_nodes):
            expected = links[level].get(node, [])
            assert graph.neighbours(level, node).tolist() == expected, (level, node)
        assert graph.indices[level].dtype == np.int32 and graph.indptr[level].dtype == np.int64
    assert np.array_equal(graph.enter_points(), np.flatnonzero(levels >= 2))
    assert np.array_equal(graph.level_nodes(1), np.flatnonzero(levels >= 1))


def test_cli_writes_arrays_and_loads_back(index_dir, tmp_path, cli):
    out = tmp_path / "graph"
    res = cli("hnsw", "graph", "--index", index_dir, "--output", out, "--levels", "0,1", "--quiet")
    assert res.stdout.strip() == str(out)
    meta = read_meta(out)
    assert meta["kind"] == "hnsw_graph" and meta["levels"] == [0, 1] and meta["rows"] == 2000
    assert sorted(p.name for p in out.glob("*.npy")) == [
        "enter_points.npy", "ids.npy", "level0_indices.npy", "level0_indptr.npy", "level1_indices.npy",
        "level1_indptr.npy", "node_level.npy"]
    loaded, direct = load_graph(out), extract_graph(index_dir)
    for level in (0, 1):
        assert np.array_equal(loaded.indptr[level], direct.indptr[level])
        assert np.array_equal(loaded.indices[level], direct.indices[level])
    assert np.array_equal(np.load(out / "enter_points.npy"), direct.enter_points())
    assert loaded.entry_point == direct.entry_point and meta["edges_level0"] == int(direct.indptr[0][-1])
    with pytest.raises(KeyError):
        loaded.neighbours(2, 0)
    cli("hnsw", "graph", "--index", index_dir, "--output", out, "--levels", "0,x", expect=2)


def test_bad_indexes(index_dir, tmp_path):
    with pytest.raises(UserError, match="not an index written by rectool hnsw build"):
        extract_graph(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("ids.npy", "_meta.json"):
        (broken / name).write_bytes((index_dir / name).read_bytes())
    (broken / "index.bin").write_bytes((index_dir / "index.bin").read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated"):
        extract_graph(broken)
    with pytest.raises(UserError, match="levels >= 0"):
        extract_graph(index_dir, levels=[-1])
