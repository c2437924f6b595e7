"""Training: every model learns, resume equals an uninterrupted run, DDP, export -> predict."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch
import yaml

from helpers import shared_path, toy_config, write_toy_ctr
from rectool.artifacts import open_dataset
from rectool.train import checkpoint as ckpt
from rectool.train.config import Config, load_config
from rectool.train.trainer import train


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_toy_ctr(root / "train", rows=6000, seed=0)
    write_toy_ctr(root / "eval", rows=2000, seed=1, files=1)
    return root


def _cfg(toy, tmp_path, model="deepfm", **over) -> Config:
    raw = toy_config(toy / "train", tmp_path / "model", model=model, eval_input=toy / "eval")
    for key, value in over.items():
        node = raw
        parts = [int(p) if p.isdigit() else p for p in key.split(".")]
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return Config.model_validate(raw)


def _losses(model_dir):
    lines = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x["kind"] == "train"], [x for x in lines if x["kind"] == "eval"]


@pytest.mark.parametrize("model", ["wide_and_deep", "deepfm", "din", "dcn_v2"])
def test_each_model_learns(toy, tmp_path, model):
    summary = train(_cfg(toy, tmp_path, model))
    losses, evals = _losses(tmp_path / "model")
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.02, losses
    assert evals[-1]["auc"] > 0.68 and 0 < evals[-1]["gauc"] < 1
    assert summary["steps"] == 3 * (6000 // 256 + 1)


@pytest.mark.parametrize("sparse", ["adagrad", "rowwise_adagrad", "dense"])
def test_sparse_optimizers_learn(toy, tmp_path, sparse):
    cfg = _cfg(toy, tmp_path, "deepfm", **{"optimizer.sparse.type": sparse, "optimizer.sparse.lr": 0.05,
                                            "optimizer.warmup_steps": 5, "optimizer.schedule": "cosine",
                                            "optimizer.clip_grad_norm": 5.0, "train.grad_accum_steps": 2})
    train(cfg)
    assert _losses(tmp_path / "model")[1][-1]["auc"] > 0.68


def test_multiclass_softmax(toy, tmp_path):
    cfg = _cfg(toy, tmp_path, "deepfm", **{"model.num_class": 2, "eval.metrics": ["accuracy", "logloss"]})
    summary = train(cfg)
    assert summary["eval_accuracy"] > 0.6


def test_resume_equals_uninterrupted(toy, tmp_path, monkeypatch):
    over = {"train.epochs": 2, "train.checkpoint_every": 10, "train.threads": 1, "data.eval_input": None,
            "model.deep.dropout": 0.1}
    full = _cfg(toy, tmp_path / "a", **over)
    train(full)
    whole = ckpt.load(ckpt.list_checkpoints(tmp_path / "a" / "model")[-1])

    part = _cfg(toy, tmp_path / "b", **over)
    import rectool.train.trainer as trainer_mod

    real_save = trainer_mod.ckpt.save
    calls = {"n": 0}

    def crash_after_third_checkpoint(path, payload):
        real_save(path, payload)
        if path.name.startswith("ckpt-"):
            calls["n"] += 1
            if calls["n"] == 3:  # step 30: in the middle of epoch 2 (24 steps per epoch)
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.ckpt, "save", crash_after_third_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(part)
    monkeypatch.setattr(trainer_mod.ckpt, "save", real_save)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "b" / "model")][-1] == "ckpt-00000030.pt"
    train(part)  # the same call again: resumes
    resumed = ckpt.load(ckpt.list_checkpoints(tmp_path / "b" / "model")[-1])
    assert resumed["step"] == whole["step"] == 48
    for k, v in whole["model"].items():
        assert torch.allclose(v.float(), resumed["model"][k].float(), atol=1e-6), k


def test_checkpoints_keep_last_k_and_best(toy, tmp_path):
    cfg = _cfg(toy, tmp_path, **{"train.checkpoint_every": 5, "train.eval_every": 5, "train.keep_checkpoints": 2,
                                 "train.epochs": 1})
    train(cfg)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "model")]
    assert names == ["ckpt-00000020.pt", "ckpt-00000024.pt"]
    best = ckpt.load(tmp_path / "model" / "checkpoints" / "best.pt")
    evals = _losses(tmp_path / "model")[1]
    assert best["best"] == pytest.approx(max(e["auc"] for e in evals))
    assert (tmp_path / "model" / "config.yaml").is_file() and any((tmp_path / "model" / "tensorboard").iterdir())


def test_other_config_in_same_model_dir_is_refused(toy, tmp_path):
    train(_cfg(toy, tmp_path, **{"train.epochs": 1}))
    from rectool.errors import UserError

    with pytest.raises(UserError, match="checkpoints come from another config"):
        train(_cfg(toy, tmp_path, **{"train.epochs": 1, "features.0.embedding_dim": 4}))


def test_export_predict_equals_in_memory_model(toy, tmp_path, cli):
    cfg = _cfg(toy, tmp_path, "din", **{"train.epochs": 1})
    train(cfg)
    from rectool.programs.inputs import to_tensors
    from rectool.train.export import load_trained

    cli("export", "--model-dir", tmp_path / "model", "--export-dir", tmp_path / "export", "--checkpoint", "latest")
    cli("predict", "--model", tmp_path / "export", "--input", toy / "eval", "--output", tmp_path / "pred",
        "--reserved-columns", "user_id,item_id,label", "--batch-size", "333")
    pred = open_dataset(tmp_path / "pred").to_table()
    assert pred.column_names == ["user_id", "item_id", "label", "score"] and pred.num_rows == 2000
    _, spec, model, _ = load_trained(tmp_path / "model", "latest")
    table = open_dataset(toy / "eval").to_table()
    with torch.no_grad():
        expected = model.probabilities(model(to_tensors(table, spec))).numpy()
    assert np.allclose(pred.column("score").to_numpy(), expected, atol=1e-5)
    # batch size 1 works with the exported program, and '-' streams Arrow IPC
    res = cli("predict", "--model", tmp_path / "export", "--input", toy / "eval" / "part-0.parquet", "--output", "-",
              "--batch-size", "1", "--quiet")
    streamed = ipc.open_stream(pa.py_buffer(res.stdout_bytes)).read_all()
    assert streamed.num_rows == 2000 and np.allclose(streamed.column("score").to_numpy(), expected, atol=1e-5)


def test_criteo_sample_end_to_end(tmp_path, cli):
    src = shared_path("criteo", "criteo_sample.txt")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(src, convert_options=pacsv.ConvertOptions(
        column_types={f"C{i}": pa.string() for i in range(1, 27)}))
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "criteo.parquet")
    feats = [{"name": f"C{i}", "kind": "id", "hash_bucket_size": 1000, "embedding_dim": 4} for i in range(1, 27)]
    feats += [{"name": f"I{i}", "kind": "raw", "normalizer": "log1p"} for i in range(1, 14)]
    cfg = {"data": {"train_input": str(tmp_path / "data"), "eval_input": str(tmp_path / "data"), "batch_size": 32,
                    "num_workers": 0},
           "features": feats, "feature_groups": {"deep": [f["name"] for f in feats]},
           "model": {"type": "deepfm", "deep": {"hidden_units": [16]}},
           "train": {"model_dir": str(tmp_path / "model"), "epochs": 2}}
    path = tmp_path / "criteo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = cli("train", "--config", path)
    assert res.stdout.strip() == str(tmp_path / "model")
    cli("export", "--model-dir", tmp_path / "model", "--export-dir", tmp_path / "export")
    cli("predict", "--model", tmp_path / "export", "--input", tmp_path / "data", "--output", tmp_path / "pred",
        "--reserved-columns", "label")
    scores = open_dataset(tmp_path / "pred").to_table().column("score").to_numpy()
    assert scores.shape == (200,) and np.isfinite(scores).all()


def test_train_errors_are_one_line(toy, tmp_path, cli):
    cfg = toy_config(toy / "train", tmp_path / "model")
    cfg["features"][1]["num_buckets"] = 100  # item ids go up to 499
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = cli("train", "--config", path, expect=2)
    assert "column item_id: id" in res.stderr and "num_buckets=100 of feature item_id" in res.stderr
    cfg = toy_config(tmp_path / "nowhere", tmp_path / "model2")
    path.write_text(yaml.safe_dump(cfg))
    res = cli("train", "--config", path, expect=2)
    assert "data.train_input" in res.stderr and "no such file" in res.stderr
    res = cli("export", "--model-dir", tmp_path / "nothing", "--export-dir", tmp_path / "e", expect=2)
    assert "has no config.yaml" in res.stderr
    assert load_config  # imported for the CLI module's sake


def test_raw_feature_matching_many_columns(tmp_path):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 3000
    cols = {f"ui_{k}": rng.normal(k, 1.0 + k, n).astype(np.float32) for k in range(4)}
    cols["u_x"] = rng.normal(0, 1, n).astype(np.float32)
    cols["ui_name"] = ["a"] * n  # not numeric: left out
    cols["label"] = (cols["ui_0"] + cols["ui_3"] / 4 + rng.normal(0, 0.5, n) > 0.5).astype(np.int8)
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table(cols), tmp_path / "d" / "p.parquet")
    cfg = Config.model_validate({
        "data": {"train_input": str(tmp_path / "d"), "eval_input": str(tmp_path / "d"), "batch_size": 256,
                 "num_workers": 0},
        "features": [{"name": "ui", "kind": "raw", "match": "ui_*", "normalizer": "zscore"},
                     {"name": "u", "kind": "raw", "match": "u_*", "normalizer": "log1p"}],
        "feature_groups": {"deep": ["ui", "u"]},
        "model": {"type": "dcn_v2", "deep": {"hidden_units": [16]}},
        "train": {"model_dir": str(tmp_path / "m"), "epochs": 2}})
    summary = train(cfg)
    assert summary["eval_auc"] > 0.8
    spec = json.loads((tmp_path / "m" / "input_spec.json").read_text())
    assert [c["name"] for c in spec["columns"]] == ["ui_0", "ui_1", "ui_2", "ui_3", "u_x"]
    from rectool.train.export import load_trained

    _, _, model, _ = load_trained(tmp_path / "m", "latest")
    stds = model.engine.normalizers["ui"].b.numpy()
    assert np.allclose(stds, [1, 2, 3, 4], rtol=0.1), "z-score stats per matched column"
    bad = cfg.model_copy(update={"features": [cfg.features[0].model_copy(update={"match": "zz_*"})]})
    from rectool.errors import UserError
    from rectool.train.schema import build_input_spec

    with pytest.raises(UserError, match="match 'zz_\\*' selects no numeric column"):
        build_input_spec(bad, pq.read_schema(tmp_path / "d" / "p.parquet"), "d")


def test_auto_loader_workers_are_fixed_by_the_first_run(tmp_path, monkeypatch):
    """The batch order depends on the worker count: a resumed run keeps the first run's, whatever its cores."""
    from rectool.train import trainer
    from rectool.train.config import Config

    cfg = Config.model_validate(toy_config(tmp_path / "data.parquet", tmp_path / "m"))
    assert cfg.data.num_workers == 0  # the toy config pins it; check auto on a copy
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"num_workers": "auto"})})
    monkeypatch.setattr(trainer, "_cores_per_process", lambda: 16)
    assert trainer._loader_workers(cfg, tmp_path) == 2
    (tmp_path / trainer.LOADER_WORKERS_FILE).write_text("0")
    assert trainer._loader_workers(cfg, tmp_path) == 0
