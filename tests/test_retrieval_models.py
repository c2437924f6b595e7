"""Retrieval models: the sampled-softmax logits by hand, and two-tower / MIND learn a toy problem."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch

from helpers import candidate_config, retrieval_config, write_toy_sequences
from rectool.programs.inputs import InputSpec
from rectool.train.config import Config
from rectool.train.trainer import train


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    return write_toy_sequences(tmp_path_factory.mktemp("seq"))


def _model(cfg_dict, extras):
    from rectool.train.models import build_model
    from rectool.train.schema import build_input_spec

    cfg = Config.model_validate(cfg_dict)
    schema = pads.dataset(cfg.data.train_input).schema
    spec: InputSpec = build_input_spec(cfg, schema, cfg.data.train_input)
    return build_model(cfg, spec, extras=extras)


def test_logq_correction_and_duplicate_masking(seqs, tmp_path):
    cfg = retrieval_config(seqs, tmp_path / "m")
    extras = {"freq_ids": np.array([5, 7, 9]), "freq_counts": np.array([1, 2, 1])}
    model = _model(cfg, extras)
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    ids = torch.tensor([5, 7, 5])  # rows 0 and 2 share an item
    logits = model.logits({"user": u, "item": v}, {"item_id": ids})
    tau = 0.1
    logp = {5: math.log(1 / 4), 7: math.log(2 / 4)}
    expected = (u @ v.t()) / tau - torch.tensor([logp[5], logp[7], logp[5]]).unsqueeze(0) - math.log(3)
    expected[0, 2] = expected[2, 0] = -1e9
    assert torch.allclose(logits, expected, atol=1e-5)


def test_sampled_negatives_never_include_the_target(seqs, tmp_path):
    cfg = retrieval_config(seqs, tmp_path / "m", loss={"temperature": 0.1, "negatives": {
        "sampler": "uniform", "count": 50, "items": str(seqs / "items")}})
    from rectool.train.models import MODELS

    extras = MODELS["two_tower"].gather_extras(Config.model_validate(cfg), [str(p) for p in
                                                                            (seqs / "train").glob("*.parquet")])
    assert extras["neg_item_id"].size == 300 and extras["freq_counts"].sum() == 400 * 11
    model = _model(cfg, extras)
    batch = {"item_id": torch.arange(8), "category_id": torch.zeros(8, dtype=torch.long),
             "hist_item_ids": torch.zeros(8, 5, dtype=torch.long),
             "hist_item_ids__len": torch.ones(8, dtype=torch.long),
             "hist_category_ids": torch.zeros(8, 5, dtype=torch.long),
             "hist_category_ids__len": torch.ones(8, dtype=torch.long)}
    drawn = {}
    real = model._negatives

    def recording(device):
        vectors, ids, logq = real(device)
        drawn["ids"] = ids
        return vectors, ids, logq

    model._negatives = recording
    torch.manual_seed(0)
    out = model(batch)
    logits = model.logits(out, batch)
    assert logits.shape == (8, 8 + 50)
    masked = logits[:, 8:] == -1e9
    assert torch.equal(masked, drawn["ids"].unsqueeze(0) == batch["item_id"].unsqueeze(1))
    assert torch.isfinite(model.loss(out, batch))


@pytest.mark.parametrize("model", ["two_tower", "mind"])
def test_retrieval_models_learn(seqs, tmp_path, model):
    cfg = Config.model_validate(retrieval_config(seqs, tmp_path / "m", model))
    summary = train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if x["kind"] == "train"]
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.3
    # 128 items per batch, one cluster of 30 items holds the target: random hit@10 would be ~0.08
    assert summary["eval_inbatch_hit@10"] > 0.3


def test_tower_exports_and_embed(seqs, tmp_path, cli):
    cfg = Config.model_validate(retrieval_config(seqs, tmp_path / "m", "mind", interests=3))
    train(cfg)
    cli("export", "--model-dir", tmp_path / "m", "--export-dir", tmp_path / "ex")
    meta = json.loads((tmp_path / "ex" / "_meta.json").read_text())
    assert set(meta["parts"]) == {"user_tower", "item_tower"}
    assert meta["parts"]["user_tower"]["output"] == "interest vectors [B, 3, 16]"
    cli("embed", "--model", tmp_path / "ex", "--items", seqs / "items", "--output", tmp_path / "emb",
        "--reserved-columns", "category_id")
    t = pads.dataset(tmp_path / "emb").to_table()
    assert t.column_names == ["item_id", "category_id", "item_emb"] and t.num_rows == 300
    vecs = np.stack(t.column("item_emb").to_numpy(zero_copy_only=False))
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4), "l2-normalised"
    from rectool.programs.load import load_program

    program, spec = load_program(tmp_path / "ex", "user_tower")
    x = {"hist_item_ids": torch.zeros(1, 5, dtype=torch.long), "hist_item_ids__len": torch.tensor([2]),
         "hist_category_ids": torch.zeros(1, 5, dtype=torch.long), "hist_category_ids__len": torch.tensor([2])}
    assert program(x).shape == (1, 3, 16)
    res = cli("retrieve", "--method", "brute", "--model", tmp_path / "ex", "--items", tmp_path / "emb", "--users",
              seqs / "train", "--repeat-bonus", "1", "--repeat-column", "hist_item_ids", "-o", tmp_path / "r",
              expect=2)
    assert "one vector per user" in res.stderr and not (tmp_path / "r").exists()
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "bare").mkdir()
    pq.write_table(pa.table({"item_id": [1, 2]}), tmp_path / "bare" / "p.parquet")
    res = cli("embed", "--model", tmp_path / "ex", "--items", tmp_path / "bare", "--output", tmp_path / "e2", expect=2)
    assert "missing column(s) category_id" in res.stderr and not (tmp_path / "e2").exists()


def _tree(seqs, tmp_path):
    from rectool.tree.build import init_tree

    out = tmp_path / "tree"
    init_tree(item_input_path=str(seqs / "items"), tree_output_dir=out, item_id_field="item_id",
              cate_id_field="category_id")
    return out


def test_tdm_trains_on_tree_samples_and_exports_a_scorer(seqs, tmp_path, cli):
    tree_dir = _tree(seqs, tmp_path)
    from rectool.tree.structure import load_tree

    levels = load_tree(tree_dir).num_levels
    cfg = candidate_config(seqs, tmp_path / "m", "tdm", tree=str(tree_dir), layer_num_sample=[0] + [1] * (levels - 1),
                            windows=[1, 2, 2])
    summary = train(Config.model_validate(cfg))
    assert summary["eval_auc"] > 0.7 and 0 <= summary["eval_leaf_hit@1"] <= 1
    cli("export", "--model-dir", tmp_path / "m", "--export-dir", tmp_path / "ex")
    from rectool.programs.load import load_program
    from rectool.programs.manifest import ExportManifest
    from rectool.train.export import load_trained

    program, spec = load_program(tmp_path / "ex", "scorer")
    assert set(ExportManifest.read(tmp_path / "ex").parts) == {"scorer", "item_embedding"}
    _, _, model, _ = load_trained(tmp_path / "m", "latest")
    users = {"hist_item_ids": torch.tensor([[3, 4, 0, 0, 0], [7, 8, 9, 0, 0]]),
             "hist_item_ids__len": torch.tensor([2, 3])}
    for candidates in ([[11], [10**9]], [[11, 5, 3, 10**9, 2], [4, 4, 7, 1, 10**9 + 1]]):  # items, non-leaf nodes
        x = users | {"item_id": torch.tensor(candidates)}
        with torch.no_grad():
            expected = model.score_pairs(model.user_state(x), x["item_id"])
        assert program(x).shape == expected.shape
        assert torch.allclose(program(x), expected, atol=1e-5)

    # retrieve's callback packs flat (user, candidate) pairs into per-user rows: same scores as one by one
    from rectool.retrieval import pair_scorer as rv

    scorer = rv.PairScorer(program, users, "item_id")
    user_index = np.array([0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1], dtype=np.int64)
    items = np.array([11, 5, 3, 4, 4, 2, 7, 1, 9, 10**9, 6], dtype=np.int64)
    with torch.no_grad():
        alone = np.array([model.score_pairs(model.user_state({k: v[[u]] for k, v in users.items()}),
                                            torch.tensor([[i]])).item() for u, i in zip(user_index, items)])
    width_before, chunk_before = rv.RUN_WIDTH, rv.PAIR_CHUNK
    for width, chunk in ((4096, 32768), (2, 5), (1, 1)):  # runs split and calls cut at several sizes
        rv.RUN_WIDTH, rv.PAIR_CHUNK = width, chunk
        try:
            assert np.allclose(scorer(user_index, items), alone, atol=1e-5)
        finally:
            rv.RUN_WIDTH, rv.PAIR_CHUNK = width_before, chunk_before


def test_nann_adversarial_loss_equals_clean_loss_at_zero_eps(seqs, tmp_path):
    from rectool.train.models import MODELS

    files = [str(p) for p in (seqs / "train").glob("*.parquet")]
    for eps, same in ((0.0, True), (0.5, False)):
        cfg = Config.model_validate(candidate_config(seqs, tmp_path / "m", "nann", negatives=20, adv_eps=eps))
        model = _model(cfg.model_dump(mode="json"), MODELS["nann"].gather_extras(cfg, files))
        model.train()
        batch = {"hist_item_ids": torch.tensor([[3, 4, 0, 0, 0], [7, 8, 9, 0, 0]]),
                 "hist_item_ids__len": torch.tensor([2, 3]), "item_id": torch.tensor([5, 6])}
        torch.manual_seed(0)
        out = model(batch)
        total = model.loss(out, batch)
        clean = torch.nn.functional.cross_entropy(out["corrected"], torch.zeros(2, dtype=torch.long))
        assert torch.isclose(total, clean).item() is same
        assert out["corrected"].shape == (2, 21)


def test_target_attention_equals_the_concatenated_activation_unit():
    """The split first layer and the per-user product give DIN's MLP([q, k, q-k, q*k]) for every (query, key)."""
    from rectool.train.models.din import TargetAttention

    torch.manual_seed(0)
    att = TargetAttention(dim=4, units=[6, 3], softmax=False)
    with torch.no_grad():
        att.act.weight.uniform_(0.1, 0.5)
    query, keys = torch.randn(2, 3, 4), torch.randn(2, 5, 4)                 # 2 users, 3 queries each, 5 keys
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    got = att.weights(query, keys, mask)
    q = query.unsqueeze(2).expand(-1, -1, 5, -1)
    k = keys.unsqueeze(1).expand(-1, 3, -1, -1)
    h = att.first(torch.cat([q, k, q - k, q * k], dim=-1))
    h = torch.nn.functional.prelu(h.reshape(-1, 6), att.act.weight)
    expected = att.score(att.rest(h)).reshape(2, 3, 5) * mask.unsqueeze(1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_history_dropout_only_while_training(seqs, tmp_path):
    cfg = retrieval_config(seqs, tmp_path / "m", history_dropout=0.5)
    model = _model(cfg, {})
    batch = {"hist_item_ids": torch.arange(1, 41).view(8, 5), "hist_item_ids__len": torch.full((8,), 5),
             "hist_category_ids": torch.zeros(8, 5, dtype=torch.long), "hist_category_ids__len": torch.ones(8).long(),
             "item_id": torch.arange(8), "category_id": torch.zeros(8, dtype=torch.long)}
    model.eval()
    with torch.no_grad():
        a, b = model(batch)["user"], model(batch)["user"]
        assert torch.equal(a, b), "no dropout at inference"
        model.train()
        torch.manual_seed(0)
        c, d = model(batch)["user"], model(batch)["user"]
    assert not torch.allclose(c, d) and not torch.allclose(a, c)


def test_node_attributes_embed_categories_and_standardised_floats(tmp_path):
    """Each node's vector is its category's row plus the projected standardised float; unknown ids give zeros."""
    import pyarrow as pa

    from rectool.errors import UserError
    from rectool.train.models.node_attributes import NodeAttributes, read_node_features

    table = pa.table({"node": [30, 10, 20, 40], "cat": ["a", "b", None, "a"], "price": [1.0, None, 3.0, 2.0],
                      "brand": pa.array([7, 7, 9, 9], pa.int64())})
    torch.manual_seed(0)
    attrs = NodeAttributes(table.select(["node", "cat", "price"]), dim=3)
    got = attrs(torch.tensor([[10, 30], [20, 99]]))
    codes = {10: 2, 30: 1, 20: 0}  # dictionary order of first appearance; null -> 0 (the zero row)
    z = {30: -1.0, 10: 0.0, 20: 1.0}  # (x - mean) / std over the non-null values (mean 2, std sqrt(2/3))
    scale = 1 / np.sqrt(2 / 3)
    for (i, j), node in np.ndenumerate(np.array([[10, 30], [20, 99]])):
        if node == 99:
            assert torch.all(got[i, j] == 0)
            continue
        expected = attrs.categorical["cat"].weight[codes[node]] + attrs.project.weight[:, 0] * z[node] * scale
        assert torch.allclose(got[i, j], expected, atol=1e-6)
    assert torch.all(attrs.categorical["cat"].weight[0] == 0)

    (tmp_path / "tree" / "node_feature").mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(table, tmp_path / "tree" / "node_feature" / "part-0.parquet")
    assert read_node_features(tmp_path / "tree", ["brand"]).column_names == ["node", "brand"]
    with pytest.raises(UserError, match="has no column colour .it has: cat, price, brand"):
        read_node_features(tmp_path / "tree", ["colour"])
    with pytest.raises(UserError, match="tree init --attr-fields"):
        read_node_features(tmp_path / "none", ["cat"])
