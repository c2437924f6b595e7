"""Retrieval: from embeddings and models to each user's top-K items, and its evaluation.

Modules
    ``formats``      the shared tables: embedding table, recall format, truth table;
                     ``Ragged`` lists, ``TopK`` results, ``RecallWriter``.
    ``hnsw``         ``rectool hnsw build`` and inner-product/L2 search over the index.
    ``graph``        the HNSW graph as CSR arrays (``rectool hnsw graph``), for NANN.
    ``kernels``      numba kernels: gather / visited / merge for NANN, top-K selection.
    ``nann_search``  beam search over the graph scored by any model (NANN).
    ``nann_reference`` the same search in plain Python (tests, benchmark).
    ``brute``        exact top-K: dense dot products or any pairwise scorer.
    ``metrics``      ``rectool eval-topk``: precision, recall, F, hit rate, NDCG, MRR.
    ``baselines``    popularity and item-CF retrieval baselines.
"""
