"""Training features on a par with RecIS / Torch-RecHub: sparse AdamW, warm start, the DNN model,
one-line group errors, and the two-tower training modes (point-wise, pair-wise, list-wise)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch
import torch.nn.functional as F
import yaml

from helpers import retrieval_config, toy_config, write_toy_ctr, write_toy_sequences
from rectool.errors import UserError
from rectool.train import checkpoint as ckpt
from rectool.train.config import Config
from rectool.train.optim import LazyAdam, LazyAdamW
from rectool.train.trainer import train


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_toy_ctr(root / "train", rows=4000, seed=0)
    write_toy_ctr(root / "eval", rows=1500, seed=1, files=1)
    return root


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    return write_toy_sequences(tmp_path_factory.mktemp("seq"))


def _cfg(toy, model_dir, model="deepfm", **over) -> dict:
    raw = toy_config(toy / "train", model_dir, model=model, eval_input=toy / "eval")
    for key, value in over.items():
        node = raw
        parts = [int(p) if p.isdigit() else p for p in key.split(".")]
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return raw


def _losses(model_dir) -> list[float]:
    lines = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x["kind"] == "train"]


def _lookup_grads(table: torch.nn.Parameter, ids: torch.Tensor, seed: int) -> None:
    torch.manual_seed(seed)
    out = F.embedding(ids, table, sparse=True)
    (out * torch.randn_like(out)).sum().backward()


# ----------------------------------------------------------------------------- sparse AdamW


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["numba", "torch"])
def test_sparse_adamw_equals_dense_adamw_on_the_touched_rows(dtype):
    torch.manual_seed(0)
    init = torch.randn(30, 4, dtype=dtype)
    touched = torch.tensor([1, 4, 9, 16, 25])
    ours = torch.nn.Parameter(init.clone())
    ref = torch.nn.Parameter(init[touched].clone())  # dense AdamW over the touched rows alone
    opt = LazyAdamW([ours], lr=0.05, eps=1e-8, weight_decay=0.3)
    opt_ref = torch.optim.AdamW([ref], lr=0.05, eps=1e-8, weight_decay=0.3)
    gen = torch.Generator().manual_seed(1)
    for step in range(5):
        ids = touched[torch.randint(0, 5, (40,), generator=gen)]
        ids[:5] = touched  # every touched row in every step
        opt.zero_grad()
        _lookup_grads(ours, ids, seed=step)
        ref.grad = ours.grad.to_dense()[touched]
        opt.step()
        opt_ref.step()
    torch.testing.assert_close(ours.detach()[touched], ref.detach(), rtol=1e-5, atol=1e-6)
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(ours.detach()[untouched], init[untouched]), "no decay of rows no batch touched"


def test_sparse_adamw_decays_only_the_rows_of_this_step():
    p = torch.nn.Parameter(torch.ones(6, 2))
    opt = LazyAdamW([p], lr=0.1, weight_decay=0.5)
    # a gradient as distributed.average_row_grads leaves it: coalesced rows, one of them all zero
    p.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), torch.tensor([[0.0, 0.0], [1.0, -1.0]]), (6, 2),
                                     is_coalesced=True, check_invariants=True)
    opt.step()
    assert torch.allclose(p.detach()[1], torch.full((2,), 0.95)), "a row in the gradient decays, zero or not"
    # first Adam step: lr · sign(g) after the decay
    assert torch.allclose(p.detach()[3], torch.tensor([0.85, 1.05]), atol=1e-5)
    assert torch.equal(p.detach()[[0, 2, 4, 5]], torch.ones(4, 2))


def test_sparse_adamw_without_decay_is_lazy_adam_bit_for_bit():
    torch.manual_seed(0)
    init = torch.randn(20, 3)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    oa, ob = LazyAdam([a], lr=0.05), LazyAdamW([b], lr=0.05, weight_decay=0.0)
    for step in range(3):
        ids = torch.randint(0, 20, (25,))
        for p, o in ((a, oa), (b, ob)):
            o.zero_grad()
            _lookup_grads(p, ids, seed=step)
            o.step()
    assert torch.equal(a.detach(), b.detach())
    restored = LazyAdamW([torch.nn.Parameter(init.clone())], lr=0.05)
    restored.load_state_dict(ob.state_dict())  # the checkpointed state loads back
    assert restored.param_groups[0]["weight_decay"] == 0.0


def test_sparse_adamw_learns_and_weight_decay_needs_it(toy, tmp_path):
    cfg = _cfg(toy, tmp_path / "m", **{"optimizer.sparse": {"type": "adamw", "lr": 0.02, "weight_decay": 0.05}})
    summary = train(Config.model_validate(cfg))
    assert summary["eval_auc"] > 0.68
    losses = _losses(tmp_path / "m")
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.02
    assert Config.model_validate(_cfg(toy, tmp_path, **{"optimizer.sparse": {"type": "adamw"}})) \
        .optimizer.sparse.decay == 0.01
    with pytest.raises(ValueError, match="weight_decay is applied by type adamw only"):
        Config.model_validate(_cfg(toy, tmp_path, **{"optimizer.sparse": {"type": "sparse_adam",
                                                                          "weight_decay": 0.1}}))


# ----------------------------------------------------------------------------- warm start


def _engine_rows(model, key: str) -> torch.Tensor:
    from rectool.train.warmstart import table_layout

    dim, start, rows = table_layout(model.engine)[key]
    return model.engine.tables[f"dim{dim}"].detach()[start:start + rows]


@pytest.fixture(scope="module")
def source(toy, tmp_path_factory):
    """A trained DeepFM to start from."""
    model_dir = tmp_path_factory.mktemp("src") / "model"
    train(Config.model_validate(_cfg(toy, model_dir, **{"train.max_steps": 15, "data.eval_input": None})))
    return model_dir


def test_warm_start_loads_what_matches_and_reports_the_rest(toy, source, tmp_path):
    from rectool.train.export import load_trained
    from rectool.train.models import build_model
    from rectool.train.schema import build_input_spec
    from rectool.train.warmstart import warm_start

    raw = _cfg(toy, tmp_path / "m", **{"features.2.embedding_dim": 16})  # city: dim 8 -> 16
    # one feature more, whose table sorts before 'item': the item table moves to other rows of dim8
    raw["features"].append({"name": "category_id", "kind": "id", "num_buckets": 30, "embedding_dim": 8})
    raw["feature_groups"]["deep"].append("category_id")
    cfg = Config.model_validate(raw)
    spec = build_input_spec(cfg, pads.dataset(cfg.data.train_input).schema, cfg.data.train_input)
    model = build_model(cfg, spec, sparse=True)
    _, _, trained, _ = load_trained(source, "latest")
    before = _engine_rows(model, "category_id").clone()

    done = warm_start(model, ckpt.resolve_init(str(source)))
    assert {"table:item", "table:user_id", "table:user_x_cat", "table:wide/item", "head.weight",
            "mlp.1.running_mean"} <= set(done.loaded)
    assert any(m.startswith("table:city [50x8 -> 50x16]") for m in done.mismatched)
    assert any(m.startswith("mlp.0.weight [32x") for m in done.mismatched)
    assert {"table:category_id", "table:wide/category_id"} <= set(done.missing) and not done.unexpected
    for key in ("item", "user_id", "wide/item"):
        assert torch.equal(_engine_rows(model, key), _engine_rows(trained, key)), key
    assert torch.equal(_engine_rows(model, "category_id"), before), "a missing table keeps its fresh rows"
    assert torch.equal(model.head.weight.detach(), trained.head.weight.detach())
    assert model.engine.normalizers["price_z"].b.item() == 1.0, "normaliser stats come from this run's data"
    rows = {r[0]: r for r in done.rows()}
    assert rows["loaded"][1] == len(done.loaded) and rows["unexpected (ignored)"][1] == 0


def test_warm_start_runs_fresh_and_its_own_checkpoint_wins(toy, source, tmp_path, monkeypatch, capsys):
    import shutil

    import rectool.train.trainer as trainer_mod

    init = tmp_path / "init"
    shutil.copytree(source, init)
    over = {"train.init_checkpoint": str(init), "train.max_steps": 12, "train.checkpoint_every": 4,
            "data.eval_input": None}
    cfg = Config.model_validate(_cfg(toy, tmp_path / "m", **over))
    real_save, calls = trainer_mod.ckpt.save, []

    def crash_on_second(path, payload):
        calls.append(payload["step"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(path, payload)

    monkeypatch.setattr(trainer_mod.ckpt, "save", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(trainer_mod.ckpt, "save", real_save)
    assert "warm start from" in capsys.readouterr().err
    first = ckpt.load(ckpt.list_checkpoints(tmp_path / "m")[-1])
    assert first["step"] == 4
    shutil.rmtree(init)  # the resume must not need it
    summary = train(cfg)
    assert summary["steps"] == 12 and "init_checkpoint" not in summary
    err = capsys.readouterr().err
    assert "resuming from" in err and "warm start" not in err


def test_warm_start_fresh_run_reports_and_bad_paths_are_one_line(toy, source, tmp_path, cli):
    cfg = Config.model_validate(_cfg(toy, tmp_path / "m", **{"train.init_checkpoint": str(source),
                                                             "train.max_steps": 3, "data.eval_input": None}))
    summary = train(cfg)
    assert summary["init_checkpoint"] == str(ckpt.list_checkpoints(source)[-1]) and summary["init_loaded"] > 10
    # a resume reads neither init_checkpoint nor keys written with their defaults since (an older config.yaml)
    saved = tmp_path / "m" / "config.yaml"
    saved.write_text("".join(x for x in saved.read_text().splitlines(True) if "schedule: constant" not in x))
    assert train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"init_checkpoint": None})}))["steps"] == 3
    for bad, message in ((tmp_path / "nope", "no such file or directory"),
                         (tmp_path, "a directory without checkpoints")):
        raw = _cfg(toy, tmp_path / "m2", **{"train.init_checkpoint": str(bad)})
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(raw))
        res = cli("train", "--config", path, expect=2)
        assert f"train.init_checkpoint {bad}: {message}" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "m2").exists()
    with pytest.raises(UserError, match="cannot be read"):
        (tmp_path / "junk.pt").write_text("not a checkpoint")
        train(Config.model_validate(_cfg(toy, tmp_path / "m3", **{"train.init_checkpoint":
                                                                   str(tmp_path / "junk.pt")})))


# ----------------------------------------------------------------------------- DNN, group checks


def test_dnn_learns_and_exports(toy, tmp_path, cli):
    from rectool.programs.inputs import to_tensors
    from rectool.train.export import load_trained

    summary = train(Config.model_validate(_cfg(toy, tmp_path / "model", "dnn")))
    losses = _losses(tmp_path / "model")
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.02 and summary["eval_auc"] > 0.68
    cli("export", "--model-dir", tmp_path / "model", "--export-dir", tmp_path / "export", "--checkpoint", "latest")
    cli("predict", "--model", tmp_path / "export", "--input", toy / "eval", "--output", tmp_path / "pred",
        "--reserved-columns", "label")
    pred = pads.dataset(tmp_path / "pred").to_table()
    _, spec, model, _ = load_trained(tmp_path / "model", "latest")
    with torch.no_grad():
        expected = model.probabilities(model(to_tensors(pads.dataset(toy / "eval").to_table(), spec))).numpy()
    assert np.allclose(pred.column("score").to_numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("command", ["train", "config"])
def test_wide_and_deep_without_wide_is_one_line(toy, tmp_path, cli, command):
    raw = _cfg(toy, tmp_path / "m", "wide_and_deep")
    del raw["feature_groups"]["wide"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    args = ("train", "--config", path) if command == "train" else ("config", "check", path)
    res = cli(*args, expect=2)
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "model wide_and_deep reads the group(s) wide" in res.stderr and not (tmp_path / "m").exists()
    raw["model"]["type"] = "dnn"
    raw["feature_groups"] = {"dense": raw["feature_groups"]["deep"]}
    with pytest.raises(ValueError, match="model dnn reads the group"):
        Config.model_validate(raw)


# ----------------------------------------------------------------------------- two-tower modes


def _tower_model(cfg_dict):
    from rectool.train.models import build_model
    from rectool.train.schema import build_input_spec

    cfg = Config.model_validate(cfg_dict)
    spec = build_input_spec(cfg, pads.dataset(cfg.data.train_input).schema, cfg.data.train_input)
    return build_model(cfg, spec, extras={"freq_ids": np.array([5, 7, 9]), "freq_counts": np.array([1, 2, 1])})


def test_two_tower_losses_by_hand(seqs, tmp_path):
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    batch = {"item_id": torch.tensor([5, 7, 5])}  # rows 0 and 2 share an item: not each other's negative
    out = {"user": u, "item": v}
    s = (u @ v.t()) / 0.1
    neg = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.bool)
    losses = {}
    for mode in ("listwise", "pointwise", "pairwise"):
        cfg = retrieval_config(seqs, tmp_path / "m", loss={"temperature": 0.1, "mode": mode})
        losses[mode] = _tower_model(cfg).loss(out, batch)
    default = _tower_model(retrieval_config(seqs, tmp_path / "m")).loss(out, batch)
    assert torch.equal(default, losses["listwise"]), "listwise is the default, unchanged"
    pos = s.diagonal()
    bce = (F.softplus(-pos).sum() + F.softplus(s[neg]).sum()) / (3 + neg.sum())
    torch.testing.assert_close(losses["pointwise"], bce)
    bpr = torch.stack([F.softplus(s[i][neg[i]] - pos[i]).mean() for i in range(3)]).mean()
    torch.testing.assert_close(losses["pairwise"], bpr)


@pytest.mark.parametrize("mode", ["pointwise", "pairwise"])
def test_two_tower_modes_learn_and_export(seqs, tmp_path, cli, mode):
    negatives = {"sampler": "uniform", "count": 32, "items": str(seqs / "items")}
    cfg = retrieval_config(seqs, tmp_path / "m", loss={"temperature": 0.1, "mode": mode, "negatives": negatives})
    summary = train(Config.model_validate(cfg))
    losses = _losses(tmp_path / "m")
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:2]), losses
    # 128 items per batch, one cluster of 30 items holds the target: random hit@10 would be ~0.08
    assert summary["eval_inbatch_hit@10"] > 0.2, summary
    cli("export", "--model-dir", tmp_path / "m", "--export-dir", tmp_path / "ex")
    meta = json.loads((tmp_path / "ex" / "_meta.json").read_text())
    assert set(meta["parts"]) == {"user_tower", "item_tower"}
