"""The compact tree: flat int64 arrays in level order, shared by the sampler and the beam search.

Conventions (TorchEasyRec's TDM trees)
    Codes: the root is 0 and the children of code ``c`` are ``n*c+1 ... n*c+n``. Every
    item is a leaf and all leaves sit on the last level ``L``, the smallest with
    ``n**L >= items``. A leaf built higher up is *pulled down* to its leftmost
    descendant (``c -> n*c+1`` until it reaches level ``L``), leaving a chain of
    single-child nodes above it. Node ids: a leaf's id is its item id, a non-leaf's
    id is ``max(0, max_item_id) + code + 1``.

Layout (node index = position in level order = rank of the code)::

    codes          int64 [nodes]     ascending: level 0 (root), level 1, ..., level L (leaves)
    node_ids       int64 [nodes]     item id for leaves, max(0, max item id) + code + 1 otherwise
    parents        int64 [nodes]     node index of the parent, -1 for the root
    level_offsets  int64 [L+2]       level l holds nodes level_offsets[l] : level_offsets[l+1]
    child_offsets  int64 [nodes+1]   children of node i are child_offsets[i] : child_offsets[i+1]
    item_sorted    int64 [items]     leaf item ids, sorted (for id -> leaf lookups)
    item_leaf      int64 [items]     node index of the leaf holding item_sorted[j]

Stored as one ``.npy`` file per array (and ``n_cluster.npy``) in ``compact/`` of the tree
directory; ``load_tree(dir)`` memory-maps them read-only, in about a millisecond whatever
the size (pages are read on first touch and shared by every process that loads the tree,
e.g. data-loader workers). Example, 5 items, binary::

    tree = tree_from_codes(np.array([10, 11, 12, 13, 14]), np.array([13, 11, 9, 8, 7]), 2)
    tree.codes          # [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13]
    tree.leaf_item_ids  # [14, 13, 12, 11, 10]
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rectool.errors import UserError

COMPACT_DIR = "compact"
INT64_MAX = np.iinfo(np.int64).max
_ARRAYS = ("codes", "node_ids", "parents", "level_offsets", "child_offsets", "item_sorted", "item_leaf")


def leaf_level(n_items: int, n_cluster: int) -> int:
    """The smallest ``L`` with ``n_cluster**L >= n_items`` (exact integer arithmetic)."""
    level, span = 0, 1
    while span < n_items:
        span *= n_cluster
        level += 1
    return level


def first_code(level: int, n_cluster: int) -> int:
    """Code of the leftmost node of ``level``: ``(n**level - 1) / (n - 1)``."""
    return (n_cluster**level - 1) // (n_cluster - 1)


@dataclass(frozen=True, eq=False)
class Tree:
    """A TDM tree as flat arrays (see the module docstring for the layout)."""

    n_cluster: int
    codes: np.ndarray
    node_ids: np.ndarray
    parents: np.ndarray
    level_offsets: np.ndarray
    child_offsets: np.ndarray
    item_sorted: np.ndarray
    item_leaf: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.codes.size)

    @property
    def num_levels(self) -> int:
        """Levels including the root level 0; the leaves are on level ``num_levels - 1``."""
        return int(self.level_offsets.size - 1)

    @property
    def leaf_start(self) -> int:
        return int(self.level_offsets[-2])

    @property
    def num_leaves(self) -> int:
        return self.num_nodes - self.leaf_start

    @property
    def leaf_item_ids(self) -> np.ndarray:
        """Item ids of the leaves, in level order."""
        return self.node_ids[self.leaf_start:]

    @property
    def level_sizes(self) -> np.ndarray:
        return np.diff(self.level_offsets)

    @property
    def levels(self) -> np.ndarray:
        """Level of every node (int64 [nodes])."""
        return np.repeat(np.arange(self.num_levels, dtype=np.int64), self.level_sizes)

    def leaf_index(self, item_ids: np.ndarray) -> np.ndarray:
        """Node index of the leaf of each item id; -1 for ids that are not in the tree."""
        ids = np.asarray(item_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_sorted, ids)
        pos_ok = np.minimum(pos, self.item_sorted.size - 1)
        found = self.item_sorted[pos_ok] == ids
        return np.where(found, self.item_leaf[pos_ok], -1)

    @functools.cached_property
    def _id_order(self) -> np.ndarray:
        return np.argsort(self.node_ids, kind="stable")

    def node_index(self, node_ids: np.ndarray) -> np.ndarray:
        """Node index (level-order row) of each node id; -1 for ids that are not in the tree."""
        ids = np.asarray(node_ids, dtype=np.int64)
        order = self._id_order
        pos = np.minimum(np.searchsorted(self.node_ids[order], ids), order.size - 1)
        return np.where(self.node_ids[order[pos]] == ids, order[pos], -1)

    def ancestors(self, leaf_index: np.ndarray) -> np.ndarray:
        """Path of each leaf, root first: int64 [len(leaf_index), num_levels] of node indices."""
        leaf_index = np.asarray(leaf_index, dtype=np.int64)
        out = np.empty((leaf_index.size, self.num_levels), dtype=np.int64)
        cur = leaf_index
        for level in range(self.num_levels - 1, -1, -1):
            out[:, level] = cur
            cur = self.parents[cur]
        return out

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``directory/compact/<array>.npy``; returns that folder."""
        folder = Path(directory) / COMPACT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "n_cluster.npy", np.int64(self.n_cluster))
        for name in _ARRAYS:
            np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(self, name), dtype=np.int64))
        return folder


