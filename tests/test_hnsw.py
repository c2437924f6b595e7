"""``rectool hnsw build`` and the hnsw / brute searches: builds, add-to, bad inputs, exactness."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from retrieval_helpers import clustered, embedding_table, write_embeddings

from rectool.artifacts import read_meta
from rectool.errors import UserError
from rectool.retrieval.brute import brute_search, brute_search_dot
from rectool.retrieval.formats import Ragged
from rectool.retrieval.hnsw import build_index, hnsw_search, load_index
from rectool.retrieval.nann_search import dot_scorer

DIM = 16


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    base = tmp_path_factory.mktemp("hnsw")
    vectors = clustered(1500, DIM, seed=3)
    ids = np.random.default_rng(3).permutation(100_000)[:1500].astype(np.int64)
    return base, vectors, ids, write_embeddings(base / "emb" / "part-0.parquet", vectors, ids)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)]))


def test_cli_build_writes_index_ids_and_meta(items, cli):
    base, vectors, ids, path = items
    out = base / "idx_cli"
    res = cli("hnsw", "build", "--input", path.parent, "--space", "ip", "--m", "12", "--ef-construction", "80",
              "--threads", "2", "--output", out, "--quiet")
    assert res.stdout.strip() == str(out)
    assert (out / "index.bin").is_file()
    assert np.array_equal(np.load(out / "ids.npy"), ids)
    meta = read_meta(out)
    assert meta["kind"] == "hnsw_index" and meta["count"] == 1500 and meta["dim"] == DIM
    assert (meta["space"], meta["M"], meta["ef_construction"]) == ("ip", 12, 80)
    # hnswlib reads it back on its own
    import hnswlib

    raw = hnswlib.Index(space="ip", dim=DIM)
    raw.load_index(str(out / "index.bin"))
    assert raw.get_current_count() == 1500
    assert np.allclose(raw.get_items([7])[0], vectors[7])
    cli("hnsw", "build", "--input", path, "--output", out, "--quiet", expect=2)  # exists, no --overwrite


@pytest.mark.parametrize("space", ["ip", "l2", "cosine"])
def test_hnsw_with_large_ef_equals_brute_force(items, tmp_path, space):
    _, vectors, ids, _ = items
    # unit vectors: every node of the graph is reachable (with raw inner products a few
    # items can end with no incoming link, a property of HNSW on MIPS; see the next test)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    build_index(write_embeddings(tmp_path / "unit.parquet", unit, ids), tmp_path / "idx", space=space, m=16,
                ef_construction=200, threads=1)
    index = load_index(tmp_path / "idx")
    queries = clustered(40, DIM, seed=9)
    found = hnsw_search(index, queries, k=20, ef=1500)
    exact = brute_search_dot(queries, unit, 20, space=space, item_ids=ids, progress=False)
    assert _recall(found.item_ids, exact.item_ids) == 1.0
    assert np.allclose(found.scores, exact.scores, rtol=1e-4, atol=1e-3)
    assert (found.lengths == 20).all() and (np.diff(found.scores, axis=1) <= 1e-6).all()


def test_hnsw_inner_product_on_raw_vectors(items):
    base, vectors, ids, path = items
    build_index(path, base / "idx_ip", space="ip", m=16, ef_construction=200, threads=1)
    index = load_index(base / "idx_ip")
    queries = clustered(40, DIM, seed=9)
    exact = brute_search_dot(queries, vectors, 10, item_ids=ids, progress=False)
    assert _recall(hnsw_search(index, queries, k=10, ef=400).item_ids, exact.item_ids) >= 0.99


def test_exclusion_over_fetches_and_filters(items):
    base, vectors, ids, path = items
    build_index(path, base / "idx_ex", m=16, ef_construction=200, threads=1)
    index = load_index(base / "idx_ex")
    queries = clustered(10, DIM, seed=5)
    plain = brute_search_dot(queries, vectors, 30, item_ids=ids, progress=False)
    history = Ragged.from_lists([row[:12].tolist() + [-5] for row in plain.item_ids])  # -5: unknown, ignored
    found = hnsw_search(index, queries, k=10, ef=1500, exclude=history)
    exact = brute_search_dot(queries, vectors, 10, item_ids=ids, exclude=history, progress=False)
    assert np.array_equal(found.item_ids, plain.item_ids[:, 12:22])
    assert np.array_equal(exact.item_ids, plain.item_ids[:, 12:22])


def test_add_to_keeps_old_items_and_refuses_duplicates(items, tmp_path):
    base, vectors, ids, path = items
    first = write_embeddings(tmp_path / "a.parquet", vectors[:1000], ids[:1000])
    second = write_embeddings(tmp_path / "b.parquet", vectors[1000:], ids[1000:])
    build_index(first, tmp_path / "old", space="l2", m=16, ef_construction=100)
    summary = build_index(second, tmp_path / "new", add_to=tmp_path / "old")
    assert summary["items"] == 1500 and summary["added"] == 500
    assert np.array_equal(np.load(tmp_path / "new" / "ids.npy"), ids)
    assert read_meta(tmp_path / "old")["count"] == 1000, "the old index is untouched"
    index = load_index(tmp_path / "new")
    found = hnsw_search(index, vectors[995:1005], k=1, ef=200)  # old and new items are found: they are nearest
    assert np.array_equal(found.item_ids[:, 0], ids[995:1005]) and index.space == "l2"
    with pytest.raises(UserError, match="already in the --add-to index"):
        build_index(first, tmp_path / "dup", add_to=tmp_path / "old")
    with pytest.raises(UserError, match="--space ip: the --add-to index was built with l2"):
        build_index(second, tmp_path / "x", add_to=tmp_path / "old", space="ip")
    wrong = write_embeddings(tmp_path / "c.parquet", clustered(5, DIM + 1), np.arange(5) + 10**9)
    with pytest.raises(UserError, match="embedding dims differ"):
        build_index(wrong, tmp_path / "y", add_to=tmp_path / "old")
    # the same path with --overwrite replaces it atomically
    build_index(second, tmp_path / "old", add_to=tmp_path / "old", overwrite=True)
    assert read_meta(tmp_path / "old")["count"] == 1500


def test_bad_embedding_tables(tmp_path, cli):
    vectors = clustered(20, 8)
    ids = np.arange(20, dtype=np.int64)
    (tmp_path / "mixed").mkdir()
    write_embeddings(tmp_path / "mixed" / "a.parquet", vectors[:10], ids[:10])
    write_embeddings(tmp_path / "mixed" / "b.parquet", clustered(10, 9), ids[10:])
    res = cli("hnsw", "build", "--input", tmp_path / "mixed", "--output", tmp_path / "o", expect=2)
    assert "embedding dims differ" in res.stderr and "\n" not in res.stderr.strip()
    # variable-length lists of different lengths
    ragged = pa.table({"item_id": pa.array([1, 2], pa.int64()),
                       "item_emb": pa.array([[0.1, 0.2], [0.3]], pa.list_(pa.float32()))})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(UserError, match="embedding dims differ: item 2 has 1"):
        build_index(tmp_path / "ragged.parquet", tmp_path / "o")
    nan = vectors.copy()
    nan[4, 2] = np.nan
    write_embeddings(tmp_path / "nan.parquet", nan, ids)
    with pytest.raises(UserError, match="item 4 has a NaN"):
        build_index(tmp_path / "nan.parquet", tmp_path / "o")
    pq.write_table(embedding_table(vectors, ids).rename_columns(["item_id", "vec"]), tmp_path / "col.parquet")
    with pytest.raises(UserError, match="missing column.*item_emb.*--embedding-field"):
        build_index(tmp_path / "col.parquet", tmp_path / "o")
    build_index(tmp_path / "col.parquet", tmp_path / "o", embedding_field="vec")  # the flag fixes it
    dup = write_embeddings(tmp_path / "dup.parquet", vectors, np.zeros(20, dtype=np.int64))
    with pytest.raises(UserError, match="item 0 appears more than once"):
        build_index(dup, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()
    variable = write_embeddings(tmp_path / "var.parquet", vectors, ids, fixed=False)
    assert build_index(variable, tmp_path / "o3")["dim"] == 8


def test_pairwise_brute_equals_dense_brute():
    rng = np.random.default_rng(0)
    users, items = rng.standard_normal((7, 6)).astype(np.float32), rng.standard_normal((300, 6)).astype(np.float32)
    ids = np.arange(300, dtype=np.int64) * 3
    exclude = Ragged.from_lists([[0, 3, 6]] * 7)
    pairwise = brute_search(dot_scorer(users, items), 7, 300, 25, item_ids=ids, exclude=exclude, max_pairs=128,
                            progress=False)
    dense = brute_search_dot(users, items, 25, item_ids=ids, exclude=exclude, item_block=37, user_batch=3,
                             progress=False)
    scores = users @ items.T
    scores[:, :3] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :25]
    assert np.array_equal(dense.item_ids, ids[expected]) and np.array_equal(pairwise.item_ids, dense.item_ids)
    assert np.allclose(dense.scores, np.take_along_axis(scores, expected, 1), rtol=1e-5)
    assert (pairwise.n_scored == 300).all()



def test_exclusion_when_k_covers_the_catalogue(tmp_path):
    vectors = clustered(30, 4, seed=1)
    ids = np.arange(30, dtype=np.int64) + 500
    build_index(write_embeddings(tmp_path / "e.parquet", vectors, ids), tmp_path / "idx", space="l2")
    index = load_index(tmp_path / "idx")
    history = Ragged.from_lists([[500, 501], [], list(range(500, 530))])
    found = hnsw_search(index, vectors[:3], k=50, ef=100, exclude=history)
    assert found.lengths.tolist() == [28, 30, 0]
    assert not {500, 501} & set(found.item_ids[0].tolist()) and found.item_ids.shape == (3, 30)
