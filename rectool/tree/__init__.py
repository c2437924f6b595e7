"""TDM trees: build (``tree init`` / ``tree cluster``), load, sample and search.

Modules: ``structure`` (the compact tree, ``load_tree``), ``build`` (the two commands),
``inputs`` (reading items), ``attrs`` (node attributes), ``files`` (TorchEasyRec text
files), ``kmeans`` + ``kmeans_kernels`` (balanced recursive k-means), ``sampler``
(layer-wise negative sampling), ``beam`` (beam search and brute force), ``kernels``.

    from rectool.tree import load_tree, LayerSampler, beam_search
"""

from rectool.tree.beam import Retrieved, beam_search, brute_force, search
from rectool.tree.sampler import LayerSampler, TDMSample
from rectool.tree.structure import Tree, load_tree

__all__ = ["LayerSampler", "Retrieved", "TDMSample", "Tree", "beam_search", "brute_force", "load_tree", "search"]
