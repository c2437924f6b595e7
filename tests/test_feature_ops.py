"""Each feature op against a hand-computed example (the RecIS docstring examples, checked)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from rectool.errors import UserError
from rectool.hashing import bucket, hash_strings
from rectool.programs.inputs import ColumnSpec, InputSpec, pad_lists, to_tensors
from rectool.train.features import Bucketize, Cross, HashBucket, IdBucket, Normalize, SequenceTruncate, VocabLookup


def test_hash_bucket_matches_numpy_and_is_stable():
    x = torch.tensor([7, 7, 8, -3, 2**40])
    out = HashBucket(10)(x)
    assert out.tolist() == bucket(x.numpy(), 10).tolist()
    assert out[0] == out[1] and out.min() >= 0 and out.max() < 10


def test_id_bucket_and_modulo():
    assert IdBucket(5, modulo=True)(torch.tensor([3, 7, -1])).tolist() == [3, 2, 4]
    assert IdBucket(5, modulo=False)(torch.tensor([3, 4])).tolist() == [3, 4]


def test_vocab_lookup_ints_and_strings():
    assert VocabLookup([10, 20, 30])(torch.tensor([20, 99, 10])).tolist() == [2, 0, 1]
    strings = torch.from_numpy(hash_strings(["b", "zz", "a"]))
    assert VocabLookup(["a", "b"])(strings).tolist() == [2, 0, 1]


def test_normalizers():
    x = torch.tensor([0.0, 9.0, -9.0])
    assert torch.allclose(Normalize("log1p")(x), torch.tensor([0.0, float(np.log(10.0)), -float(np.log(10.0))]))
    assert torch.allclose(Normalize("zscore", 3.0, 2.0)(torch.tensor([3.0, 7.0])), torch.tensor([0.0, 2.0]))
    assert torch.allclose(Normalize("minmax", 2.0, 6.0)(torch.tensor([2.0, 4.0])), torch.tensor([0.0, 0.5]))


def test_bucketize_boundaries_are_left_closed():
    assert Bucketize([1.0, 5.0])(torch.tensor([0.0, 1.0, 4.9, 5.0, 7.0])).tolist() == [0, 1, 1, 2, 2]


def test_cross_is_order_sensitive_hash_in_range():
    a, b = torch.tensor([1, 1, 2]), torch.tensor([2, 3, 1])
    out = Cross(100)(a, b)
    assert out.min() >= 0 and out.max() < 100
    assert out[0] != out[1] or out[0] != out[2]
    assert torch.equal(Cross(100)(a, b), out), "deterministic"
    assert Cross(1000)(a, b, a).shape == (3,)


def test_sequence_truncate_both_sides():
    values = torch.tensor([[1, 2, 3, 4], [9, 0, 0, 0], [0, 0, 0, 0]])
    lengths = torch.tensor([4, 1, 0])
    last, n = SequenceTruncate(2, keep_last=True)(values, lengths)
    assert last.tolist() == [[3, 4], [9, 0], [0, 0]] and n.tolist() == [2, 1, 0]
    first, _ = SequenceTruncate(3, keep_last=False)(values, lengths)
    assert first.tolist() == [[1, 2, 3], [9, 0, 0], [0, 0, 0]]


def test_pad_lists_kernel_against_python():
    rng = np.random.default_rng(0)
    lists = [list(rng.integers(0, 100, rng.integers(0, 9))) for _ in range(200)]
    offsets = np.cumsum([0] + [len(x) for x in lists])
    values = np.array([v for x in lists for v in x], dtype=np.int64)
    for keep_last in (True, False):
        out, lengths = pad_lists(offsets, values, 4, keep_last)
        for row, x in zip(range(len(lists)), lists):
            kept = (x[-4:] if keep_last else x[:4])
            assert out[row, : len(kept)].tolist() == [int(v) for v in kept]
            assert lengths[row] == len(kept) and not out[row, len(kept):].any()


def test_to_tensors_kinds_nulls_and_range_check():
    spec = InputSpec(columns=[ColumnSpec("u", "int", default=-1), ColumnSpec("s", "string"),
                              ColumnSpec("f", "float", default=0.5), ColumnSpec("h", "int_list", width=2),
                              ColumnSpec("k", "int", num_buckets=3, feature="kf")], label="y")
    table = pa.table({"u": [1, None], "s": ["a", None], "f": [None, 2.0], "h": [[1, 2, 3], None], "k": [0, 2],
                      "y": [1, 0]})
    x = to_tensors(table, spec)
    assert x["u"].tolist() == [1, -1] and x["s"].tolist() == [int(hash_strings(["a"])[0]), 0]
    assert x["f"].tolist() == [0.5, 2.0] and x["h"].tolist() == [[2, 3], [0, 0]] and x["h__len"].tolist() == [2, 0]
    assert x["label"].dtype == torch.float32
    bad = table.set_column(4, "k", pa.array([0, 3]))
    with pytest.raises(UserError, match="column k: id 3 is outside num_buckets=3 of feature kf"):
        to_tensors(bad, spec, source="data.parquet")
    with pytest.raises(UserError, match="missing column"):
        to_tensors(table.drop_columns(["s"]), spec)
