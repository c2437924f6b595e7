"""``retrieve --method brute``: exact search with the same model, the reference the others are measured by.

Towers: dot products of each user vector with every item vector of ``--items`` (an embedding
table), on the CPU kernels or, with ``--device cuda``, as matrix products on the GPU; the
item-to-item terms are mixed in here only. Pair scorers: every item of ``--items`` (a table
with ``item_id``), of ``--tree``'s leaves or of ``--index`` scored by the model ("recall-all").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rectool.artifacts import open_dataset, require_columns
from rectool.badinput import read_table
from rectool.errors import UserError
from rectool.retrieval.brute import brute_search, brute_search_dot, brute_search_dot_torch
from rectool.retrieval.formats import Ragged, TopK, int_column, open_embeddings
from rectool.retrieval.item_to_item import MixedScores
from rectool.retrieval.pair_scorer import PAIR_CHUNK
from rectool.retrieval.repeat import table_lookup
from rectool.retrieval.searcher import PairSearcher, SearchSetup, TowerSearcher


class BruteTowerSearcher(TowerSearcher):
    counts_scored = True

    def __init__(self, setup: SearchSetup) -> None:
        super().__init__(setup)
        items = setup.options.items
        if items is None:
            raise UserError("--method brute with a two-tower model needs --items (an embedding table from embed)")
        ids, vecs = zip(*open_embeddings(items).batches(), strict=True)
        self.item_ids, self.item_vecs = np.concatenate(ids), np.concatenate(vecs)
        self.catalogue_size = len(self.item_ids)
        # on a GPU: the item matrix lives there, each user batch is one product + torch.topk
        plain_dot = self.repeat is None and self.mix is None
        self.items_on_device = torch.from_numpy(np.ascontiguousarray(self.item_vecs)).to(setup.device) \
            if setup.device.type != "cpu" and plain_dot else None
        if self.repeat is not None or self.history_column is not None:
            self.vectors = table_lookup(self.item_ids, self.item_vecs)

    def plain(self, queries: np.ndarray, exclude: Ragged | None, mix: MixedScores | None = None) -> TopK:
        if self.items_on_device is not None:
            return brute_search_dot_torch(queries, self.items_on_device, self.k, item_ids=self.item_ids,
                                          exclude=exclude)
        return brute_search_dot(queries, self.item_vecs, self.k, item_ids=self.item_ids, exclude=exclude,
                                progress=False, mix=mix)


class BrutePairSearcher(PairSearcher):
    def __init__(self, setup: SearchSetup) -> None:
        super().__init__(setup)
        options = setup.options
        self.item_ids = catalogue_ids(options.items, options.tree, options.index)
        self.catalogue_size = len(self.item_ids)

    def search_pairs(self, x: dict[str, torch.Tensor], n: int, exclude: Ragged | None) -> TopK:
        scorer = self.scorer(x, lambda rows: self.item_ids[rows])
        return brute_search(scorer, n, len(self.item_ids), self.k, item_ids=self.item_ids, exclude=exclude,
                            max_pairs=PAIR_CHUNK, progress=False)


def catalogue_ids(items: str | None, tree: str | None, index: str | None) -> np.ndarray:
    """The catalogue a pair scorer's brute force scores: --items, the tree's leaves, or the index's ids."""
    if items is not None:
        ds = open_dataset(items, "--items")
        require_columns(ds.schema, ["item_id"], items)
        return np.unique(int_column(read_table(ds, f"--items {items}", columns=["item_id"])["item_id"],
                                    f"--items {items}", "item_id"))
    if tree is not None:
        from rectool.tree.structure import load_tree

        return np.asarray(load_tree(tree).leaf_item_ids, dtype=np.int64)
    if index is not None:
        return np.load(Path(index) / "ids.npy").astype(np.int64)
    raise UserError("--method brute with a pair scorer needs the catalogue: --items, --tree or --index")
