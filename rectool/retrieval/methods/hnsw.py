"""``retrieve --method hnsw``: user vectors searched in an ``hnsw build`` index.

MIND's interests are searched one by one and merged (``TowerSearcher``); the repeat bonus
reads the item vectors stored in the index (exact on an ip or cosine index).
"""

from __future__ import annotations

import numpy as np

from rectool.retrieval.formats import Ragged, TopK
from rectool.retrieval.hnsw import hnsw_search, load_index
from rectool.retrieval.item_to_item import MixedScores
from rectool.retrieval.repeat import index_lookup
from rectool.retrieval.searcher import SearchSetup, TowerSearcher


class HnswSearcher(TowerSearcher):
    def __init__(self, setup: SearchSetup) -> None:
        super().__init__(setup)
        options = setup.options
        self.index = load_index(options.index, threads=options.threads)  # type: ignore[arg-type]  # options: needed
        self.ef = options.ef[0] if options.ef else max(options.topk, 100)
        self.space = self.index.space
        self.catalogue_size = self.index.count
        if self.repeat is not None:
            self.vectors = index_lookup(self.index)

    def plain(self, queries: np.ndarray, exclude: Ragged | None, mix: MixedScores | None = None) -> TopK:
        return hnsw_search(self.index, queries, self.k, ef=self.ef, exclude=exclude)
