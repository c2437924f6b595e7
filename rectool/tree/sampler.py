"""Layer-wise TDM sampling: positives are a target item's ancestors, negatives other nodes of each level.

For each target item (a leaf) and each level ``l = 1 .. L`` (the root level 0 is never
sampled): the leaf's ancestor on level ``l`` is the positive (label 1), and
``layer_num_sample[l]`` distinct other nodes of level ``l``, drawn uniformly without
replacement and never the positive, are negatives (label 0). ``layer_num_sample`` has
one entry per level, root included, and its first entry is 0 (as TorchEasyRec's
``tdm_sampler``). The whole batch is drawn by one numba kernel (Floyd's algorithm) fed
by a ``numpy.random.Generator``: the same generator state gives the same sample.

Output (``TDMSample``), for a batch of B items, T = sum over l >= 1 of (1 + layer_num_sample[l])::

    node_index  int64   [B, T]  nodes in level order; per row, level 1 first:
                                [pos_1, neg_1 ...][pos_2, neg_2 ...] ... [pos_L (the leaf), neg_L ...]
    node_ids    int64   [B, T]  the nodes' ids (item ids at the leaf level)
    labels      float32 [B, T]  1 for positives, 0 for negatives
    levels      int64   [T]     level of each column

Example::

    tree = load_tree("tree/")
    sampler = LayerSampler(tree, [0, 1, 2, 3, 4])     # a 5-level tree
    batch = sampler.sample(np.array([1001, 1002]), np.random.default_rng(0))
    batch.node_ids.shape                              # (2, 14)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rectool.errors import UserError
from rectool.tree.kernels import draw_excluding
from rectool.tree.structure import Tree


@dataclass(frozen=True)
class TDMSample:
    """One batch of layer-wise samples (layout in the module docstring)."""

    node_index: np.ndarray
    node_ids: np.ndarray
    labels: np.ndarray
    levels: np.ndarray

    def level_columns(self, level: int) -> slice:
        """Columns of ``level``: the positive first, then its negatives."""
        cols = np.flatnonzero(self.levels == level)
        return slice(int(cols[0]), int(cols[-1]) + 1) if cols.size else slice(0, 0)


class LayerSampler:
    """Vectorised TDM sampler over a compact tree."""

    def __init__(self, tree: Tree, layer_num_sample: Sequence[int]) -> None:
        counts = np.asarray(layer_num_sample, dtype=np.int64)
        sizes = tree.level_sizes
        if counts.size != tree.num_levels:
            raise UserError(f"layer_num_sample has {counts.size} entries but the tree has {tree.num_levels} levels "
                            f"(sizes {sizes.tolist()}); give one count per level, the first 0")
        if counts[0] != 0:
            raise UserError(f"layer_num_sample[0] is {counts[0]}; the root level is never sampled: make it 0")
        if np.any(counts < 0):
            raise UserError(f"layer_num_sample {counts.tolist()}: counts cannot be negative")
        over = np.flatnonzero(counts > sizes - 1)
        if over.size:
            lv = int(over[0])
            raise UserError(f"layer_num_sample[{lv}] = {counts[lv]} but level {lv} has only {sizes[lv] - 1} nodes "
                            f"besides the positive; lower it to at most {sizes[lv] - 1}")
        self.tree = tree
        self.counts = counts[1:]
        self.sizes = sizes[1:].astype(np.int64)
        self.levels = np.repeat(np.arange(1, tree.num_levels, dtype=np.int64), 1 + self.counts)
        self._neg_cols = np.flatnonzero(np.concatenate([np.r_[False, np.ones(k, bool)] for k in self.counts]))
        self._pos_cols = np.flatnonzero(np.concatenate([np.r_[True, np.zeros(k, bool)] for k in self.counts]))

    @property
    def width(self) -> int:
        """Columns per row: one positive and the negatives of every level below the root."""
        return int(self.levels.size)

    def sample(self, item_ids: np.ndarray, rng: np.random.Generator | int) -> TDMSample:
        """Positives and negatives for a batch of target item ids (each must be a leaf)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        tree = self.tree
        leaves = tree.leaf_index(np.asarray(item_ids, dtype=np.int64).ravel())
        missing = np.flatnonzero(leaves < 0)
        if missing.size:
            raise UserError(f"item id {int(np.asarray(item_ids).ravel()[missing[0]])} is not a leaf of the tree "
                            f"({missing.size} of {leaves.size} ids in this batch); rebuild the tree with every "
                            "item or drop those rows")
        path = tree.ancestors(leaves)[:, 1:]  # levels 1 .. L
        offsets = tree.level_offsets[1:-1]
        u = rng.random((leaves.size, int(self.counts.sum())))
        local = draw_excluding(path - offsets, self.sizes, self.counts, u)
        node_index = np.empty((leaves.size, self.width), dtype=np.int64)
        node_index[:, self._pos_cols] = path
        node_index[:, self._neg_cols] = local + np.repeat(offsets, self.counts)
        labels = np.zeros(node_index.shape, dtype=np.float32)
        labels[:, self._pos_cols] = 1.0
        return TDMSample(node_index=node_index, node_ids=tree.node_ids[node_index], labels=labels,
                         levels=self.levels)
