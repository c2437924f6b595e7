"""``rectool retrieve``: every method end to end on a toy catalogue, checked against exact search.

Two-tower + HNSW with a wide ef, TDM beam search with a beam wider than the catalogue and NANN
with ef larger than the catalogue must all return what brute force with the same model returns.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from helpers import candidate_config, retrieval_config, write_toy_sequences
from rectool.retrieval.formats import Ragged
from rectool.train.config import Config
from rectool.train.trainer import train


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    root = write_toy_sequences(tmp_path_factory.mktemp("seq"))
    rng = np.random.default_rng(5)
    hist = [sorted(rng.choice(300, 4, replace=False).tolist()) for _ in range(40)]
    users = pa.table({"user_id": np.arange(1000, 1040), "hist_item_ids": hist,
                      "hist_category_ids": [[i // 30 for i in h] for h in hist],
                      "seen_item_ids": [h[:2] for h in hist], "group": [f"g{u % 3}" for u in range(40)]})
    (root / "users").mkdir()
    pq.write_table(users, root / "users" / "part-0.parquet")
    return root


def _recalls(path):
    t = pads.dataset(path).to_table().sort_by("user_id")
    return t.column("user_id").to_pylist(), t.column("item_ids").to_pylist(), t.column("scores").to_pylist(), t


def _same_topk(a, b, k):
    """Equal top-k sets, allowing ties at the border to fall either way."""
    for items_a, items_b in zip(a, b, strict=True):
        assert len(items_a) == len(items_b) == k
        assert len(set(items_a) & set(items_b)) >= k - 1


@pytest.fixture(scope="module")
def towers(seqs, tmp_path_factory, cli_module):
    tmp = tmp_path_factory.mktemp("towers")
    cfg = retrieval_config(seqs, tmp / "m")
    cfg["train"]["epochs"] = 1
    train(Config.model_validate(cfg))
    cli_module("export", "--model-dir", tmp / "m", "--export-dir", tmp / "ex")
    cli_module("embed", "--model", tmp / "ex", "--items", seqs / "items", "--output", tmp / "emb")
    cli_module("hnsw", "build", "--input", tmp / "emb", "--output", tmp / "index", "--ef-construction", "400")
    return tmp


def test_two_tower_hnsw_equals_brute_and_excludes_seen(seqs, towers, tmp_path, cli):
    common = ["--model", towers / "ex", "--users", seqs / "users", "--topk", "20"]
    res = cli("retrieve", "--method", "hnsw", "--index", towers / "index", "--ef", "300", *common,
              "--reserved-columns", "group", "-o", tmp_path / "h")
    assert res.stdout.strip() == str(tmp_path / "h")
    cli("retrieve", "--method", "brute", "--items", towers / "emb", *common, "-o", tmp_path / "b")
    users, hnsw_items, hnsw_scores, table = _recalls(tmp_path / "h")
    _, brute_items, brute_scores, _ = _recalls(tmp_path / "b")
    assert users == list(range(1000, 1040)) and table.column("group").to_pylist()[:2] == ["g0", "g1"]
    _same_topk(hnsw_items, brute_items, 20)
    np.testing.assert_allclose(np.array(hnsw_scores), np.array(brute_scores), atol=1e-4)
    seen = pads.dataset(seqs / "users").to_table().sort_by("user_id").column("seen_item_ids").to_pylist()
    for items, excluded in zip(brute_items, seen, strict=True):
        assert not set(items) & set(excluded)
        assert all(a >= b for a, b in zip(brute_scores[0], brute_scores[0][1:], strict=False))
    cli("retrieve", "--method", "brute", "--items", towers / "emb", *common, "--keep-seen", "-o", tmp_path / "k")
    _, kept, _, _ = _recalls(tmp_path / "k")
    assert any(set(items) & set(excluded) for items, excluded in zip(kept, seen, strict=True))


def test_retrieve_refuses_wrong_method_and_missing_inputs(seqs, towers, tmp_path, cli):
    common = ["--model", towers / "ex", "--users", seqs / "users", "-o", tmp_path / "x"]
    assert "export a tdm or nann model" in cli("retrieve", "--method", "nann", "--index", towers / "index",
                                               *common, expect=2).stderr
    assert "needs --index" in cli("retrieve", "--method", "hnsw", *common, expect=2).stderr
    assert "choose hnsw, brute, tdm or nann" in cli("retrieve", "--method", "magic", *common, expect=2).stderr
    pq.write_table(pa.table({"user_id": [1]}), tmp_path / "bare.parquet")
    res = cli("retrieve", "--method", "hnsw", "--index", towers / "index", "--model", towers / "ex", "--users",
              tmp_path / "bare.parquet", "-o", tmp_path / "x", expect=2)
    assert "hist_item_ids" in res.stderr and not (tmp_path / "x").exists()


def test_tdm_with_node_attributes_beam_wider_than_the_catalogue_equals_brute(seqs, tmp_path, cli):
    """TDM reading the tree's node attributes (a category and a float) trains, exports and beam-searches."""
    from rectool.tree.build import init_tree
    from rectool.tree.structure import load_tree

    items = pads.dataset(seqs / "items").to_table()
    items = items.append_column("price", pa.array((items["item_id"].to_numpy() % 7) * 1.5))
    (tmp_path / "items").mkdir()
    pq.write_table(items, tmp_path / "items" / "part-0.parquet")
    init_tree(item_input_path=str(tmp_path / "items"), tree_output_dir=tmp_path / "tree", item_id_field="item_id",
              cate_id_field="category_id", attr_fields=["category_id"], raw_attr_fields=["price"])
    levels = load_tree(tmp_path / "tree").num_levels
    cfg = candidate_config(seqs, tmp_path / "m", "tdm", tree=str(tmp_path / "tree"),
                            layer_num_sample=[0] + [1] * (levels - 1), node_features=["category_id", "price"])
    train(Config.model_validate(cfg))
    cli("export", "--model-dir", tmp_path / "m", "--export-dir", tmp_path / "ex")
    from rectool.programs.load import load_program
    from rectool.train.export import load_trained

    program, _ = load_program(tmp_path / "ex", "scorer")
    _, _, model, _ = load_trained(tmp_path / "m", "latest")
    x = {"hist_item_ids": torch.tensor([[3, 4, 0, 0, 0], [7, 8, 9, 0, 0]]), "hist_item_ids__len": torch.tensor([2, 3]),
         "item_id": torch.tensor([[11, 5, 10**9], [4, 302, 10**9 + 1]])}  # leaves, non-leaf nodes, an unknown id
    with torch.no_grad():
        assert torch.allclose(program(x), model.score_pairs(model.user_state(x), x["item_id"]), atol=1e-5)
        assert model.node_attributes(x["item_id"]).abs().sum() > 0
    common = ["--model", tmp_path / "ex", "--users", seqs / "users", "--tree", tmp_path / "tree", "--topk", "10"]
    cli("retrieve", "--method", "tdm", "--beam", "512", *common, "-o", tmp_path / "wide")
    cli("retrieve", "--method", "brute", *common, "-o", tmp_path / "all")
    cli("retrieve", "--method", "tdm", "--beam", "8", *common, "-o", tmp_path / "narrow")
    _, wide, wide_scores, _ = _recalls(tmp_path / "wide")
    _, brute, brute_scores, _ = _recalls(tmp_path / "all")
    _same_topk(wide, brute, 10)
    np.testing.assert_allclose(np.array(wide_scores), np.array(brute_scores), atol=1e-4)
    narrow = pads.dataset(tmp_path / "narrow").to_table()
    assert narrow.column("n_scored").to_numpy().max() < 300, "a narrow beam scores part of the tree"
    meta = json.loads((tmp_path / "narrow" / "_meta.json").read_text())
    assert meta["kind"] == "recalls" and meta["method"] == "tdm" and meta["catalogue"] == 300


