"""One module per ``retrieve --method``: the searcher class over its search code.

    hnsw   HnswSearcher        user vectors in an ``hnsw build`` index (``rectool.retrieval.hnsw``)
    brute  BruteTowerSearcher  u·v with every item vector; BrutePairSearcher: the pair scorer on every
                               item (``rectool.retrieval.brute``)
    tdm    TdmSearcher         layer-wise beam search over a tree (``rectool.tree.beam``)
    nann   NannSearcher        beam search over the HNSW graph (``rectool.retrieval.nann_search``)

A new method: a module here with a ``TowerSearcher`` or ``PairSearcher`` subclass
(``rectool.retrieval.searcher``), its entry in ``rectool.retrieval.registry``, and its
settings (fields and combination rules) in ``rectool.retrieval.options``.
"""
