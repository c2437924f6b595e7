"""GRU4Rec and SASRec user encoders: they learn the toy sequences, export, and padding never leaks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch

from helpers import retrieval_config, write_toy_sequences
from rectool.errors import UserError
from rectool.train.config import Config
from rectool.train.trainer import train

ENCODERS = {"gru4rec": {"type": "gru4rec", "history": "hist"},
            "sasrec": {"type": "sasrec", "history": "hist", "blocks": 2, "heads": 2, "dropout": 0.1}}


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    return write_toy_sequences(tmp_path_factory.mktemp("seq"))


def _model(cfg_dict: dict):
    from rectool.train.models import build_model
    from rectool.train.schema import build_input_spec

    cfg = Config.model_validate(cfg_dict)
    spec = build_input_spec(cfg, pads.dataset(cfg.data.train_input).schema, cfg.data.train_input)
    return build_model(cfg, spec, extras={})


def _users(width: int = 5, pad: int = 0) -> dict[str, torch.Tensor]:
    """Four users: histories of 0, 1, 3 and 5 items (most recent last), padded to ``width`` with ``pad``."""
    hist = [[], [17], [40, 41, 42], [100, 101, 102, 103, 104]]
    cats = [[], [1], [2, 2, 2], [4, 4, 4, 4, 4]]

    def padded(rows):
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)

    lengths = torch.tensor([len(r) for r in hist])
    return {"hist_item_ids": padded(hist), "hist_item_ids__len": lengths,
            "hist_category_ids": padded(cats), "hist_category_ids__len": lengths}


def _user_vectors(model, x: dict[str, torch.Tensor]) -> torch.Tensor:
    from rectool.train.models.retrieval import UserTower

    with torch.no_grad():
        return UserTower(model)(x)


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_encoder_learns_exports_and_equals_the_model(seqs, tmp_path, cli, encoder):
    cfg = Config.model_validate(retrieval_config(seqs, tmp_path / "m", user_encoder=ENCODERS[encoder]))
    summary = train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if x["kind"] == "train"]
    assert np.mean(losses[-3:]) < np.mean(losses[:2]) - 0.3
    # 128 items per batch, one cluster of 30 items holds the target: random hit@10 would be ~0.08
    assert summary["eval_inbatch_hit@10"] > 0.3

    cli("export", "--model-dir", tmp_path / "m", "--export-dir", tmp_path / "ex")
    from rectool.programs.load import load_program
    from rectool.train.export import load_trained

    program, spec = load_program(tmp_path / "ex", "user_tower")
    assert "hist_item_ids" in spec.names and "item_id" not in spec.names
    _, _, model, _ = load_trained(tmp_path / "m", "latest")
    # short and empty histories, one row, garbage padding (the program reads the spec's width, 5)
    for batch in (_users(), {k: v[[2]] for k, v in _users().items()}, _users(pad=77)):
        expected = _user_vectors(model, batch)
        got = program(batch)
        assert got.shape == expected.shape == (batch["hist_item_ids"].shape[0], 16)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    cli("embed", "--model", tmp_path / "ex", "--items", seqs / "items", "--output", tmp_path / "emb",
        "--reserved-columns", "category_id")
    cli("retrieve", "--method", "brute", "--model", tmp_path / "ex", "--items", tmp_path / "emb", "--users",
        seqs / "train", "--topk", "10", "-o", tmp_path / "r")
    assert pads.dataset(tmp_path / "r").count_rows() > 0


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_padding_does_not_change_a_users_vector(seqs, tmp_path, encoder):
    torch.manual_seed(0)
    model = _model(retrieval_config(seqs, tmp_path / "m", user_encoder=ENCODERS[encoder]))
    model.eval()
    base = _user_vectors(model, _users())
    for width, pad in ((5, 3), (8, 0), (12, 250)):  # garbage or more padding after the valid items
        torch.testing.assert_close(_user_vectors(model, _users(width, pad)), base, rtol=0, atol=1e-6)
    # ... while the valid items do matter
    other = _users()
    other["hist_item_ids"][3, 0] = 200
    assert not torch.allclose(_user_vectors(model, other)[3], base[3])


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_the_state_depends_only_on_the_valid_steps(encoder):
    """The encoder alone: whatever the padded steps' embeddings, the output is the same; an empty history is 0."""
    from rectool.train.model_config import GRU4RecEncoderConfig, SASRecEncoderConfig
    from rectool.train.models.encoders import ENCODERS as MODULES

    cfg = (GRU4RecEncoderConfig if encoder == "gru4rec" else SASRecEncoderConfig).model_validate(
        {**ENCODERS[encoder], "dropout": 0.0})
    torch.manual_seed(0)
    enc = MODULES[encoder](8, 6, cfg).eval()
    lengths = torch.tensor([0, 1, 4, 6])
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    emb = torch.randn(4, 6, 8)
    noisy = torch.where(mask.unsqueeze(-1), emb, torch.randn(4, 6, 8) * 10)
    with torch.no_grad():
        out, out_noisy = enc(emb, mask), enc(noisy, mask)
        alone = torch.stack([enc(emb[[i], :n], mask[[i], :n])[0] if n else torch.zeros(enc.out_dim)
                             for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(out, out_noisy, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-6)  # = the same history with no padding at all
    assert torch.equal(out[0], torch.zeros(enc.out_dim))
    assert out.shape == (4, enc.out_dim)


@pytest.mark.parametrize("mode", ["pointwise", "pairwise"])
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_encoders_train_with_every_loss_mode(seqs, tmp_path, encoder, mode):
    model = _model(retrieval_config(seqs, tmp_path / "m", user_encoder=ENCODERS[encoder],
                                    loss={"temperature": 0.1, "mode": mode}))
    model.train()
    batch = _users() | {"item_id": torch.tensor([3, 17, 43, 105]), "category_id": torch.tensor([0, 1, 2, 4])}
    loss = model.loss(model(batch), batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.encoder.parameters().__next__().grad is not None


def test_default_is_pooling_and_the_history_is_checked(seqs, tmp_path):
    cfg = Config.model_validate(retrieval_config(seqs, tmp_path / "m"))
    assert cfg.model.user_encoder.type == "pooling"
    torch.manual_seed(0)
    pooled = _model(retrieval_config(seqs, tmp_path / "m"))
    assert not hasattr(pooled, "encoder") and pooled.raw_sequences == ["hist"]
    for history in ("hist_cat", "nope"):  # combiner mean; not a feature
        with pytest.raises(UserError, match="model.user_encoder.history"):
            _model(retrieval_config(seqs, tmp_path / "m", user_encoder={"type": "gru4rec", "history": history}))
    with pytest.raises(UserError, match="heads 3 must divide"):
        _model(retrieval_config(seqs, tmp_path / "m", user_encoder={"type": "sasrec", "history": "hist", "heads": 3}))
