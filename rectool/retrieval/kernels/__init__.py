"""Numba kernels of retrieval, one module per concern, re-exported here.

``lists``      CSR helpers (membership by binary search, masking listed values, row sorting, duplicates)
``nann``       NANN steps: visited bitmaps, gather, merge into top-ef, final top, dot scores
``topk``       exact top-K heaps and exclusion filters
``hnsw_file``  decoding hnswlib's ``index.bin``
``metrics``    top-K metrics (hits, DCG, reciprocal rank), overlaps, distinct items
``baselines``  item-kNN and popularity

Lists are CSR (``offsets`` int64 of length n + 1, ``values``); the heavy kernels run in
parallel over users (``prange``), light ones serially (cheaper to compile). Each kernel's
docstring shows a tiny input and output; ``tests/test_retrieval_kernels.py`` checks each
against plain NumPy/Python.
"""

from rectool.retrieval.kernels.baselines import item_neighbours, popular_topk, score_by_neighbours
from rectool.retrieval.kernels.hnsw_file import level_csr, scan_link_lists
from rectool.retrieval.kernels.lists import first_duplicate_in_rows, mask_listed, sort_rows
from rectool.retrieval.kernels.metrics import first_rank_counts, overlap_at_k, rank_metrics
from rectool.retrieval.kernels.nann import (
    compact,
    dot_pairs,
    gather_unvisited,
    mark_visited,
    merge_into_top,
    neighbour_counts,
    pick_unexpanded,
    take_top,
)
from rectool.retrieval.kernels.topk import filter_rows, heap_sorted, topk_update, union_rows

__all__ = [
    "compact", "dot_pairs", "filter_rows", "first_duplicate_in_rows", "first_rank_counts", "gather_unvisited",
    "heap_sorted", "item_neighbours", "level_csr", "mark_visited", "mask_listed", "merge_into_top", "neighbour_counts",
    "overlap_at_k", "pick_unexpanded", "popular_topk", "rank_metrics", "scan_link_lists", "score_by_neighbours",
    "sort_rows", "take_top", "topk_update", "union_rows",
]
