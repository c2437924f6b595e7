"""``retrieve --method hnsw``: user vectors searched in an ``hnsw build`` index.

MIND's interests are searched one by one and merged (``TowerSearcher``); the repeat bonus
reads the item vectors stored in the index (exact on an ip or cosine index).

With the item-to-item terms (``--item-to-item`` / ``--item-similarity``, whose mixed score no
index can search directly) the candidates are the index's top ``--topk`` for the user vector
and its top ``--mix-candidates`` for each history item's view (the user tower's one-item query
a_j, the item's own vector b_j): the items a soft maximum over history items ranks high are
near one of them. The union is rescored exactly with the mixed score (the same as
``--method brute``'s), and ``n_scored`` counts it per user.
"""

from __future__ import annotations

import numpy as np

from rectool.errors import UserError
from rectool.retrieval.formats import Ragged, TopK
from rectool.retrieval.hnsw import HnswIndex, hnsw_search, load_index
from rectool.retrieval.item_to_item import MixedScores
from rectool.retrieval.repeat import VectorLookup, index_lookup
from rectool.retrieval.searcher import SearchSetup, TowerSearcher


class HnswSearcher(TowerSearcher):
    def __init__(self, setup: SearchSetup) -> None:
        super().__init__(setup)
        options = setup.options
        self.index = load_index(options.index, threads=options.threads)  # type: ignore[arg-type]  # options: needed
        self.ef = options.ef[0] if options.ef else max(options.topk, 100)
        self.space = self.index.space
        self.catalogue_size = self.index.count
        self.mix_candidates = options.mix_candidates
        if self.mix is not None and self.space != "ip":
            raise UserError(f"--item-to-item / --item-similarity mix inner products: search an index built with "
                            f"--space ip (this one is {self.space})")
        if self.repeat is not None or self.mix is not None:
            self.vectors = index_lookup(self.index)

    def plain(self, queries: np.ndarray, exclude: Ragged | None, mix: MixedScores | None = None) -> TopK:
        if mix is None:
            return hnsw_search(self.index, queries, self.k, ef=self.ef, exclude=exclude)
        assert self.vectors is not None
        return mixed_search(self.index, queries, self.k, self.ef, exclude, mix, self.vectors, self.mix_candidates)


def mixed_search(index: HnswIndex, queries: np.ndarray, k: int, ef: int, exclude: Ragged | None, mix: MixedScores,
                 vectors: VectorLookup, per_view: int) -> TopK:
    """Top-``k`` by ``mix``'s score over the union of the index's candidates for each user and history view."""
    n = len(queries)
    owners, found = [np.arange(n)], [hnsw_search(index, queries, k, ef=ef, exclude=exclude)]
    for term in mix.terms:
        rows = np.repeat(np.arange(n), np.diff(term.offsets))
        if len(rows):
            owners.append(rows)
            found.append(hnsw_search(index, term.vectors, per_view, ef=max(ef, per_view),
                                     exclude=exclude.take(rows) if exclude is not None else None))
    users = np.concatenate([np.repeat(o, f.lengths) for o, f in zip(owners, found, strict=True)])
    ids = np.concatenate([f.item_ids[np.arange(f.item_ids.shape[1])[None, :] < f.lengths[:, None]] for f in found])
    pairs = np.unique(np.stack([users, ids]), axis=1)  # (user, item) once each, grouped by user
    users, ids = pairs[0], pairs[1]
    unique_ids, where = np.unique(ids, return_inverse=True)
    item_vecs, _ = vectors(unique_ids)   # every candidate came from the index: all found
    counts = np.bincount(users, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    width = min(k, int(counts.max(initial=0))) or 1
    out_ids = np.full((n, width), -1, dtype=np.int64)
    out_scores = np.full((n, width), -np.inf, dtype=np.float32)
    lengths = np.minimum(counts, width)
    for u in range(n):
        lo, hi = starts[u], starts[u + 1]
        if hi == lo:
            continue
        vecs = item_vecs[where[lo:hi]]
        scores = mix.block((vecs @ queries[u])[None, :], u, u + 1, vecs)[0]
        order = np.lexsort((ids[lo:hi], -scores))[:width]   # score desc, then id asc
        out_ids[u, :len(order)], out_scores[u, :len(order)] = ids[lo:hi][order], scores[order]
    return TopK(out_ids, out_scores, lengths, counts.astype(np.int64))
