"""Layer-wise sampler and beam search on built trees: exactness, counts, determinism, references."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from helpers import ROOT
from rectool.errors import UserError
from rectool.tree import LayerSampler, beam_search, brute_force, search
from rectool.tree.kernels import init_codes
from rectool.tree.kmeans import balanced_kmeans_codes
from rectool.tree.structure import tree_from_codes

sys.path.insert(0, str(ROOT / "bench"))
from ref_beam import beam_search_numpy  # noqa: E402


def _init_tree(n_items, n, seed=0):
    ids = np.random.default_rng(seed).permutation(10 * n_items)[:n_items].astype(np.int64) + 7
    return tree_from_codes(ids, init_codes(n_items, n), n)


class DotScorer:
    """score(user, node) = <user vector, node vector>, node vectors looked up by node id; counts calls."""

    def __init__(self, tree, n_users, dim=8, seed=0, ties=False):
        rng = np.random.default_rng(seed)
        self.user = rng.standard_normal((n_users, dim)).astype(np.float32)
        self.node = rng.standard_normal((tree.num_nodes, dim)).astype(np.float32)
        if ties:  # coarse vectors: many equal scores
            self.user, self.node = np.round(self.user), np.round(self.node)
        self.order = np.argsort(tree.node_ids)
        self.sorted_ids = tree.node_ids[self.order]
        self.calls = 0

    def __call__(self, user_index, node_id):
        self.calls += 1
        rows = self.order[np.searchsorted(self.sorted_ids, node_id)]
        return np.einsum("ij,ij->i", self.user[user_index], self.node[rows])


# ----------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("n_items,n", [(13, 2), (100, 3), (1000, 2)])
def test_sampler_positives_are_ancestors_and_negatives_never_positive(n_items, n):
    tree = _init_tree(n_items, n)
    sizes = tree.level_sizes
    counts = [0] + [int(min(s - 1, 3 + lv)) for lv, s in enumerate(sizes[1:], 1)]
    sampler = LayerSampler(tree, counts)
    items = np.random.default_rng(1).choice(tree.leaf_item_ids, 256)
    batch = sampler.sample(items, np.random.default_rng(2))
    assert batch.node_ids.shape == (256, sum(1 + c for c in counts[1:])) == batch.labels.shape
    path = tree.ancestors(tree.leaf_index(items))
    for level in range(1, tree.num_levels):
        cols = batch.level_columns(level)
        block, labels = batch.node_index[:, cols], batch.labels[:, cols]
        assert block.shape[1] == 1 + counts[level]
        assert (labels[:, 0] == 1).all() and (labels[:, 1:] == 0).all()
        assert np.array_equal(block[:, 0], path[:, level])  # the positive is the ancestor on this level
        a, b = tree.level_offsets[level], tree.level_offsets[level + 1]
        negs = block[:, 1:]
        assert ((negs >= a) & (negs < b)).all()  # negatives come from the same level
        assert not (negs == block[:, :1]).any()  # and are never the positive
        assert all(len(set(row)) == len(row) for row in negs.tolist())  # nor repeated
    assert np.array_equal(batch.node_ids[:, -1 - counts[-1]], items)  # the leaf positive is the item itself
    assert np.array_equal(batch.node_ids, tree.node_ids[batch.node_index])


def test_sampler_is_deterministic_in_the_generator():
    tree = _init_tree(500, 2)
    sampler = LayerSampler(tree, [0] + [1] * (tree.num_levels - 1))
    items = tree.leaf_item_ids[:50]
    a = sampler.sample(items, np.random.default_rng(9))
    b = sampler.sample(items, 9)
    c = sampler.sample(items, np.random.default_rng(10))
    assert np.array_equal(a.node_index, b.node_index) and not np.array_equal(a.node_index, c.node_index)


@pytest.mark.parametrize("counts,message", [
    ([0, 1], "entries but the tree has"),
    ([1, 1, 1, 1, 1], "root level is never sampled"),
    ([0, 2, 1, 1, 1], "lower it to at most 1"),
])
def test_sampler_rejects_bad_layer_num_sample(counts, message):
    tree = _init_tree(13, 2)  # 5 levels: 1, 2, 4, 8, 13 nodes
    with pytest.raises(UserError, match=message):
        LayerSampler(tree, counts)


def test_sampler_rejects_unknown_items():
    tree = _init_tree(13, 2)
    with pytest.raises(UserError, match="item id 5 is not a leaf"):
        LayerSampler(tree, [0, 1, 1, 1, 1]).sample(np.array([5]), 0)


# ----------------------------------------------------------------------------- beam search


@pytest.mark.parametrize("n_items,n,beam", [(13, 2, 13), (13, 2, 50), (100, 3, 100), (257, 2, 300)])
def test_beam_wide_enough_equals_brute_force(n_items, n, beam):
    tree = _init_tree(n_items, n)
    for ties in (False, True):
        scorer = DotScorer(tree, 9, ties=ties)
        got = search(tree, scorer, 9, recall_num=10, beam=beam, method="beam")
        want = brute_force(tree, scorer, 9, recall_num=10, max_pairs=64)  # several chunks
        assert np.array_equal(search(tree, scorer, 9, 10, method="brute").item_ids, want.item_ids)
        assert np.array_equal(got.item_ids, want.item_ids) and np.array_equal(got.scores, want.scores)
        assert (got.nodes_scored == n_items).all() and (want.nodes_scored == n_items).all()
        assert scorer.calls > 1


@pytest.mark.parametrize("n_items,n,recall,beam", [(1000, 2, 20, None), (1000, 3, 5, 7), (5000, 2, 50, 100),
                                                   (300, 4, 30, 1)])
def test_beam_matches_numpy_reference(n_items, n, recall, beam):
    tree = _init_tree(n_items, n, seed=n_items)
    for ties in (False, True):
        scorer = DotScorer(tree, 33, seed=3, ties=ties)
        got = beam_search(tree, scorer, 33, recall, beam)
        want = beam_search_numpy(tree, scorer, 33, recall, beam)
        assert np.array_equal(got.item_ids, want.item_ids)
        assert np.array_equal(got.scores, want.scores)
        assert np.array_equal(got.nodes_scored, want.nodes_scored)


def test_beam_counts_and_expands_without_scoring_the_top():
    tree = _init_tree(1024, 2)  # perfect binary tree, levels of 1, 2, 4, ..., 1024
    calls = []

    def scorer(u, node):
        calls.append(node.size)
        return np.zeros(node.size, np.float32)

    res = beam_search(tree, scorer, 3, recall_num=8)  # beam 16: level 4 (16 nodes) is the first scored
    assert calls == [3 * 16] + [3 * 32] * 6
    assert (res.nodes_scored == 16 + 6 * 32).all()
    assert res.item_ids.shape == (3, 8) and (res.item_ids >= 0).all()


def test_beam_on_a_learnt_tree_finds_the_exact_neighbours():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((64, 8)).astype(np.float32) * 3
    emb = centers[rng.integers(0, 64, 2000)] + rng.standard_normal((2000, 8)).astype(np.float32) * 0.3
    ids = np.arange(2000, dtype=np.int64) * 3
    tree = tree_from_codes(ids, balanced_kmeans_codes(emb, 2, seed=0), 2)
    sums = np.zeros((tree.num_nodes, 8))  # a node's vector: the mean of its leaves
    sums[tree.leaf_start:] = emb[tree.leaf_item_ids // 3]
    counts = np.zeros(tree.num_nodes)
    counts[tree.leaf_start:] = 1
    for i in range(tree.num_nodes - 1, 0, -1):
        sums[tree.parents[i]] += sums[i]
        counts[tree.parents[i]] += counts[i]
    node_emb = (sums / counts[:, None]).astype(np.float32)
    users = emb[rng.integers(0, 2000, 20)] + rng.standard_normal((20, 8)).astype(np.float32) * 0.3
    index = {int(v): i for i, v in enumerate(tree.node_ids)}

    def scorer(u, node):
        rows = np.fromiter((index[int(v)] for v in node), np.int64, node.size)
        return -((users[u] - node_emb[rows]) ** 2).sum(1)

    beam = beam_search(tree, scorer, 20, recall_num=10, beam=40)
    brute = brute_force(tree, scorer, 20, recall_num=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(beam.item_ids, brute.item_ids, strict=True)])
    assert overlap > 0.8 and beam.nodes_scored.max() < 2000 / 2


def test_sampler_and_search_on_a_loaded_tree(tmp_path):
    from rectool.tree import load_tree

    built = _init_tree(300, 2)
    built.save(tmp_path)
    tree = load_tree(tmp_path)  # read-only memory maps
    assert not tree.codes.flags.writeable and np.array_equal(tree.node_ids, built.node_ids)
    rows = np.array([5, 0, tree.num_nodes - 1, 300])
    assert tree.node_index(np.r_[tree.node_ids[rows], -99]).tolist() == [*rows.tolist(), -1]
    batch = LayerSampler(tree, [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]).sample(tree.leaf_item_ids[:20], 0)
    assert batch.node_ids.shape == (20, 9 + 1 + 2 + 3 * 7)
    scorer = DotScorer(tree, 4)
    a = beam_search(tree, scorer, 4, recall_num=5, beam=300)
    b = brute_force(tree, scorer, 4, recall_num=5)
    assert np.array_equal(a.item_ids, b.item_ids)
    with pytest.raises(UserError, match="no compact/ tree arrays"):
        load_tree(tmp_path / "nothing")
