"""``retrieve --method nann``: beam search over the HNSW graph of ``--index`` scored by the export's scorer.

``--index`` is an ``hnsw build`` output (its graph is extracted on load) or an ``hnsw graph``
output; ``--ef`` / ``--rounds`` give levels 2, 1, 0 and ``--expand`` the nodes expanded per
user and round (``rectool.retrieval.nann_search``).
"""

from __future__ import annotations

import torch

from rectool.artifacts import read_meta
from rectool.retrieval.formats import GRAPH_KIND, Ragged, TopK
from rectool.retrieval.graph import extract_graph, load_graph
from rectool.retrieval.nann_search import nann_search
from rectool.retrieval.options import NANN_EF, NANN_ROUNDS
from rectool.retrieval.searcher import PairSearcher, SearchSetup


class NannSearcher(PairSearcher):
    def __init__(self, setup: SearchSetup) -> None:
        super().__init__(setup)
        options = setup.options
        index: str = options.index  # type: ignore[assignment]  # options: nann needs --index
        graph_output = (read_meta(index) or {}).get("kind") == GRAPH_KIND
        self.graph = load_graph(index) if graph_output else extract_graph(index)
        self.ef = tuple(options.ef) if options.ef else NANN_EF
        self.rounds = tuple(options.rounds) if options.rounds else NANN_ROUNDS
        self.expand = options.expand
        self.catalogue_size = len(self.graph.ids)

    def search_pairs(self, x: dict[str, torch.Tensor], n: int, exclude: Ragged | None) -> TopK:
        scorer = self.scorer(x, lambda nodes: self.graph.ids[nodes])
        return nann_search(self.graph, n, scorer, recall_num=self.k, ef=self.ef, rounds=self.rounds,  # type: ignore
                           expand=self.expand, exclude=exclude, batch_size=n, progress=False)