def test_nann_with_ef_over_the_catalogue_equals_brute(seqs, tmp_path, cli):
    cfg = candidate_config(seqs, tmp_path / "m", "nann", negatives=20)
    train(Config.model_validate(cfg))
    cli("export", "--model-dir", tmp_path / "m", "--export-dir", tmp_path / "ex")
    cli("embed", "--model", tmp_path / "ex", "--items", seqs / "items", "--output", tmp_path / "emb")
    cli("hnsw", "build", "--input", tmp_path / "emb", "--output", tmp_path / "index", "--m", "8")
    common = ["--model", tmp_path / "ex", "--users", seqs / "users", "--index", tmp_path / "index", "--topk", "10"]
    cli("retrieve", "--method", "nann", "--ef", "400,400,400", "--rounds", "3,3,6", *common, "-o", tmp_path / "n")
    cli("retrieve", "--method", "brute", *common, "-o", tmp_path / "b")
    _, nann, nann_scores, table = _recalls(tmp_path / "n")
    _, brute, brute_scores, _ = _recalls(tmp_path / "b")
    _same_topk(nann, brute, 10)
    np.testing.assert_allclose(np.array(nann_scores), np.array(brute_scores), atol=1e-4)
    assert table.column("n_scored").to_numpy().max() <= 300, "no item scored twice"
    # best-first (one node per round) with a list over the catalogue visits everything too
    cli("retrieve", "--method", "nann", "--ef", "400,400,400", "--rounds", "1,400,400", "--expand", "1", *common,
        "-o", tmp_path / "best_first")
    _, best_first, _, _ = _recalls(tmp_path / "best_first")
    _same_topk(best_first, brute, 10)
    assert json.loads((tmp_path / "best_first" / "_meta.json").read_text())["search_seconds"] > 0
    for flag, value in (("--ef", "0,10,10"), ("--ef", "a,b,c"), ("--rounds", "1,-1,3")):
        assert "give whole numbers of at least" in cli("retrieve", "--method", "nann", flag, value, *common,
                                                       "-o", tmp_path / "x", expect=2).stderr
    assert not (tmp_path / "x").exists()
    assert "'--expand'" in cli("retrieve", "--method", "nann", "--expand", "0", *common,  # the option's range
                               "-o", tmp_path / "x", expect=2).stderr
    assert "--ef and --rounds take three values" in cli("retrieve", "--method", "nann", "--ef", "5", *common,
                                                        "-o", tmp_path / "x", expect=2).stderr


