"""The streaming loader: every row once per epoch, deterministic order, disjoint DDP shards; metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import write_toy_ctr
from rectool.programs.inputs import ColumnSpec, InputSpec
from rectool.train.data import Loader
from rectool.train.metrics import compute, gauc

SPEC = InputSpec(columns=[ColumnSpec("user_id", "int"), ColumnSpec("price", "float"),
                          ColumnSpec("hist_items", "int_list", width=3)], label="label")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_toy_ctr(tmp_path_factory.mktemp("d") / "t", rows=5000, files=3, row_group=700)


def _rows(loader, epoch=0):
    batches = list(loader.batches(epoch))
    # a row's identity: its user and the exact bits of its (continuous, distinct) price
    keys = torch.cat([b["user_id"] * 2**32 + b["price"].view(torch.int32).long() for b in batches]).tolist()
    return batches, keys


def _loader(data, **kw):
    args = dict(batch_size=128, num_workers=0, seed=3, shuffle=True, shuffle_buffer=1000, drop_remainder=False)
    args.update(kw)
    return Loader(str(data), SPEC, **args)


def test_each_row_once_and_steps_match(data):
    import pyarrow.dataset as ds

    table = ds.dataset(data).to_table()
    expected = sorted((np.asarray(table["user_id"]) * 2**32
                       + np.asarray(table["price"], dtype=np.float32).view(np.int32).astype(np.int64)).tolist())
    loader = _loader(data)
    batches, keys = _rows(loader)
    assert sorted(keys) == expected
    assert len(batches) == loader.steps_per_epoch(0)
    assert all(b["hist_items"].shape[1] == 3 for b in batches)


def test_order_is_seeded_and_changes_per_epoch(data):
    _, a = _rows(_loader(data))
    _, b = _rows(_loader(data))
    _, c = _rows(_loader(data), epoch=1)
    assert a == b and a != c and sorted(a) == sorted(c)


def test_workers_give_the_same_rows(data):
    _, single = _rows(_loader(data))
    loader = _loader(data, num_workers=2)
    batches, multi = _rows(loader)
    assert sorted(single) == sorted(multi) and len(batches) == loader.steps_per_epoch(0)


def test_ranks_are_disjoint_and_equal_length(data):
    parts = [_loader(data, rank=r, world=2, drop_remainder=True) for r in range(2)]
    keys = [set(_rows(p)[1]) for p in parts]
    assert not keys[0] & keys[1]
    assert parts[0].steps_per_epoch(0) == parts[1].steps_per_epoch(0)
    assert all(len(list(p.batches(0))) >= p.steps_per_epoch(0) for p in parts)


def test_drop_remainder_gives_full_batches(data):
    batches, _ = _rows(_loader(data, drop_remainder=True))
    assert all(b["label"].shape[0] == 128 for b in batches)


def test_gauc_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 3000)
    labels = (rng.random(3000) < 0.3).astype(np.float32)
    scores = np.round(rng.random(3000) + labels * 0.3, 2)  # ties on purpose
    total, weight = 0.0, 0.0
    for g in np.unique(groups):
        m = groups == g
        y, s = labels[m], scores[m]
        if 0 < y.sum() < len(y):
            pos, neg = s[y == 1], s[y == 0]
            auc = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
                len(pos) * len(neg))
            total += auc * m.sum()
            weight += m.sum()
    assert gauc(scores, labels, groups) == pytest.approx(total / weight)
    out = compute(["auc", "logloss"], scores.clip(0, 1), labels)
    assert 0.5 < out["auc"] < 1 and out["logloss"] > 0
