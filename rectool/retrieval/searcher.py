"""The ``Searcher`` interface every retrieval method implements, and the two families' shared parts.

A searcher is built once per ``retrieve`` run from a ``SearchSetup`` (the options, the export's
manifest, the loaded program and the columns it reads); it loads its index, tree, graph or
item table then, and answers ``search(x, exclude)`` per batch of users: ``x`` the batch's
model-input tensors (``rectool.programs.inputs``), ``exclude`` each user's item ids never to
return; the answer is a ``TopK`` (item ids, scores, lengths, items scored per user).

Two families, by what the export holds (``ExportManifest``):

``TowerSearcher``  a user tower (two_tower, mind): the program gives user vectors (or
                   interests, searched one by one and merged); a subclass searches one vector
                   per user (``plain``). The repeat bonus and the item-to-item terms wrap it.
``PairSearcher``   a pair scorer (tdm, nann): the program scores (user, candidate) pairs
                   through a ``PairScorer``; a subclass searches with it (``search_pairs``).

Concrete searchers sit beside their search code (``hnsw.HnswSearcher``, ``brute.BruteTowerSearcher``,
``brute.BrutePairSearcher``, ``tdm_search.TdmSearcher``, ``nann_search.NannSearcher``), and
``rectool.retrieval.registry`` maps each ``--method`` to them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch

from rectool.errors import UserError
from rectool.programs.inputs import LEN_SUFFIX, InputSpec
from rectool.programs.manifest import ExportManifest
from rectool.retrieval.formats import Ragged, TopK, union_topk
from rectool.retrieval.item_to_item import ItemToItem, MixedScores
from rectool.retrieval.options import RetrieveOptions
from rectool.retrieval.pair_scorer import PairScorer
from rectool.retrieval.repeat import RepeatBonus, VectorLookup

Family = Literal["towers", "pairs"]


class Searcher(Protocol):
    """What ``retrieve`` needs from a method."""

    catalogue_size: int  # items the method can return (for the summary and the recall meta)

    def search(self, x: dict[str, torch.Tensor], exclude: Ragged | None) -> TopK:
        """Each user's top ``options.topk`` items for one batch of users."""
        ...

    def meta(self) -> dict[str, Any]:
        """What the recall's ``_meta.json`` records about the search besides the options."""
        ...


@dataclass(frozen=True)
class SearchSetup:
    """What a searcher is built from."""

    options: RetrieveOptions
    manifest: ExportManifest
    program: torch.nn.Module  # user_tower or scorer, on its device
    spec: InputSpec           # the user columns the program reads (a pair scorer's candidate column left out)
    device: torch.device


def family_of(manifest: ExportManifest) -> Family:
    return "towers" if manifest.towers else "pairs"


class TowerSearcher(abc.ABC):
    """Searches user vectors; subclasses give ``plain`` (top-k by u·v, or by ``mix``'s score)."""

    family: ClassVar[Family] = "towers"
    space: str = "ip"             # the index's space (hnsw), which the repeat bonus scores in
    counts_scored: bool = False   # exact search: every item scored, once per interest

    def __init__(self, setup: SearchSetup) -> None:
        self.setup, self.program, self.k = setup, setup.program, setup.options.topk
        part = setup.manifest.part("user_tower")
        self.interests = part.kind == "interests"
        self.repeat, self.mix, self.history_column = tower_terms(setup.options, setup.manifest, setup.spec)
        self.vectors: VectorLookup | None = None  # item-vector lookup: the repeat bonus and --item-similarity
        self.catalogue_size = 0

    @abc.abstractmethod
    def plain(self, queries: np.ndarray, exclude: Ragged | None, mix: MixedScores | None = None) -> TopK:
        """Top-k items for one vector per user."""

    def search(self, x: dict[str, torch.Tensor], exclude: Ragged | None) -> TopK:
        n = next(iter(x.values())).shape[0]
        with torch.inference_mode():
            vectors = self.program(x).float().numpy()
        interests = [vectors] if vectors.ndim == 2 else [vectors[:, i] for i in range(vectors.shape[1])]
        mix = None
        if self.mix is not None:
            c = self.history_column
            history = None if c is None else (x[c].numpy(), x[c + LEN_SUFFIX].numpy())
            mix = self.mix.scores(self.program, x, vectors, history, self.vectors)
        if self.repeat is not None:
            from rectool.retrieval.repeat import scored_queries, search_with_repeat

            history, bonus = self.repeat.history(x)
            result = search_with_repeat(lambda excl: self.plain(vectors, excl, mix),
                                        scored_queries(self.space, vectors), history, bonus, self.vectors, exclude,
                                        self.k, mix)
        else:
            found = [self.plain(q, exclude, mix) for q in interests]
            result = found[0] if len(found) == 1 else union_topk(found, self.k)
        counted = np.full(n, self.catalogue_size * len(interests), np.int64) if self.counts_scored \
            else result.n_scored  # a candidate search's rescored items (hnsw with the item-to-item terms)
        return TopK(result.item_ids, result.scores, result.lengths, counted)

    def meta(self) -> dict[str, Any]:
        mix = self.mix
        return {"repeat_bonus": None if self.repeat is None else {"column": self.repeat.column,
                                                                  "bonus": self.repeat.bonus.tolist()},
                "item_to_item": None if mix is None else {"item_to_item": mix.item_to_item,
                                                          "item_similarity": mix.similarity,
                                                          "temperature": mix.temperature}}


