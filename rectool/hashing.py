"""Stable 64-bit hashing of ids: the same value gives the same int64 on every machine and run.

Strings (``hash_strings``)
    FNV-1a 64 over the UTF-8 bytes, then the splitmix64 finaliser, read as a signed
    int64. Null strings hash to 0. Example: ``hash_strings(pa.array(["a"]))`` ->
    ``[-5153661184390089497]``... (see tests for fixed values).

Integers (``mix64`` / ``mix64_torch``)
    The splitmix64 finaliser (Steele et al., "Fast splittable pseudorandom number
    generators", 2014) on the two's-complement bits of an int64, read back as int64.
    The NumPy and torch versions agree bit for bit, so a hash bucket computed while
    preparing data equals the one computed inside an exported model.

Buckets: ``bucket = mix64(x) mod n`` with the non-negative modulo, in [0, n).
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


@numba.njit(cache=True)
def _splitmix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def _fnv_strings(offsets: np.ndarray, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = offsets.size - 1
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        if not valid[i]:
            out[i] = 0
            continue
        h = FNV_OFFSET
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * FNV_PRIME
        out[i] = _splitmix(h)
    return out


@numba.njit(cache=True)
def _mix_array(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.size, dtype=np.uint64)
    for i in range(x.size):
        out[i] = _splitmix(np.uint64(x[i]))
    return out


def hash_strings(values: pa.Array | pa.ChunkedArray | list[str | None]) -> np.ndarray:
    """int64 hashes of strings (null -> 0)."""
    arr = pa.array(values, pa.string()) if isinstance(values, list) else values
    if isinstance(arr, pa.ChunkedArray):
        return np.concatenate([hash_strings(c) for c in arr.chunks]) if arr.num_chunks else np.empty(0, np.int64)
    if pa.types.is_dictionary(arr.type):
        idx = arr.indices.fill_null(0).to_numpy(zero_copy_only=False)
        out = hash_strings(arr.dictionary)[idx] if len(arr.dictionary) else np.zeros(len(arr), np.int64)
        out[~arr.is_valid().to_numpy(zero_copy_only=False)] = 0
        return out
    arr = arr.cast(pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return _fnv_strings(offsets, data, valid).view(np.int64)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of int64 values, as int64."""
    return _mix_array(np.ascontiguousarray(x, dtype=np.int64)).view(np.int64)


def bucket(x: np.ndarray, n: int) -> np.ndarray:
    """Hash bucket in [0, n) of int64 ids."""
    return np.mod(mix64(x), n)


def mix64_torch(x):  # noqa: ANN001, ANN201 (torch is imported lazily)
    """The same finaliser on an int64 torch tensor (exportable: only int64 ops)."""
    import torch

    def lsr(v: torch.Tensor, k: int) -> torch.Tensor:  # logical shift right on int64 bits
        return (v >> k) & ((1 << (64 - k)) - 1)

    m1 = torch.tensor(_M1 - (1 << 64), dtype=torch.int64)  # the same bits as signed int64
    m2 = torch.tensor(_M2 - (1 << 64), dtype=torch.int64)
    z = x.to(torch.int64)
    z = (z ^ lsr(z, 30)) * m1
    z = (z ^ lsr(z, 27)) * m2
    return z ^ lsr(z, 31)