def test_pair_scorer_packs_pairs_for_matrix_and_one_per_row_programs():
    """Flat (user, candidate) pairs in any order give the same scores through a [B, T] program and a [B] one."""
    import torch

    from rectool.retrieval import pair_scorer as rv

    users = {"u": torch.tensor([[1.0], [2.0], [-3.0]])}

    class Matrix(torch.nn.Module):
        def forward(self, x):
            return x["u"] * x["item"].float()  # [B, 1] * [B, T]

    class OnePerRow(torch.nn.Module):
        def forward(self, x):
            return x["u"][:, 0] * x["item"].float()  # [B] * [B]

    user_index = np.array([2, 2, 0, 1, 1, 1, 0, 2, 2, 2], dtype=np.int64)
    items = np.arange(10, dtype=np.int64) + 5
    want = np.array([1.0, 2.0, -3.0])[user_index] * items
    np.testing.assert_allclose(rv.PairScorer(Matrix(), users, "item")(user_index, items), want)
    np.testing.assert_allclose(rv.PairScorer(OnePerRow(), users, "item", matrix=False)(user_index, items), want)
    excluded = rv.PairScorer(Matrix(), users, "item", exclude=Ragged.from_lists([[], [9], [5, 14]]))
    got = excluded(user_index, items)
    assert np.isneginf(got[[0, 4, 9]]).all() and np.isfinite(np.delete(got, [0, 4, 9])).all()


def test_repeat_bonus_on_any_tower_export(seqs, towers, tmp_path, cli):
    """``--repeat-bonus``: a large bonus puts each user's unexcluded history items first."""
    common = ["--model", towers / "ex", "--users", seqs / "users", "--topk", "10", "--items", towers / "emb"]
    cli("retrieve", "--method", "brute", *common, "--repeat-bonus", "10", "--repeat-column", "hist_item_ids",
        "-o", tmp_path / "r")
    _, items, _, _ = _recalls(tmp_path / "r")
    users = pads.dataset(seqs / "users").to_table().sort_by("user_id")
    for got, hist, seen in zip(items, users.column("hist_item_ids").to_pylist(),
                               users.column("seen_item_ids").to_pylist(), strict=True):
        fresh = set(hist) - set(seen)
        assert set(got[:len(fresh)]) == fresh and not set(got) & set(seen)
    res = cli("retrieve", "--method", "brute", *common, "--repeat-bonus", "1", "-o", tmp_path / "x", expect=2)
    assert "--repeat-column" in res.stderr and not (tmp_path / "x").exists()
    res = cli("retrieve", "--method", "brute", *common, "--repeat-bonus", "1", "--repeat-column", "user_id",
              "-o", tmp_path / "x", expect=2)
    assert "not a list column the user tower reads (hist_item_ids, hist_category_ids)" in res.stderr
    res = cli("retrieve", "--method", "brute", *common, "--repeat-bonus", "nan", "--repeat-column", "hist_item_ids",
              "-o", tmp_path / "x", expect=2)
    assert "give a finite number" in res.stderr and not (tmp_path / "x").exists()


