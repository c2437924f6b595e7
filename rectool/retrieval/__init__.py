"""Retrieval: from exported models and embeddings to each user's top-K items, and its evaluation.

How ``rectool retrieve`` is put together
    ``options``      ``RetrieveOptions``: every setting, frozen; its validators hold the rules
                     that combine settings (what each method needs, NANN's three widths, ...).
    ``registry``     ``--method`` x the export's family (towers / pair scorer) -> a searcher class.
    ``searcher``     the ``Searcher`` interface, and the two families' shared parts:
                     ``TowerSearcher`` (user vectors; interests, repeat bonus, item-to-item terms)
                     and ``PairSearcher`` (a ``PairScorer`` over the export's scorer).
    ``methods/``     one module per method: hnsw, brute, tdm, nann.
    ``retrieve``     reads the users in batches, asks the searcher, writes the recall format.
    ``choices``      the closed choices of the retrieval commands (method, space, missing users).

Search code the methods call
    ``hnsw``         ``rectool hnsw build`` and inner-product/L2 search over the index.
    ``graph``        the HNSW graph as CSR arrays (``rectool hnsw graph``), for NANN.
    ``nann_search``  beam search over the graph scored by any model (NANN);
                     ``nann_reference``: the same search in plain Python (tests, benchmark).
    ``brute``        exact top-K: dense dot products or any pairwise scorer.
    ``pair_scorer``  a pair-scoring export as the searches' ``scorer(user, candidate)`` callback.
    ``repeat``, ``item_to_item``  the retrieve-time terms of a tower's score.
    ``kernels``      numba kernels: gather / visited / merge for NANN, top-K selection.

Tables, other commands
    ``formats``      the shared tables: embedding table, recall format, truth table;
                     ``Ragged`` lists, ``TopK`` results, ``RecallWriter``.
    ``embed``        ``rectool embed``: an export's item program over an item table.
    ``sequences``    ``rectool dataset --task next-item``: sequences, splits and truth.
    ``metrics``      ``rectool eval-topk``: precision, recall, F, hit rate, NDCG, MRR, coverage.
    ``baselines``    popularity and item-CF retrieval baselines (``rectool baseline``).

Where things go
    A new search method: a module in ``methods/`` with a ``TowerSearcher`` or ``PairSearcher``
    subclass (its ``__init__`` loads what it searches, ``plain`` / ``search_pairs`` searches),
    one entry in ``registry.SEARCHERS``, its name in ``choices.Method``, and any new settings
    as fields (and combination rules) of ``options.RetrieveOptions`` and flags of
    ``rectool.cli.retrieval.retrieve``.
    A new model output kind (say, a user tower giving a distribution): a value of
    ``rectool.programs.manifest.OutputKind``, written by the model's ``export_parts``; the
    searchers that can use it read ``manifest.part(...).kind`` (as ``TowerSearcher`` does for
    ``interests``).
    A new input format: tables are read in one place, ``rectool.artifacts.open_dataset``
    (files, directories, globs) and ``rectool.badinput`` (one-line errors for unreadable
    files); raw logs become rectool's tables through ``rectool convert``
    (``rectool.ingest.formats``).
"""