def assemble(codes: np.ndarray, node_ids: np.ndarray, n_cluster: int) -> Tree:
    """A ``Tree`` from every node's code and id (any order); leaves must all be on the last level.

    Raises ``ValueError`` when the codes do not form such a tree (a parent missing, a
    leaf above the last level, a repeated code).
    """
    order = np.argsort(codes, kind="stable")
    codes = np.ascontiguousarray(codes[order], dtype=np.int64)
    node_ids = np.ascontiguousarray(node_ids[order], dtype=np.int64)
    if codes.size == 0 or codes[0] != 0:
        raise ValueError("a tree needs a root with code 0")
    if np.any(codes[1:] == codes[:-1]):
        raise ValueError("tree codes repeat")
    n = n_cluster
    # level of each code: the largest l with first_code(l) <= code
    bounds, level = [0], 0
    while bounds[-1] <= codes[-1]:
        level += 1
        bounds.append(first_code(level, n))
    levels = np.searchsorted(np.asarray(bounds, dtype=np.int64), codes, side="right") - 1
    num_levels = int(levels[-1]) + 1
    level_offsets = np.searchsorted(levels, np.arange(num_levels + 1), side="left").astype(np.int64)
    parents = np.full(codes.size, -1, dtype=np.int64)
    parent_codes = (codes[1:] - 1) // n
    pos = np.searchsorted(codes, parent_codes)
    if np.any(pos >= codes.size) or np.any(codes[np.minimum(pos, codes.size - 1)] != parent_codes):
        raise ValueError("a node's parent code is missing from the tree")
    parents[1:] = pos
    counts = np.bincount(parents[1:], minlength=codes.size)
    leaf_start = int(level_offsets[-2])
    if np.any(counts[:leaf_start] == 0):
        raise ValueError("a leaf is above the last level")
    child_offsets = np.empty(codes.size + 1, dtype=np.int64)
    child_offsets[0] = 1
    np.cumsum(counts, out=child_offsets[1:])
    child_offsets[1:] += 1
    leaf_ids = node_ids[leaf_start:]
    item_order = np.argsort(leaf_ids, kind="stable")
    item_sorted = leaf_ids[item_order]
    if np.any(item_sorted[1:] == item_sorted[:-1]):
        raise ValueError("leaf item ids repeat")
    return Tree(n_cluster=n, codes=codes, node_ids=node_ids, parents=parents, level_offsets=level_offsets,
                child_offsets=child_offsets, item_sorted=item_sorted,
                item_leaf=(item_order + leaf_start).astype(np.int64))


def pull_to_last_level(codes: np.ndarray, n_items: int, n_cluster: int) -> np.ndarray:
    """Move every leaf code above the last level to its leftmost descendant there."""
    target = first_code(leaf_level(n_items, n_cluster), n_cluster)
    codes = np.array(codes, dtype=np.int64)
    low = codes < target
    while low.any():
        codes[low] = codes[low] * n_cluster + 1
        low = codes < target
    return codes


def tree_from_codes(item_ids: np.ndarray, leaf_codes: np.ndarray, n_cluster: int) -> Tree:
    """Build the tree from one code per item: pull leaves down, add every ancestor, number nodes."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if item_ids.size < 2:
        raise UserError(f"a tree needs at least 2 items, got {item_ids.size}; check the item input")
    n = n_cluster
    codes = pull_to_last_level(leaf_codes, item_ids.size, n)
    order = np.argsort(codes, kind="stable")
    level_codes = [codes[order]]
    while level_codes[0][0] != 0:
        up = (level_codes[0] - 1) // n
        level_codes.insert(0, up[np.r_[True, up[1:] != up[:-1]]])
    all_codes = np.concatenate(level_codes)
    leaf_count = item_ids.size
    max_item = max(0, int(item_ids.max()))
    inner = all_codes[:-leaf_count]
    if max_item + int(inner.max()) + 1 > INT64_MAX:
        raise UserError(f"item id {max_item} leaves no room for non-leaf ids (max item id + code + 1) in int64; "
                        "renumber the items")
    node_ids = np.concatenate([max_item + inner + 1, item_ids[order]])
    return assemble(all_codes, node_ids, n)


def load_tree(path: str | os.PathLike[str], mmap: bool = True) -> Tree:
    """The compact tree of a tree directory (or of its ``compact/`` folder), memory-mapped read-only."""
    p = Path(os.fspath(path))
    folder = p if p.name == COMPACT_DIR else p / COMPACT_DIR
    if not (folder / "codes.npy").is_file():
        raise UserError(f"{p}: no {COMPACT_DIR}/ tree arrays here; give a directory written by `rectool tree init` "
                        "or `rectool tree cluster`")
    try:
        arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r" if mmap else None) for k in _ARRAYS}
        n_cluster = int(np.load(folder / "n_cluster.npy"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}: unreadable tree arrays ({exc}); rebuild the tree") from exc
    arrays = {k: v.view(np.ndarray) if isinstance(v, np.memmap) else v for k, v in arrays.items()}
    if arrays["level_offsets"][-1] != arrays["codes"].size or arrays["child_offsets"].size != arrays["codes"].size + 1:
        raise UserError(f"{folder}: tree arrays of inconsistent sizes; rebuild the tree")
    return Tree(n_cluster=n_cluster, **arrays)