def test_item_to_item_mixes_each_history_items_own_scores(seqs, towers, tmp_path, cli):
    """``--item-to-item W1 --item-similarity W2``: the user tower run on each history item alone, and the
    history items' own item vectors; scores checked against those computed here from one-item input
    tables and the embedding table, with and without the repeat bonus."""
    from rectool.programs.inputs import to_tensors
    from rectool.programs.load import load_program
    from rectool.retrieval.formats import open_embeddings

    common = ["--model", towers / "ex", "--users", seqs / "users", "--topk", "10", "--items", towers / "emb"]
    mixed = ["--item-to-item", "0.4", "--item-similarity", "0.3", "--item-to-item-temperature", "0.2",
             "--repeat-column", "hist_item_ids"]
    cli("retrieve", "--method", "brute", *common, *mixed, "-o", tmp_path / "m")
    cli("retrieve", "--method", "brute", *common, *mixed, "--repeat-bonus", "10", "-o", tmp_path / "r")
    program, spec = load_program(towers / "ex", "user_tower")
    users = pads.dataset(seqs / "users").to_table().sort_by("user_id")
    ids, vecs = (np.concatenate(a) for a in zip(*open_embeddings(towers / "emb").batches(), strict=True))
    with torch.inference_mode():
        u = program(to_tensors(users, spec, with_label=False)).numpy()
    hist, cats = users.column("hist_item_ids").to_pylist(), users.column("hist_category_ids").to_pylist()
    seen = users.column("seen_item_ids").to_pylist()
    _, got, got_scores, _ = _recalls(tmp_path / "m")
    _, got_r, scores_r, _ = _recalls(tmp_path / "r")

    def soft_max(x):
        z = x.astype(np.float64) @ vecs.T / 0.2
        return 0.2 * (z.max(0) + np.log(np.exp(z - z.max(0)).sum(0)))

    for i in range(len(hist)):
        single = pa.table({"user_id": [0] * len(hist[i]), "hist_item_ids": [[h] for h in hist[i]],
                           "hist_category_ids": [[c] for c in cats[i]]})
        with torch.inference_mode():
            queries = program(to_tensors(single, spec, with_label=False)).numpy()
        own_vectors = vecs[[int(np.flatnonzero(ids == h)[0]) for h in hist[i]]]
        want = 0.3 * (u[i] @ vecs.T) + 0.4 * soft_max(queries) + 0.3 * soft_max(own_vectors)
        want[np.isin(ids, seen[i])] = -np.inf
        best = np.argsort(-want)[:10]
        assert len(set(got[i]) & set(ids[best].tolist())) >= 9  # ties at the border may fall either way
        np.testing.assert_allclose(got_scores[i], want[best], rtol=1e-4, atol=1e-4)
        fresh = [h for h in hist[i] if h not in seen[i]]
        want[np.isin(ids, fresh)] += 10
        np.testing.assert_allclose(scores_r[i], np.sort(want)[::-1][:10], rtol=1e-4, atol=1e-4)
        assert set(got_r[i][:len(fresh)]) == set(fresh)
    meta = json.loads((tmp_path / "m" / "_meta.json").read_text())
    assert meta["item_to_item"] == {"item_to_item": 0.4, "item_similarity": 0.3, "temperature": 0.2}
    assert meta["repeat_bonus"] is None  # --repeat-column without --repeat-bonus only names the history
    # hnsw: the index's candidates for u and for every history view, rescored with the same mixed score; with
    # candidates covering the catalogue it is the exact search, with fewer a subset scored alike
    index = ["--method", "hnsw", "--index", towers / "index", "--ef", "400"]
    cli("retrieve", *index, *common, *mixed, "--mix-candidates", "300", "-o", tmp_path / "h")
    _, got_h, scores_h, _ = _recalls(tmp_path / "h")
    for i in range(len(hist)):
        assert len(set(got_h[i]) & set(got[i])) >= 9
        np.testing.assert_allclose(scores_h[i], got_scores[i], rtol=1e-4, atol=1e-4)
    cli("retrieve", *index, *common, *mixed, "--mix-candidates", "3", "-o", tmp_path / "h3")
    few = pads.dataset(tmp_path / "h3").to_table().sort_by("user_id")
    assert few.column("n_scored").to_numpy().max() < 300
    brute_score = {(i, item): s for i in range(len(hist)) for item, s in zip(got[i], got_scores[i], strict=True)}
    for i, (items, scores) in enumerate(zip(few.column("item_ids").to_pylist(), few.column("scores").to_pylist(),
                                            strict=True)):
        assert not set(items) & set(seen[i])
        for item, score in zip(items, scores, strict=True):
            if (i, item) in brute_score:
                assert abs(brute_score[i, item] - score) < 1e-4
    res = cli("retrieve", "--method", "tdm", "--tree", tmp_path, *common, *mixed, "-o", tmp_path / "x", expect=2)
    assert "use --method brute (exact) or hnsw" in res.stderr and not (tmp_path / "x").exists()
    res = cli("retrieve", "--method", "brute", *common, "--item-to-item", "2", "-o", tmp_path / "x", expect=2)
    assert "weight in [0, 1]" in res.stderr and not (tmp_path / "x").exists()
    res = cli("retrieve", "--method", "brute", *common, "--item-similarity", "0.5", "-o", tmp_path / "x", expect=2)
    assert "name the user's item-id history with --repeat-column" in res.stderr
