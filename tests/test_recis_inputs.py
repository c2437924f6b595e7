"""RecIS-style inputs: ORC files, list-valued columns, delimited-string sequences, combiner ``concat``.

RecIS's CTR example writes ``data_{i}.orc`` with ``pyarrow.orc``: ``dense1`` a list<double> of 8,
``dense2`` a 1-element list, the label and the ids 1-element lists, ``sparse4`` a long int
sequence and ``sparse5`` a long string sequence. ``write_recis`` makes a small learnable copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from helpers import toy_config, write_toy_ctr
from rectool.artifacts import open_dataset
from rectool.errors import UserError
from rectool.programs.inputs import ColumnSpec, InputSpec, to_tensors


def write_orc(table: pa.Table, path: Path, stripe_rows: int = 256) -> Path:
    """``table`` as one ORC file of several stripes (a new stripe every ``stripe_rows`` rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    orc.write_table(table, path, stripe_size=1, batch_size=stripe_rows)
    return path


def toy_orc(directory: Path, rows: int, seed: int, files: int = 2) -> Path:
    """``write_toy_ctr``'s table written as ORC files."""
    parquet = write_toy_ctr(directory.parent / f".{directory.name}-parquet", rows=rows, seed=seed, files=files)
    for f in sorted(parquet.glob("*.parquet")):
        write_orc(pq.read_table(f), directory / (f.stem + ".orc"))
    return directory


def recis_table(rows: int, seed: int = 0) -> pa.Table:
    """RecIS's CTR columns (every scalar a 1-element list) with a label the features explain."""
    rng = np.random.default_rng(seed)
    dense1 = rng.random((rows, 8))
    dense2 = rng.random((rows, 1))
    users, items = rng.integers(0, 100, rows), rng.integers(0, 300, rows)
    seq = [rng.integers(0, 1000, rng.integers(1, 40)).tolist() for _ in range(rows)]
    words = [f"w{k}" for k in range(50)]
    strs = [[words[k] for k in rng.integers(0, 50, rng.integers(1, 30))] for _ in range(rows)]
    logit = 3.0 * (dense1[:, 0] - dense1[:, 1]) + 2.0 * (dense2[:, 0] - 0.5) + np.sin(users * 1.7) \
        + np.array([0.8 if "w1" in s else -0.4 for s in strs])
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32).reshape(rows, 1)
    return pa.Table.from_pydict({
        "label": label.tolist(), "dense1": dense1.tolist(), "dense2": dense2.tolist(),
        "sparse1": users.reshape(rows, 1).tolist(), "sparse2": items.reshape(rows, 1).tolist(),
        "sparse3": (items % 20).reshape(rows, 1).tolist(), "sparse4": seq, "sparse5": strs,
    })


def write_recis(directory: Path, rows: int = 1200, files: int = 2, seed: int = 0) -> Path:
    table = recis_table(rows, seed)
    step = (rows + files - 1) // files
    for i in range(files):
        write_orc(table.slice(i * step, step), directory / f"data_{i}.orc")
    return directory


def recis_config(train: Path, model_dir: Path, **data) -> dict:
    feats = [
        {"name": "dense1", "kind": "raw", "normalizer": "zscore"},
        {"name": "dense2", "kind": "raw", "normalizer": "minmax"},
        {"name": "sparse1", "kind": "id", "hash_bucket_size": 200, "embedding_dim": 8},
        {"name": "sparse2", "kind": "id", "num_buckets": 300, "embedding_dim": 8},
        {"name": "sparse3", "kind": "id", "num_buckets": 20, "embedding_dim": 8},
        {"name": "sparse4", "kind": "sequence", "num_buckets": 1000, "max_len": 20, "embedding_dim": 8},
        {"name": "sparse5", "kind": "sequence", "hash_bucket_size": 100, "max_len": 30, "embedding_dim": 4,
         "combiner": "concat", "tile_len": 3},
    ]
    return {"data": {"train_input": str(train), "label": "label", "batch_size": 128, "num_workers": 0,
                     "shuffle_buffer": 1000, **data},
            "features": feats, "feature_groups": {"deep": [f["name"] for f in feats]},
            "model": {"type": "dcn_v2", "cross_layers": 1, "deep": {"hidden_units": [16]}},
            "optimizer": {"dense": {"type": "adam", "lr": 0.01}, "sparse": {"type": "sparse_adam", "lr": 0.02}},
            "train": {"model_dir": str(model_dir), "epochs": 3, "log_every": 4, "seed": 1}}