def tower_terms(options: RetrieveOptions, manifest: ExportManifest,
                spec: InputSpec) -> tuple[RepeatBonus | None, ItemToItem | None, str | None]:
    """The repeat bonus, the item-to-item terms and the history column they read, checked against the export."""
    part = manifest.part("user_tower")
    list_columns = [c.name for c in spec.columns if c.kind.endswith("_list")]
    mix, repeat_column, history_column = options.mix, options.repeat_column, None
    if mix is not None and mix.similarity:  # --repeat-column names the item-id history here without a bonus
        learned = RepeatBonus.from_part(part)
        history_column = repeat_column or (learned.column if learned else None)
        if history_column is None or history_column not in list_columns:
            raise UserError(f"--item-similarity: name the user's item-id history with --repeat-column (a list "
                            f"column the user tower reads: {', '.join(list_columns) or 'it reads none'})")
        repeat_column = repeat_column if options.repeat_bonus is not None else None
    repeat = RepeatBonus.resolve(part, options.repeat_bonus, repeat_column, list_columns)
    if repeat is not None and part.kind == "interests":
        raise UserError("--repeat-bonus needs one vector per user (two_tower); this export has several interests "
                        "per user (mind)")
    if mix is not None and part.kind == "interests":
        raise UserError("--item-to-item / --item-similarity need one vector per user (two_tower); this export has "
                        "several interests per user (mind)")
    return repeat, mix, history_column


class PairSearcher(abc.ABC):
    """Searches with a pair scorer; subclasses give ``search_pairs``."""

    family: ClassVar[Family] = "pairs"

    def __init__(self, setup: SearchSetup) -> None:
        options = setup.options
        if options.repeat_bonus is not None or options.repeat_column is not None:
            raise UserError("--repeat-bonus applies to tower exports (two_tower); this export is a pair scorer")
        part = setup.manifest.part("scorer")
        self.setup, self.program, self.k = setup, setup.program, options.topk
        self.candidate = part.candidate
        self.matrix = part.candidate_shape == "[B, T]"  # older exports: one candidate per row
        self.catalogue_size = 0

    def scorer(self, x: dict[str, torch.Tensor], candidate_ids: Any = None,
               exclude: Ragged | None = None) -> PairScorer:
        return PairScorer(self.program, x, self.candidate, candidate_ids, exclude=exclude, matrix=self.matrix)

    @abc.abstractmethod
    def search_pairs(self, x: dict[str, torch.Tensor], n: int, exclude: Ragged | None) -> TopK:
        """Top-k items for ``n`` users, scored through ``self.scorer(x, ...)``."""

    def search(self, x: dict[str, torch.Tensor], exclude: Ragged | None) -> TopK:
        return self.search_pairs(x, next(iter(x.values())).shape[0], exclude)

    def meta(self) -> dict[str, Any]:
        return {"repeat_bonus": None, "item_to_item": None}
