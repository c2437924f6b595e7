"""Evaluation metrics over gathered predictions: AUC, GAUC, logloss, accuracy.

AUC comes from torchmetrics (exact, ties handled). GAUC is the impression-weighted
mean of per-group AUCs over groups that have both classes (as in the DIN paper),
computed in one vectorised pass: sort by (group, score), rank-sum per group with
average ranks for ties. Example::

    compute({"auc", "gauc"}, scores, labels, groups)  # -> {"auc": 0.71, "gauc": 0.66}
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, multiclass_accuracy


def _average_ranks(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """1-based ranks within each group (values sorted within groups), ties averaged."""
    n = values.size
    pos = np.arange(n, dtype=np.float64)
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (values[1:] != values[:-1]) | group_start[1:]
    run_id = np.cumsum(new_run) - 1
    run_first = pos[new_run]
    run_last = np.append(run_first[1:] - 1, n - 1)
    group_id = np.cumsum(group_start) - 1
    first_of_group = pos[group_start][group_id]
    return (run_first[run_id] + run_last[run_id]) / 2 - first_of_group + 1


def gauc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    order = np.lexsort((scores, groups))
    s, y, g = scores[order], labels[order] > 0.5, groups[order]
    start = np.ones(s.size, dtype=bool)
    start[1:] = g[1:] != g[:-1]
    ranks = _average_ranks(s, start)
    gid = np.cumsum(start) - 1
    n_groups = int(gid[-1]) + 1 if gid.size else 0
    pos = np.bincount(gid, weights=y, minlength=n_groups)
    size = np.bincount(gid, minlength=n_groups).astype(np.float64)
    neg = size - pos
    rank_sum = np.bincount(gid, weights=ranks * y, minlength=n_groups)
    ok = (pos > 0) & (neg > 0)
    if not ok.any():
        return float("nan")
    auc = (rank_sum[ok] - pos[ok] * (pos[ok] + 1) / 2) / (pos[ok] * neg[ok])
    return float(np.sum(auc * size[ok]) / np.sum(size[ok]))


def compute(names: Iterable[str], scores: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
            num_class: int = 1) -> dict[str, float]:
    """``scores``: probabilities [N] (binary) or [N, C]; ``labels``: [N]."""
    out: dict[str, float] = {}
    names = list(names)
    if num_class > 1:
        probs = torch.from_numpy(scores)
        target = torch.from_numpy(labels.astype(np.int64))
        if "accuracy" in names:
            out["accuracy"] = float(multiclass_accuracy(probs, target, num_classes=num_class, average="micro"))
        if "logloss" in names:
            out["logloss"] = float(torch.nn.functional.nll_loss(torch.log(probs.clamp(min=1e-12)), target))
        return out
    p = torch.from_numpy(scores.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    if "auc" in names:
        out["auc"] = float(binary_auroc(p, y)) if 0 < int(y.sum()) < y.numel() else float("nan")
    if "gauc" in names and groups is not None:
        out["gauc"] = gauc(scores.astype(np.float64), labels, groups)
    if "logloss" in names:
        pc = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
        out["logloss"] = float(-np.mean(labels * np.log(pc) + (1 - labels) * np.log(1 - pc)))
    if "accuracy" in names:
        out["accuracy"] = float(np.mean((scores > 0.5) == (labels > 0.5)))
    return out
