"""Classical collaborative filtering as first-class retrieval methods: ALS, EASE and item-kNN (BARS).

Each method learns from the binary user x item training matrix and scores *every* item for
each query user from that user's history row; the exact top-k then comes from the same
heap kernel as ``retrieve --method brute`` (``brute.brute_search_rows``), exclusions
included. ``rectool baseline --rule als|ease|item-knn`` runs them from files.

``als``       implicit-feedback ALS (Hu, Koren & Volinsky 2008) fitted by the ``implicit``
              library (conjugate gradient, both cores); an observed pair has confidence
              alpha, the rest 1 with preference 0 (``implicit``'s convention). A query
              user's vector is the exact ALS user step on their history against the
              fitted item factors, so users outside the training matrix (the TDM user
              split's test users) are scored the same way.
``ease``      EASE (Steck 2019): B = I - P diag(1/diag P), P = (X'X + l2 I)^-1, diag B = 0;
              scores = history row x B. Closed form, dense items x items in float32: memory
              ~3 x items^2 x 4 bytes and time ~items^3 (35k items: ~15 GB, minutes on 2 cores;
              refused above ``EASE_MAX_ITEMS``).
``item-knn``  the item-kNN of the BARS benchmark: cosine similarity of items (binary user
              sets), mapped to (1 + cos) / 2 when ``renormalize``; each *candidate* item j keeps
              its ``neighbours`` most similar items and L1-normalises their weights (with
              ``renormalize`` an item with fewer co-occurring items than K is padded, as the
              dense original is, with weight 1/2 per missing neighbour: the pads count in the
              normaliser, and contribute nothing else); with ``item_bias``, item means m
              (share of users with the item) centre the matrix:
                  score(u, j) = m_j + sum_i w_ji (x_ui - m_i)
              Sparse throughout (neighbour lists; no dense item x item matrix).

Example::

    model = fit(ItemKNNParams(neighbours=50), train_matrix)
    topk = rank(model, history_rows, k=200, exclude=history_lists)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rectool.errors import UserError
from rectool.retrieval import kernels

EASE_MAX_ITEMS = 60_000   # 3 dense float32 matrices of 60k^2 are 43 GB: beyond a 24-64 GB machine


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ALSParams(_Params):
    method: Literal["als"] = "als"
    factors: int = Field(default=64, ge=1, description="latent dimensions")
    regularization: float = Field(default=0.01, ge=0, description="L2 weight of both factor matrices")
    alpha: float = Field(default=1.0, gt=0, description="confidence of an observed pair (the rest: 1)")
    iterations: int = Field(default=15, ge=1, description="alternating sweeps")
    seed: int = 0


class EASEParams(_Params):
    method: Literal["ease"] = "ease"
    l2: float = Field(default=200.0, gt=0, description="lambda: the ridge on the item-item weights")


class ItemKNNParams(_Params):
    method: Literal["item-knn"] = "item-knn"
    neighbours: int = Field(default=200, ge=1, description="K: neighbours kept per candidate item")
    renormalize: bool = Field(default=True, description="similarity (1 + cos) / 2, as BARS")
    item_bias: bool = Field(default=True, description="centre by the item means (BARS' enable_average_bias)")


ClassicalParams = ALSParams | EASEParams | ItemKNNParams
CLASSICAL: dict[str, type[ClassicalParams]] = {"als": ALSParams, "ease": EASEParams, "item-knn": ItemKNNParams}


@dataclass(frozen=True)
class Fitted:
    """A fitted model: ``scores(rows)`` gives dense float32 [len(rows), items] for history rows (csr)."""

    params: ClassicalParams
    n_items: int
    state: dict

    def scores(self, history) -> np.ndarray:  # noqa: ANN001 (scipy.sparse.csr_matrix)
        p = self.params
        if isinstance(p, EASEParams):
            return np.asarray(history @ self.state["B"], dtype=np.float32)
        if isinstance(p, ItemKNNParams):
            out = np.asarray((history @ self.state["W_t"]).todense(), dtype=np.float32)
            return out + self.state["base"][None, :] if self.state["base"] is not None else out
        return _als_scores(self.state["model"], history)


def fit(params: ClassicalParams, train) -> Fitted:  # noqa: ANN001 (scipy.sparse.csr_matrix, users x items)
    """Fit one method on the binary training matrix."""
    n_items = train.shape[1]
    if isinstance(params, EASEParams):
        return Fitted(params, n_items, {"B": _ease(train, params.l2)})
    if isinstance(params, ItemKNNParams):
        return Fitted(params, n_items, _item_knn(train, params))
    return Fitted(params, n_items, {"model": _als(train, params)})


def rank(model: Fitted, history, k: int, *, item_ids: np.ndarray, exclude=None,  # noqa: ANN001
         progress: bool = True):  # noqa: ANN201 (TopK)
    """Exact top-``k`` items (``item_ids[column]``) per history row, every item scored; ``exclude``: per-row
    item-id lists (a ``Ragged``) never returned."""
    from rectool.retrieval.brute import brute_search_rows

    block = max(1, min(4096, (64 << 20) // max(model.n_items * 4, 1)))  # ~64 MB of scores per block
    return brute_search_rows(lambda lo, hi: model.scores(history[lo:hi]), history.shape[0], model.n_items, k,
                             item_ids=item_ids, exclude=exclude, user_batch=block, progress=progress)


# ----------------------------------------------------------------------------- EASE

def _ease(train, l2: float) -> np.ndarray:  # noqa: ANN001
    import torch

    n = train.shape[1]
    if n > EASE_MAX_ITEMS:
        raise UserError(f"ease: {n:,} items; EASE inverts a dense items x items matrix and stops at "
                        f"{EASE_MAX_ITEMS:,} (use item-knn or als for larger catalogues)")
    gram = torch.from_numpy(np.asarray((train.T @ train).todense(), dtype=np.float32))
    gram.diagonal().add_(l2)
    chol, info = torch.linalg.cholesky_ex(gram)
    del gram
    if int(info) != 0:
        raise UserError(f"ease: X'X + {l2} I is not positive definite in float32; raise --l2")
    p = torch.cholesky_inverse(chol)
    del chol
    p.div_(-p.diagonal().clone().unsqueeze(0))  # B = -P / diag(P) column-wise; then diag(B) = 0
    p.diagonal().zero_()
    return p.numpy()


# ----------------------------------------------------------------------------- item-kNN (BARS)

def _item_knn(train, params: ItemKNNParams) -> dict:  # noqa: ANN001
    import scipy.sparse as sp

    n_users, n_items = train.shape
    by_item = train.T.tocsr()
    k = min(params.neighbours, max(n_items - 1, 1))
    nbr, sim, lengths = kernels.item_neighbours(by_item.indptr.astype(np.int64), by_item.indices.astype(np.int64),
                                                train.indptr.astype(np.int64), train.indices.astype(np.int64),
                                                k, True)
    valid = np.arange(k)[None, :] < lengths[:, None]
    w = ((sim + 1) / 2 if params.renormalize else sim).astype(np.float64) * valid
    pads = (k - lengths) * 0.5 if params.renormalize else 0.0
    norm = w.sum(1) + pads
    w = w / np.where(norm > 0, norm, 1.0)[:, None]
    rows = np.repeat(np.arange(n_items), k)[valid.ravel()]
    cols = nbr.ravel()[valid.ravel()].astype(np.int64)
    vals = w.ravel()[valid.ravel()]
    weights = sp.csr_matrix((vals, (rows, cols)), shape=(n_items, n_items))   # row j: candidate j's neighbours
    base = None
    if params.item_bias:
        mean = np.asarray(train.sum(0)).ravel() / max(n_users, 1)
        base = (mean - weights @ mean).astype(np.float32)
    return {"W_t": weights.T.tocsr().astype(np.float32), "base": base}


# ----------------------------------------------------------------------------- ALS (implicit)

def _als(train, params: ALSParams):  # noqa: ANN001, ANN202 (implicit's model)
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit parallelises over users itself; BLAS threads on top thrash
        model = AlternatingLeastSquares(factors=params.factors, regularization=params.regularization,
                                        alpha=params.alpha, iterations=params.iterations, random_state=params.seed,
                                        calculate_training_loss=False)
        model.fit(train.astype(np.float32).tocsr(), show_progress=False)
    return model


def _als_scores(model, history) -> np.ndarray:  # noqa: ANN001
    """The exact ALS user step on each history row against the fitted item factors (implicit's own solver,
    with the confidence of the fit), then inner products with every item."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        users = model.recalculate_user(np.arange(history.shape[0]), history.astype(np.float32).tocsr())
    return np.asarray(users, dtype=np.float32).reshape(history.shape[0], -1) @ model.item_factors.T