def _write_config(tmp_path: Path, cfg: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _losses(model_dir: Path) -> list[float]:
    lines = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x["kind"] == "train"]


def _learned(model_dir: Path) -> None:
    losses = _losses(model_dir)
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.02, losses


def _in_memory(model_dir: Path, table: pa.Table) -> np.ndarray:
    from rectool.train.export import load_trained

    _, spec, model, _ = load_trained(model_dir, "latest")
    with torch.no_grad():
        return model.probabilities(model(to_tensors(table, spec))).numpy()


def _one_line(text: str) -> str:
    text = text.strip()
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# ----------------------------------------------------------------------------- ORC where parquet is read


def test_orc_file_dir_and_glob_are_datasets(tmp_path):
    data = toy_orc(tmp_path / "orc", rows=900, seed=0, files=3)
    assert open_dataset(data).count_rows() == 900
    assert open_dataset(data / "part-1.orc").count_rows() == 300
    assert open_dataset(os.fspath(data / "part-*.orc")).count_rows() == 900
    from rectool.tablefile import TableFile

    f = TableFile(data / "part-0.orc")
    assert f.piece_rows == [256, 44] and f.read_piece(1, ["user_id"]).num_rows == 44
    assert sum(b.num_rows for b in f.iter_batches(["price"], 100)) == 300


def test_train_and_predict_read_orc(tmp_path, cli):
    train_dir = toy_orc(tmp_path / "train", rows=3000, seed=0)
    eval_dir = toy_orc(tmp_path / "eval", rows=600, seed=1, files=1)
    cfg = toy_config(train_dir, tmp_path / "model", eval_input=Path(os.fspath(eval_dir / "*.orc")))
    cfg["train"]["epochs"] = 2
    cli("train", "--config", _write_config(tmp_path, cfg))
    _learned(tmp_path / "model")
    cli("export", "--model-dir", tmp_path / "model", "--export-dir", tmp_path / "export", "--checkpoint", "latest")
    cli("predict", "--model", tmp_path / "export", "--input", eval_dir / "part-0.orc", "--output", tmp_path / "pred",
        "--reserved-columns", "user_id,label")
    pred = open_dataset(tmp_path / "pred").to_table()
    expected = _in_memory(tmp_path / "model", orc.read_table(eval_dir / "part-0.orc"))
    assert pred.num_rows == 600 and np.allclose(pred.column("score").to_numpy(), expected, atol=1e-5)
    # a corrupt ORC file or a mixed directory: one line naming the input
    (eval_dir / "part-9.orc").write_bytes(b"ORC\x00" * 30)
    res = cli("predict", "--model", tmp_path / "export", "--input", eval_dir, "--output", tmp_path / "p2", expect=2)
    assert "part-9.orc: not readable as ORC" in _one_line(res.stderr)
    (eval_dir / "part-9.orc").unlink()
    pq.write_table(orc.read_table(eval_dir / "part-0.orc"), eval_dir / "part-1.parquet")
    res = cli("predict", "--model", tmp_path / "export", "--input", eval_dir, "--output", tmp_path / "p3", expect=2)
    assert "holds both ORC and parquet files" in _one_line(res.stderr)


# ----------------------------------------------------------------------------- list-valued columns


