"""``retrieve --item-to-item / --item-similarity``: the mixed score against a plain numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rectool.errors import UserError
from rectool.retrieval.brute import brute_search_dot
from rectool.retrieval.formats import Ragged
from rectool.retrieval.item_to_item import ItemToItem, MixedScores, SoftMaxTerm, single_item_inputs


def _soft_max(vectors, items, temperature):
    z = vectors.astype(np.float64) @ items.T.astype(np.float64) / temperature
    return temperature * (z.max(0) + np.log(np.exp(z - z.max(0)).sum(0)))


def _reference(queries, terms, items, temperature):
    """(1 − Σ W)·u·v + Σ W·T·logsumexp_j(x_j·v / T), a term without vectors for a user giving W back to u·v."""
    out = queries.astype(np.float64) @ items.T.astype(np.float64)
    for i in range(len(queries)):
        plain, mixed = out[i].copy(), out[i].copy()
        for t in terms:
            own = t.vectors[t.offsets[i]:t.offsets[i + 1]]
            if len(own):
                mixed += t.weight * (_soft_max(own, items, temperature) - plain)
        out[i] = mixed
    return out


def _problem(seed=0, n=7, d=5, n_items=40):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, d)).astype(np.float32)
    items = rng.normal(size=(n_items, d)).astype(np.float32)
    terms = []
    for lengths, weight in (([3, 0, 1, 5, 2, 0, 4], 0.3), ([2, 1, 0, 5, 2, 0, 3], 0.45)):
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        terms.append(SoftMaxTerm(offsets, rng.normal(size=(int(offsets[-1]), d)).astype(np.float32), weight))
    return q, terms, items


def test_single_item_inputs_cut_every_list_column_to_one_position():
    x = {"user_id": torch.tensor([7, 8]), "hist": torch.tensor([[5, 3, 9], [2, 0, 0]]),
         "hist__len": torch.tensor([3, 1]), "cat": torch.tensor([[1, 1, 2], [4, 0, 0]]),
         "cat__len": torch.tensor([3, 1])}
    rows, offsets = single_item_inputs(x)
    assert offsets.tolist() == [0, 3, 4]
    assert rows["hist"].tolist() == [[5, 0, 0], [3, 0, 0], [9, 0, 0], [2, 0, 0]]
    assert rows["cat"].tolist() == [[1, 0, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]]
    assert rows["hist__len"].tolist() == [1, 1, 1, 1] and rows["user_id"].tolist() == [7, 7, 7, 8]
    x["cat__len"] = torch.tensor([2, 1])
    with pytest.raises(UserError, match="differ in length"):
        single_item_inputs(x)


@pytest.mark.parametrize("which", [[0], [1], [0, 1]])
def test_mixed_block_and_pairs_match_the_reference(which):
    q, terms, items = _problem()
    terms = [terms[i] for i in which]
    mix = MixedScores(q, terms, 0.2)
    want = _reference(q, terms, items, 0.2)
    np.testing.assert_allclose(mix.block(q @ items.T, 0, len(q), items), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mix.block(q[2:5] @ items.T, 2, 5, items), want[2:5], rtol=1e-5, atol=1e-5)
    rows, cols = np.array([0, 0, 1, 3, 5, 6, 6]), np.array([4, 9, 2, 0, 7, 39, 1])
    dots = np.einsum("ij,ij->i", q[rows], items[cols])
    np.testing.assert_allclose(mix.pairs(dots, rows, items[cols]), want[rows, cols], rtol=1e-5, atol=1e-5)


def test_brute_search_with_the_mix_is_the_exact_top_k():
    q, terms, items = _problem(seed=3)
    ids = np.arange(100, 140)
    exclude = Ragged.from_lists([[101, 130], [], [], [139], [], [100], []])
    mix = MixedScores(q, terms, 0.05)
    got = brute_search_dot(q, items, 5, item_ids=ids, exclude=exclude, item_block=16, mix=mix, progress=False)
    want = _reference(q, terms, items, 0.05)
    for i, row in enumerate(want):
        row = row.copy()
        row[exclude.row(i) - 100] = -np.inf
        best = np.argsort(-row, kind="stable")[:5]
        assert got.item_ids[i].tolist() == (ids[best]).tolist()
        np.testing.assert_allclose(got.scores[i], row[best], rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="space ip"):
        brute_search_dot(q, items, 5, space="cosine", mix=mix, progress=False)


def test_similarity_term_reads_the_history_items_vectors():
    """W2's vectors are the lookup's rows of each user's history ids; ids not found are skipped."""
    table = {3: [1.0, 0.0], 5: [0.0, 1.0]}

    def lookup(ids):
        return np.array([table.get(int(i), [0.0, 0.0]) for i in ids], np.float32), np.isin(ids, list(table))

    mix = ItemToItem(0.0, 0.5, 0.1).scores(None, {}, np.zeros((3, 2), np.float32),
                                          (np.array([[3, 5, 9], [9, 0, 0], [5, 0, 0]]), np.array([3, 1, 1])), lookup)
    (term,) = mix.terms
    assert term.offsets.tolist() == [0, 2, 2, 3] and term.vectors.tolist() == [[1, 0], [0, 1], [0, 1]]


def test_weights_zero_are_off_and_bad_values_are_refused():
    assert ItemToItem.resolve(None, None, 0.1) is None and ItemToItem.resolve(0.0, 0.0, 0.1) is None
    assert ItemToItem.resolve(0.5, None, 0.1) == ItemToItem(0.5, 0.0, 0.1)
    with pytest.raises(UserError, match=r"--item-to-item 1.5: give a weight in \[0, 1\]"):
        ItemToItem.resolve(1.5, None, 0.1)
    with pytest.raises(UserError, match="exceed 1"):
        ItemToItem.resolve(0.6, 0.6, 0.1)
    with pytest.raises(UserError, match="positive number"):
        ItemToItem.resolve(0.5, 0.0, 0.0)
