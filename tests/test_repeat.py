"""The two-tower's repeat bonus (``model.repeat``): logits by hand, learnt on a copy task, and
retrieval with the bonus equal to a dense reference (brute force and HNSW, exclusions kept)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from helpers import retrieval_config, write_toy_sequences
from rectool.retrieval.formats import Ragged, TopK
from rectool.retrieval.repeat import distinct_counts, merge_lists, search_with_repeat, table_lookup
from rectool.train.config import Config
from rectool.train.trainer import train


def test_distinct_counts_and_merge_lists():
    ids, counts = distinct_counts(np.array([[5, 3, 5, 9], [2, 0, 0, 0], [7, 7, 7, 1]]), np.array([3, 1, 0]))
    assert ids.offsets.tolist() == [0, 2, 3, 3] and ids.values.tolist() == [3, 5, 2] and counts.tolist() == [1, 2, 1]
    merged = merge_lists(Ragged.from_lists([[1], [], [4, 5]]), Ragged.from_lists([[2, 3], [6], []]))
    assert [merged.row(i).tolist() for i in range(3)] == [[1, 2, 3], [6], [4, 5]]


def _dense_reference(q, vecs, ids, history, counts, bonus, exclude, k):
    scores = q @ vecs.T
    out = []
    for u in range(len(q)):
        s = scores[u].copy()
        for item, c in zip(history[u], counts[u], strict=True):
            s[ids == item] += bonus[min(c, len(bonus) - 1)]
        s[np.isin(ids, exclude[u])] = -np.inf
        order = np.argsort(-s, kind="stable")[:k]
        out.append([(int(ids[j]), float(s[j])) for j in order if np.isfinite(s[j])])
    return out


def test_search_with_repeat_equals_a_dense_reference():
    rng = np.random.default_rng(0)
    n_items, dim, k = 60, 8, 7
    ids = rng.permutation(1000)[:n_items]
    vecs = rng.normal(size=(n_items, dim)).astype(np.float32)
    q = rng.normal(size=(5, dim)).astype(np.float32)
    hist = np.zeros((5, 6), dtype=np.int64)
    lengths = np.array([6, 3, 0, 6, 2])
    for u in range(5):
        hist[u, :lengths[u]] = rng.choice(ids[:15], lengths[u])  # repeats within a row on purpose
    hist[4, :2] = [424242, ids[0]]  # an id outside the catalogue is ignored
    bonus = np.array([0.0, 1.5, 2.5, 3.0], dtype=np.float32)
    history, counts = distinct_counts(hist, lengths)
    exclude = Ragged.from_lists([[int(hist[0, 0])], [], [int(ids[3])], [int(x) for x in hist[3, :2]], []])
    lookup = table_lookup(ids, vecs)

    def plain(excl):
        from rectool.retrieval.brute import brute_search_dot

        return brute_search_dot(q, vecs, k, item_ids=ids, exclude=excl, progress=False)

    got = search_with_repeat(plain, q, history, bonus[np.minimum(counts, 3)], lookup, exclude, k)
    rows = [history.row(u).tolist() for u in range(5)]
    cnts = [counts[history.offsets[u]:history.offsets[u + 1]].tolist() for u in range(5)]
    want = _dense_reference(q, vecs, ids, rows, cnts, bonus, [exclude.row(u) for u in range(5)], k)
    assert isinstance(got, TopK)
    for u in range(5):
        n = int(got.lengths[u])
        assert got.item_ids[u, :n].tolist() == [i for i, _ in want[u]]
        np.testing.assert_allclose(got.scores[u, :n], [s for _, s in want[u]], rtol=1e-5, atol=1e-5)


def _copy_task(tmp_path):
    return write_toy_sequences(tmp_path / "copy", users=300, repeat=0.7, seed=1)


def test_repeat_bonus_in_the_logits(tmp_path):
    from rectool.train.models import build_model
    from rectool.train.schema import build_input_spec

    data = _copy_task(tmp_path)
    cfg = Config.model_validate(retrieval_config(data, tmp_path / "m", repeat={"history": "hist", "max_count": 2}))
    spec = build_input_spec(cfg, pads.dataset(cfg.data.train_input).schema, cfg.data.train_input)
    model = build_model(cfg, spec, extras={"freq_ids": np.array([5, 7, 9]), "freq_counts": np.array([1, 2, 1])})
    with torch.no_grad():
        model.repeat_bonus.copy_(torch.tensor([0.5, 2.0]))
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    batch = {"item_id": torch.tensor([5, 7]), "hist_item_ids": torch.tensor([[7, 7, 7, 0], [5, 9, 9, 0]]),
             "hist_item_ids__len": torch.tensor([3, 1])}  # row 1's second 9 is padding beyond its length
    logits = model.logits({"user": u, "item": v}, batch)
    bonus = torch.tensor([[0.0, 2.0], [0.5, 0.0]])  # row 0 holds 7 three times (capped at 2), row 1 holds 5 once
    logp = torch.tensor([math.log(1 / 4), math.log(2 / 4)])
    expected = (u @ v.t() + bonus) / 0.1 - logp.unsqueeze(0) - math.log(2)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert model.repeat_scores(batch, torch.tensor([7, 5, 9])).tolist() == [[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]]
    bad = retrieval_config(data, tmp_path / "m", repeat={"history": "hist_cat"})
    bad["feature_groups"]["user"] = ["hist"]
    from rectool.errors import UserError

    with pytest.raises(UserError, match="model.repeat.history 'hist_cat'"):
        build_model(Config.model_validate(bad), spec)
    with pytest.raises(ValueError, match="max_cnt"):
        Config.model_validate(retrieval_config(data, tmp_path / "m", repeat={"history": "hist", "max_cnt": 2}))


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory, cli_module):
    tmp = tmp_path_factory.mktemp("copy")
    data = _copy_task(tmp)
    cfg = retrieval_config(data, tmp / "m", repeat={"history": "hist"})
    cfg["optimizer"]["dense"]["lr"] = 0.02
    summary = train(Config.model_validate(cfg))
    cli_module("export", "--model-dir", tmp / "m", "--export-dir", tmp / "ex")
    cli_module("embed", "--model", tmp / "ex", "--items", data / "items", "--output", tmp / "emb")
    rng = np.random.default_rng(2)
    hist = [rng.choice(300, rng.integers(1, 8)).tolist() for _ in range(30)]
    users = pa.table({"user_id": np.arange(30), "hist_item_ids": hist,
                      "hist_category_ids": [[i // 30 for i in h] for h in hist],
                      "seen_item_ids": [h[:1] for h in hist]})
    (tmp / "users").mkdir()
    pq.write_table(users, tmp / "users" / "part-0.parquet")
    return tmp, summary


def test_repeat_bonus_is_learnt_and_exported(copy_model):
    tmp, summary = copy_model
    bonus = json.loads((tmp / "ex" / "_meta.json").read_text())["parts"]["user_tower"]["repeat"]
    assert bonus["column"] == "hist_item_ids" and bonus["bonus"][0] == 0.0 and len(bonus["bonus"]) == 4
    # 70% of the targets are one of the last 5 items: the model learns to favour them
    assert bonus["bonus"][1] > 0.2 and summary["eval_inbatch_hit@1"] > 0.3


def _recalls(path):
    t = pads.dataset(path).to_table().sort_by("user_id")
    return t.column("item_ids").to_pylist(), np.array(t.column("scores").to_pylist())


def test_retrieve_adds_the_bonus_exactly(copy_model, tmp_path, cli):
    tmp, _ = copy_model
    common = ["--model", tmp / "ex", "--users", tmp / "users", "--topk", "10"]
    cli("retrieve", "--method", "brute", "--items", tmp / "emb", *common, "-o", tmp_path / "b")
    items, scores = _recalls(tmp_path / "b")
    applied = json.loads((tmp_path / "b" / "_meta.json").read_text())["repeat_bonus"]
    assert applied["column"] == "hist_item_ids" and len(applied["bonus"]) == 4
    # the reference: the exported user tower's vectors, every item's u·v, the bonus by count
    from rectool.programs.inputs import to_tensors
    from rectool.programs.load import load_program

    program, spec = load_program(tmp / "ex", "user_tower")
    users = pads.dataset(tmp / "users").to_table().sort_by("user_id")
    with torch.inference_mode():
        q = program(to_tensors(users, spec, with_label=False)).numpy()
    emb = pads.dataset(tmp / "emb").to_table()
    ids = emb.column("item_id").to_numpy()
    vecs = np.stack(emb.column("item_emb").to_numpy(zero_copy_only=False)).astype(np.float32)
    bonus = json.loads((tmp / "ex" / "_meta.json").read_text())["parts"]["user_tower"]["repeat"]["bonus"]
    hist = users.column("hist_item_ids").to_pylist()
    rows = [sorted(set(h[-5:])) for h in hist]  # the user tower reads the last max_len = 5 items
    counts = [[h[-5:].count(i) for i in r] for r, h in zip(rows, hist, strict=True)]
    want = _dense_reference(q, vecs, ids, rows, counts, bonus, users.column("seen_item_ids").to_pylist(), 10)
    boosted = 0
    for u, expected in enumerate(want):
        assert set(items[u]) == {i for i, _ in expected}
        np.testing.assert_allclose(scores[u], [s for _, s in expected], atol=1e-4)
        boosted += len(set(items[u]) & set(rows[u]))
    assert boosted > 30, "history items reach the top 10"
    # --repeat-bonus replaces the learned bonus: 0 turns repeats off (the plain u·v top 10)
    cli("retrieve", "--method", "brute", "--items", tmp / "emb", *common, "--repeat-bonus", "0", "-o", tmp_path / "z")
    plain = _dense_reference(q, vecs, ids, rows, [[0] * len(r) for r in rows], [0.0],
                             users.column("seen_item_ids").to_pylist(), 10)
    assert [set(x) for x in _recalls(tmp_path / "z")[0]] == [{i for i, _ in p} for p in plain]
    # HNSW (ip index, wide ef) finds the same lists; an l2 index is refused in one line
    cli("hnsw", "build", "--input", tmp / "emb", "--output", tmp_path / "ip", "--space", "ip")
    cli("retrieve", "--method", "hnsw", "--index", tmp_path / "ip", "--ef", "300", *common, "-o", tmp_path / "h")
    h_items, h_scores = _recalls(tmp_path / "h")
    assert [set(x) for x in h_items] == [set(x) for x in items]
    np.testing.assert_allclose(h_scores, scores, atol=1e-4)
    cli("hnsw", "build", "--input", tmp / "emb", "--output", tmp_path / "l2", "--space", "l2")
    res = cli("retrieve", "--method", "hnsw", "--index", tmp_path / "l2", *common, "-o", tmp_path / "x", expect=2)
    assert "--space ip or cosine" in res.stderr and not (tmp_path / "x").exists()
