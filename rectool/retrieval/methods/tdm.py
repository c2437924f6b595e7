"""``retrieve --method tdm``: layer-wise beam search over ``--tree`` scored by the export's scorer.

``--beam`` nodes are kept per level (default 2 × topk; ``rectool.tree.beam``). Excluded items
score -inf at the leaf level, so a user's long history does not widen the beam; the result
is then cut to the k best that are not excluded.
"""

from __future__ import annotations

import numpy as np
import torch

from rectool.retrieval.formats import Ragged, TopK
from rectool.retrieval.searcher import PairSearcher, SearchSetup
from rectool.tree.beam import beam_search
from rectool.tree.structure import load_tree


class TdmSearcher(PairSearcher):
    def __init__(self, setup: SearchSetup) -> None:
        super().__init__(setup)
        options = setup.options
        self.tree = load_tree(options.tree)  # type: ignore[arg-type]  # options: tdm needs --tree
        self.beam = options.beam or 2 * options.topk
        self.catalogue_size = int(self.tree.num_leaves)

    def search_pairs(self, x: dict[str, torch.Tensor], n: int, exclude: Ragged | None) -> TopK:
        res = beam_search(self.tree, self.scorer(x, exclude=exclude), n, self.k, beam=self.beam)
        lengths = (res.item_ids >= 0).sum(1).astype(np.int64)
        return keep_best(TopK(res.item_ids, res.scores, lengths, res.nodes_scored.astype(np.int64)), exclude, self.k)


def keep_best(topk: TopK, exclude: Ragged | None, k: int) -> TopK:
    """Drop excluded items from over-fetched lists, keep the k best (the kernel hnsw search uses)."""
    if exclude is None:
        return TopK(topk.item_ids[:, :k], topk.scores[:, :k], np.minimum(topk.lengths, k), topk.n_scored)
    from rectool.retrieval.kernels import filter_rows, sort_rows

    ids, scores, lengths = filter_rows(topk.item_ids, topk.scores.astype(np.float32, copy=False), k,
                                       exclude.offsets, sort_rows(exclude.offsets, exclude.values))
    return TopK(ids, scores, lengths, topk.n_scored)