def test_recis_table_trains_exports_and_predicts(tmp_path, cli):
    data = write_recis(tmp_path / "fake_data", rows=1600)
    cfg = recis_config(data, tmp_path / "model", eval_input=str(data / "data_1.orc"))
    cli("train", "--config", _write_config(tmp_path, cfg))
    _learned(tmp_path / "model")
    spec = InputSpec.from_json((tmp_path / "model" / "input_spec.json").read_text())
    kinds = {c.name: (c.kind, c.width) for c in spec.columns}
    assert kinds["dense1"] == ("float_vector", 8) and kinds["dense2"] == ("float", None)
    assert kinds["sparse1"] == ("int", None) and kinds["sparse5"] == ("string_list", 30)
    from rectool.train.export import load_trained

    _, _, model, _ = load_trained(tmp_path / "model", "latest")
    means = model.engine.normalizers["dense1"].a.numpy()
    assert means.shape == (8,) and np.allclose(means, 0.5, atol=0.05), "z-score per component of dense1"
    cli("export", "--model-dir", tmp_path / "model", "--export-dir", tmp_path / "export", "--checkpoint", "latest")
    cli("predict", "--model", tmp_path / "export", "--input", data, "--output", tmp_path / "pred",
        "--reserved-columns", "sparse1", "--batch-size", "333")
    pred = open_dataset(tmp_path / "pred").to_table()
    expected = _in_memory(tmp_path / "model", open_dataset(data).to_table())
    assert pred.num_rows == 1600 and np.allclose(pred.column("score").to_numpy(), expected, atol=1e-5)


def test_list_columns_become_tensors():
    spec = InputSpec(columns=[ColumnSpec("uid", "int", default=-1), ColumnSpec("d1", "float_vector", width=2),
                              ColumnSpec("d2", "float"), ColumnSpec("tag", "string")], label="label")
    table = pa.table({"uid": [[7], [], None], "d1": pa.array([[0.5, 1.0], None, [2, 3]], pa.list_(pa.float64())),
                      "d2": [[1.5], [2.5], None], "tag": [["a"], ["b"], ["a"]], "label": [[1.0], [0.0], [1.0]]})
    t = to_tensors(table, spec)
    assert t["uid"].tolist() == [7, -1, -1] and t["d1"].tolist() == [[0.5, 1.0], [0.0, 0.0], [2.0, 3.0]]
    assert t["d2"].tolist() == [1.5, 2.5, 0.0] and t["label"].tolist() == [1.0, 0.0, 1.0]
    assert t["tag"][0] == t["tag"][2] != t["tag"][1]
    fixed = pa.table({"uid": [1, 2], "d1": pa.array([[1, 2], [3, 4]], pa.list_(pa.float32(), 2)), "d2": [1.0, 2.0],
                      "tag": ["a", "b"]})
    assert to_tensors(fixed, spec)["d1"].tolist() == [[1, 2], [3, 4]]
    with pytest.raises(UserError, match=r"f\.orc: column d1: row 41 holds 1 value, expected 2"):
        to_tensors(fixed.set_column(1, "d1", pa.array([[1.0, 2.0], [3.0]])), spec, source="f.orc", row_base=40)
    with pytest.raises(UserError, match="column uid: row 1 of a 2-row batch holds 2 values; an id or raw feature"):
        to_tensors(fixed.set_column(0, "uid", pa.array([[1], [2, 3]])), spec)


# ----------------------------------------------------------------------------- delimited-string sequences


