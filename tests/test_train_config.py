"""Training config: validation errors that name the key and the allowed values; --set overrides."""

from __future__ import annotations

import pytest
import yaml

from helpers import toy_config
from rectool.errors import UserError
from rectool.train.config import load_config


def _write(tmp_path, cfg):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _base(tmp_path):
    return toy_config(tmp_path / "train", tmp_path / "model")


def test_valid_config_and_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, _base(tmp_path)), ["train.epochs=5", "features.0.embedding_dim=4",
                                                          "data.batch_size=128"])
    assert cfg.train.epochs == 5 and cfg.features[0].embedding_dim == 4 and cfg.data.batch_size == 128


@pytest.mark.parametrize("mutate,expected", [
    (lambda c: c["train"].update(epoch=2), "train.epoch: unknown key (did you mean 'epochs'?); allowed:"),
    (lambda c: c["model"].update(type="deepfn"),
     "model: 'type' 'deepfn' is unknown; choose one of 'wide_and_deep', 'deepfm'"),
    (lambda c: c["optimizer"]["dense"].update(type="adamax"), "optimizer.dense.type: got 'adamax'; input should be"),
    (lambda c: c["data"].update(batch_size="big"), "data.batch_size: Input should be a valid integer"),
    (lambda c: c.pop("train"), "train: required key is missing"),
    (lambda c: c["feature_groups"]["deep"].append("user_idd"), "unknown feature 'user_idd' (did you mean 'user_id'?)"),
    (lambda c: c["features"][0].update(num_buckets=5), "give exactly one of hash_bucket_size, num_buckets"),
    (lambda c: c["features"][7].update(combiner="tile"), "combiner tile needs tile_len"),
    (lambda c: c["features"][1].update(embedding_dim=4), "shared tables need the same dim"),
])
def test_config_errors_are_one_line_and_name_the_key(tmp_path, mutate, expected):
    cfg = _base(tmp_path)
    mutate(cfg)
    with pytest.raises(UserError) as err:
        load_config(_write(tmp_path, cfg))
    msg = str(err.value)
    assert expected in msg and "\n" not in msg and str(tmp_path / "c.yaml") in msg


def test_unknown_key_lists_allowed_values(tmp_path):
    cfg = _base(tmp_path)
    cfg["optimizer"]["warmup"] = 10
    with pytest.raises(UserError, match="allowed: clip_grad_norm, decay_rate, decay_steps, dense, min_lr_ratio"):
        load_config(_write(tmp_path, cfg))


def test_bad_yaml_and_bad_set(tmp_path, cli):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    res = cli("config", "check", path, expect=2)
    assert "not valid YAML" in res.stderr
    good = _write(tmp_path, _base(tmp_path))
    res = cli("config", "check", good, "--set", "train.epochs", expect=2)
    assert "expected KEY.PATH=VALUE" in res.stderr
    res = cli("config", "check", good, "--set", "train.epochs=zero", expect=2)
    assert "train.epochs" in res.stderr


def test_config_check_against_data(tmp_path, cli):
    from helpers import write_toy_ctr

    write_toy_ctr(tmp_path / "train", rows=500)
    good = _write(tmp_path, _base(tmp_path))
    res = cli("config", "check", good)
    assert "parameters" in res.stderr and res.stdout.strip() == str(good)
    cfg = _base(tmp_path)
    cfg["features"][0]["input"] = "usr"
    res = cli("config", "check", _write(tmp_path, cfg), expect=2)
    assert "features.user_id: column 'usr' is not in" in res.stderr
