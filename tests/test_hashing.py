"""Stable hashing: fixed values, NumPy == torch, buckets in range."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from rectool.hashing import bucket, hash_strings, mix64, mix64_torch


def _fnv_splitmix_reference(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return _splitmix_reference(h)


def _splitmix_reference(z: int) -> int:
    z %= 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    z ^= z >> 31
    return z - 2**64 if z >= 2**63 else z


def test_strings_match_plain_python_reference():
    values = ["", "a", "05db9164", "日本", None, "x" * 100]
    got = hash_strings(values)
    want = [_fnv_splitmix_reference(v) if v is not None else 0 for v in values]
    assert got.tolist() == want


def test_chunked_sliced_and_dictionary_arrays_agree():
    arr = pa.array(["u", "v", None, "w", "u"])
    base = hash_strings(arr)
    assert hash_strings(arr.slice(1, 3)).tolist() == base[1:4].tolist()
    assert hash_strings(pa.chunked_array([arr.slice(0, 2), arr.slice(2)])).tolist() == base.tolist()
    assert hash_strings(arr.dictionary_encode()).tolist() == base.tolist()


def test_int_mix_numpy_equals_torch_and_reference():
    x = np.array([0, 1, -1, 2**62, -(2**63), 123456789012, 4_758_484], dtype=np.int64)
    got = mix64(x)
    assert got.tolist() == [_splitmix_reference(int(v)) for v in x]
    assert mix64_torch(torch.from_numpy(x)).tolist() == got.tolist()


def test_buckets_in_range_and_spread():
    b = bucket(np.arange(100_000, dtype=np.int64), 97)
    assert b.min() >= 0 and b.max() < 97
    counts = np.bincount(b, minlength=97)
    assert counts.min() > 0.8 * counts.mean()
