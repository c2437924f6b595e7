"""The searcher registry: ``retrieve --method M`` over an export of a family -> the searcher class.

    searcher_for("hnsw", manifest)   # HnswSearcher (a tower export), or a one-line error
"""

from __future__ import annotations

from typing import get_args

from rectool.errors import UserError
from rectool.programs.manifest import ExportManifest
from rectool.retrieval.methods.brute import BrutePairSearcher, BruteTowerSearcher
from rectool.retrieval.methods.hnsw import HnswSearcher
from rectool.retrieval.methods.nann import NannSearcher
from rectool.retrieval.methods.tdm import TdmSearcher
from rectool.retrieval.options import Method
from rectool.retrieval.searcher import Family, PairSearcher, TowerSearcher, family_of

SEARCHERS: dict[Method, dict[Family, type[TowerSearcher] | type[PairSearcher]]] = {
    "hnsw": {"towers": HnswSearcher},
    "brute": {"towers": BruteTowerSearcher, "pairs": BrutePairSearcher},
    "tdm": {"pairs": TdmSearcher},
    "nann": {"pairs": NannSearcher},
}
assert set(SEARCHERS) == set(get_args(Method)), "every method has a searcher"


def methods_for(family: Family) -> list[str]:
    return [m for m, by_family in SEARCHERS.items() if family in by_family]


def searcher_for(method: Method, manifest: ExportManifest, where: str = "") -> type[TowerSearcher] | type[PairSearcher]:
    """The searcher of ``method`` for this export, or a one-line error saying which methods fit it."""
    if not manifest.towers and not manifest.pair_scorer:
        raise UserError(f"--model {where}: has neither a user_tower nor a scorer program; export a retrieval model")
    family = family_of(manifest)
    found = SEARCHERS[method].get(family)
    if found is not None:
        return found
    fits = " or ".join(methods_for(family))
    if family == "towers":
        raise UserError(f"--method {method} scores pairs with the model; export a tdm or nann model (this export "
                        f"has towers: use --method {fits})")
    raise UserError(f"--method {method} searches user vectors; this export is a pair scorer: use --method {fits}")
