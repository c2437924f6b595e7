"""Tiny data for the retrieval tests: embedding tables and recall/truth tables on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Gaussian-mixture vectors (float32), like real item embeddings."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    return (centers[labels] + 0.4 * rng.standard_normal((n, dim))).astype(np.float32)


def embedding_table(vectors: np.ndarray, ids: np.ndarray | None = None, fixed: bool = True,
                    **extra: np.ndarray) -> pa.Table:
    n, dim = vectors.shape
    ids = np.arange(1000, 1000 + n, dtype=np.int64) if ids is None else ids
    flat = pa.array(vectors.astype(np.float32).ravel())
    emb = pa.FixedSizeListArray.from_arrays(flat, dim) if fixed else \
        pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * dim), flat)
    return pa.table({"item_id": ids, "item_emb": emb, **extra})


def write_embeddings(path: Path, vectors: np.ndarray, ids: np.ndarray | None = None, fixed: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(embedding_table(vectors, ids, fixed), path)
    return path


def write_lists(path: Path, users: list[int], lists: list[list[int]], column: str = "item_ids") -> Path:
    """A truth/history table in list form."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": pa.array(users, pa.int64()),
                             column: pa.array(lists, pa.list_(pa.int64()))}), path)
    return path


def write_pairs(path: Path, pairs: list[tuple[int, int]]) -> Path:
    """A truth/history table in long form."""
    path.parent.mkdir(parents=True, exist_ok=True)
    users, items = zip(*pairs, strict=True) if pairs else ((), ())
    pq.write_table(pa.table({"user_id": pa.array(users, pa.int64()), "item_id": pa.array(items, pa.int64())}), path)
    return path
