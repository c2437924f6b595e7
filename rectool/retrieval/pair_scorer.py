"""``PairScorer``: a pair-scoring export (tdm, nann) as the ``scorer(user_index, candidate)`` callback.

The searches (TDM beam, NANN graph, brute force) ask for scores of flat (user, candidate)
pairs; the exported ``scorer`` program scores a [rows, T] candidate matrix, one user per row.
``PairScorer`` packs the one into the other.

    scorer = PairScorer(program, user_tensors, "item_id", lambda rows: item_ids[rows])
    scores = scorer(np.array([0, 0, 1]), np.array([5, 9, 5]))   # float32 [3]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rectool.retrieval.formats import Ragged

PAIR_CHUNK = 4_096  # (user, item) pairs per model call: activations [pairs, history, units] stay in cache
RUN_WIDTH = 1_024   # candidates of one user per row of a model call (longer runs are split)


class PairScorer:
    """The ``scorer(user_index, candidate) -> scores`` callback over an exported pair program.

    The program scores a [rows, T] candidate matrix, one user per row, so each user's history
    is embedded once for all its candidates: the flat pairs the searches pass (grouped by
    user: consecutive pairs of one user form a run) are packed into such matrices, runs
    longer than ``RUN_WIDTH`` split, rows padded to the widest run of the call.
    ``candidate_ids(values)`` turns what the search passes (tree node ids, graph nodes, item
    rows) into the ids the program's candidate column holds. With ``exclude`` (item ids per
    user), an excluded item scores -inf, so a search ranks it below every other candidate.
    ``matrix=False`` serves exports written before scorers took a candidate matrix (one
    candidate per row, [B] -> [B]).
    """

    def __init__(self, program: torch.nn.Module, users: dict[str, torch.Tensor], column: str,
                 candidate_ids: Any = None, exclude: Ragged | None = None, matrix: bool = True) -> None:
        self.program, self.users, self.column, self.matrix = program, users, column, matrix
        self.candidate_ids = candidate_ids or (lambda v: v)
        self.exclude = None
        if exclude is not None and len(exclude.values):
            from rectool.retrieval.kernels import sort_rows

            self.exclude = (exclude.offsets, sort_rows(exclude.offsets, exclude.values))

    def __call__(self, user_index: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        user_index = np.asarray(user_index, dtype=np.int64)
        ids = np.asarray(self.candidate_ids(np.asarray(candidates)), dtype=np.int64)
        out = np.empty(len(user_index), dtype=np.float32)
        starts, lengths = runs(user_index, RUN_WIDTH if self.matrix else 1)
        with torch.inference_mode():
            lo = 0
            while lo < len(starts):
                hi = rows_per_call(lengths, lo, PAIR_CHUNK)
                start, length = starts[lo:hi], lengths[lo:hi]
                width = int(length.max())
                column = np.arange(width)
                valid = column[None, :] < length[:, None]
                pos = np.where(valid, start[:, None] + column[None, :], start[:, None])  # padding repeats a pair
                x = {k: v.index_select(0, torch.from_numpy(user_index[start])) for k, v in self.users.items()}
                x[self.column] = torch.from_numpy(ids[pos] if self.matrix else ids[start])
                out[pos[valid]] = self.program(x).float().numpy().reshape(pos.shape)[valid]
                lo = hi
        if self.exclude is not None:
            from rectool.retrieval.kernels import mask_listed

            mask_listed(out, user_index, ids, *self.exclude)
        return out


def runs(user_index: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal consecutive users, split at ``width`` pairs."""
    if len(user_index) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bounds = np.flatnonzero(np.diff(user_index)) + 1
    starts = np.concatenate([[0], bounds])
    lengths = np.diff(np.concatenate([starts, [len(user_index)]]))
    pieces = (lengths + width - 1) // width
    piece_rank = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)  # 0, 1, .. within a run
    first = np.repeat(starts, pieces) + width * piece_rank
    end = np.repeat(starts + lengths, pieces)
    return first.astype(np.int64), np.minimum(end - first, width).astype(np.int64)


def rows_per_call(lengths: np.ndarray, lo: int, budget: int) -> int:
    """The end of the rows from ``lo`` whose padded matrix (rows x widest) stays within ``budget`` pairs."""
    widest = np.maximum.accumulate(lengths[lo:lo + budget])  # every row holds >= 1 pair
    fits = np.flatnonzero(widest * np.arange(1, len(widest) + 1) <= budget)
    return lo + (int(fits[-1]) + 1 if len(fits) else 1)