def test_delimited_sequences_read_like_lists():
    hist = [[1, 2, 3], [], None, [4, 5]]
    spec = InputSpec(columns=[ColumnSpec("h", "int_list", width=2, separator=";")])
    listed = to_tensors(pa.table({"h": pa.array(hist, pa.list_(pa.int64()))}), spec)
    joined = to_tensors(pa.table({"h": ["1;2;3", "", None, " 4 ;5;"]}), spec)
    assert all(torch.equal(listed[k], joined[k]) for k in ("h", "h__len"))
    assert joined["h"].tolist() == [[2, 3], [0, 0], [0, 0], [4, 5]] and joined["h__len"].tolist() == [2, 0, 0, 2]
    with pytest.raises(UserError, match="column h: 'x7' in a ';'-separated sequence is not an integer id"):
        to_tensors(pa.table({"h": ["1;x7"]}), spec, source="in")
    words = InputSpec(columns=[ColumnSpec("w", "string_list", width=3, separator="|")])
    a = to_tensors(pa.table({"w": ["a|b", "b"]}), words)
    b = to_tensors(pa.table({"w": pa.array([["a", "b"], ["b"]])}), words)
    assert torch.equal(a["w"], b["w"]) and a["w__len"].tolist() == [2, 1]


def test_delimited_sequence_trains_and_exports(tmp_path, cli):
    src = write_toy_ctr(tmp_path / "src", rows=3000, files=1)
    table = pq.read_table(src / "part-0.parquet")
    joined = [";".join(str(i) for i in h) for h in table.column("hist_items").to_pylist()]
    table = table.drop_columns(["hist_items"]).append_column("hist_items", pa.array(joined))
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "part-0.parquet", row_group_size=1000)
    cfg = toy_config(tmp_path / "data", tmp_path / "model", model="din", eval_input=tmp_path / "data")
    for f in cfg["features"]:
        if f["kind"] == "sequence":
            f["separator"] = ";"
    cfg["train"]["epochs"] = 2
    cli("train", "--config", _write_config(tmp_path, cfg))
    _learned(tmp_path / "model")
    spec = InputSpec.from_json((tmp_path / "model" / "input_spec.json").read_text())
    assert spec.column("hist_items").kind == "int_list" and spec.column("hist_items").separator == ";"
    cli("export", "--model-dir", tmp_path / "model", "--export-dir", tmp_path / "export", "--checkpoint", "latest")
    cli("predict", "--model", tmp_path / "export", "--input", tmp_path / "data", "--output", tmp_path / "pred")
    pred = open_dataset(tmp_path / "pred").to_table()
    assert np.allclose(pred.column("score").to_numpy(), _in_memory(tmp_path / "model", table), atol=1e-5)


def test_sequence_config_separator_and_concat(tmp_path):
    from rectool.train.config import Config
    from rectool.train.schema import build_input_spec

    table = pa.table({"s": ["a;b", ""], "n": ["1;2", "3"], "label": [0, 1]})
    feats = [{"name": "s", "kind": "sequence", "separator": ";", "hash_bucket_size": 10, "embedding_dim": 4,
              "max_len": 3, "combiner": "concat", "tile_len": 2},
             {"name": "n", "kind": "sequence", "separator": ";", "num_buckets": 10, "embedding_dim": 4, "max_len": 3}]
    cfg = Config.model_validate({"data": {"train_input": str(tmp_path), "label": "label"}, "features": feats,
                                 "feature_groups": {"deep": ["s", "n"]}, "model": {"type": "dcn_v2"},
                                 "train": {"model_dir": str(tmp_path / "m")}})
    assert cfg.features[0].combiner == "tile"
    spec = build_input_spec(cfg, table.schema, "t")
    assert [(c.kind, c.separator) for c in spec.columns] == [("string_list", ";"), ("int_list", ";")]
    plain = cfg.model_copy(update={"features": [cfg.features[1].model_copy(update={"separator": None})]})
    with pytest.raises(UserError, match="must be a list of ids \\(is string\\); set separator"):
        build_input_spec(plain, table.schema, "t")


# ----------------------------------------------------------------------------- bad inputs, one line each


def test_bad_inputs_are_one_line(tmp_path, cli):
    table = recis_table(600)
    rows = table.column("dense1").to_pylist()
    rows[400] = rows[400][:7]  # in a later stripe than the first rows
    bad = write_orc(table.set_column(1, "dense1", pa.array(rows)), tmp_path / "short" / "data_0.orc")
    cfg = recis_config(bad.parent, tmp_path / "m1")
    res = cli("train", "--config", _write_config(tmp_path, cfg), expect=2)
    assert "data_0.orc: column dense1: row 400 holds 7 values, expected 8" in _one_line(res.stderr)

    mixed = write_recis(tmp_path / "mixed", rows=300, files=1)
    pq.write_table(recis_table(10), mixed / "extra.parquet")
    res = cli("train", "--config", _write_config(tmp_path, recis_config(mixed, tmp_path / "m2")), expect=2)
    assert "holds both ORC and parquet files" in _one_line(res.stderr)
    with pytest.raises(UserError, match="holds both ORC and parquet files"):
        open_dataset(mixed)

    broken = write_recis(tmp_path / "broken", rows=300, files=2)
    (broken / "data_1.orc").write_bytes(b"ORC" + b"\x00garbage" * 20)
    res = cli("train", "--config", _write_config(tmp_path, recis_config(broken, tmp_path / "m3")), expect=2)
    assert "data_1.orc: not readable as ORC" in _one_line(res.stderr)
    from rectool.badinput import read_table

    with pytest.raises(UserError, match=r"--input .*broken: .*data_1\.orc: not readable as ORC"):
        read_table(open_dataset(broken), f"--input {broken}")  # what every command's reader does

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no parquet or ORC file"):
        open_dataset(tmp_path / "empty")


def test_long_list_for_an_id_feature_is_refused(tmp_path):
    from rectool.train.config import Config
    from rectool.train.schema import build_input_spec

    data = write_recis(tmp_path / "d", rows=50, files=1)
    raw = recis_config(data, tmp_path / "m")
    raw["features"][2] = {"name": "sparse1", "kind": "id", "input": "sparse4", "hash_bucket_size": 10,
                          "embedding_dim": 8}
    cfg = Config.model_validate(raw)
    with pytest.raises(UserError, match="column 'sparse4' holds lists .* use kind: sequence"):
        build_input_spec(cfg, open_dataset(data).schema, str(data))


def test_a_sharded_orc_input_is_dealt_by_file(tmp_path):
    from rectool.sharding import Shard

    data = write_recis(tmp_path / "d", rows=400, files=4)
    ds = open_dataset(data)
    shares = [Shard(r, 2).dataset(ds).count_rows() for r in range(2)]
    assert shares == [200, 200]


def test_item_frequencies_read_orc_like_parquet_piece_by_piece(tmp_path):
    """The two-tower's log-Q counts (``model.item_id`` over the training files) from ORC or parquet."""

    from rectool.train.models.retrieval import item_frequencies

    ids = pa.table({"item_id": pa.array(np.random.default_rng(0).integers(0, 50, 5000), pa.int64())})
    pq.write_table(ids, tmp_path / "a.parquet", row_group_size=700)
    orc.write_table(ids, tmp_path / "a.orc", stripe_size=4096)
    want = np.unique(ids.column("item_id").to_numpy(), return_counts=True)
    for name in ("a.parquet", "a.orc"):
        got = item_frequencies([str(tmp_path / name)], "item_id")
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), name


def test_events_in_orc_are_pointed_to_convert(tmp_path, cli):
    """The DuckDB stages read events as parquet: an ORC events table gets the convert command, not a parse error."""
    import datetime as dt

    (tmp_path / "ev").mkdir()
    orc.write_table(pa.table({"user_id": [1, 2], "item_id": [3, 4], "behavior": ["pv", "buy"],
                              "time": pa.array([dt.datetime(2020, 1, 1)] * 2, pa.timestamp("us"))}),
                    tmp_path / "ev" / "e.orc")
    res = cli("dataset", "--task", "next-item", "--events", tmp_path / "ev", "-o", tmp_path / "out", expect=2)
    assert "e.orc: events are read as parquet" in _one_line(res.stderr) and "rectool convert" in res.stderr
    assert not (tmp_path / "out").exists()
