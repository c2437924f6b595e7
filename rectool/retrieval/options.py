"""``RetrieveOptions``: every setting of ``rectool retrieve``, validated once, frozen.

The validators hold the rules that combine settings without looking at the export
(what each method needs, how many widths NANN takes, which terms an index cannot
search); the rules that depend on the export live with the searcher that reads it
(``rectool.retrieval.searcher``). The CLI builds one from its flags; a library caller
builds one directly:

    options = RetrieveOptions(method="hnsw", index="out/index", topk=200, ef=[300])
    retrieve(options, model=Path("out/export"), users="out/seq/test/inputs", output="out/recalls")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from rectool.errors import UserError
from rectool.programs import DeviceChoice
from rectool.retrieval.choices import Method

if TYPE_CHECKING:
    from rectool.retrieval.item_to_item import ItemToItem

MAX_SEARCH = 2**31 - 1  # hnswlib and the NANN kernels take widths as C ints
NANN_EF = (100, 200, 400)     # levels 2, 1, 0: the paper's defaults
NANN_ROUNDS = (1, 1, 3)


class RetrieveOptions(BaseModel):
    """The settings of one retrieval; ``--flag`` names in the messages are the CLI's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method
    topk: int = 200
    index: str | None = None       # hnsw, nann (and brute over a pair scorer): an hnsw build / hnsw graph output
    items: str | None = None       # brute: the embedding table (towers) or an item table (pair scorers)
    tree: str | None = None        # tdm (and brute over a pair scorer): a tree directory
    ef: list[int] = []             # hnsw: one search ef; nann: the ef of levels 2, 1, 0
    rounds: list[int] = []         # nann: rounds on levels 2, 1, 0
    expand: int | None = None      # nann: nodes expanded per user and round
    beam: int | None = None        # tdm: nodes kept per level
    exclude_seen: bool = True
    exclude_column: str | None = None
    reserved_columns: list[str] = []
    repeat_bonus: float | None = None
    repeat_column: str | None = None
    item_to_item: float | None = None
    item_similarity: float | None = None
    item_to_item_temperature: float = 0.05
    mix_candidates: int = 20       # hnsw with the item-to-item terms: index candidates per history view
    batch_size: int = 256
    threads: int = 0
    device: DeviceChoice = "auto"

    @classmethod
    def of(cls, **settings: object) -> RetrieveOptions:
        """Build from settings; a value of the wrong type or an unknown setting is a one-line error."""
        try:
            return cls(**settings)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            flag = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "retrieve"
            raise UserError(f"{flag} {first.get('input')}: {first['msg']}") from None

    @model_validator(mode="after")
    def _combine(self) -> RetrieveOptions:
        if self.topk < 1:
            raise UserError("--topk must be at least 1")
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: give at least 1")
        for flag, values, least in (("--ef", self.ef, 1), ("--rounds", self.rounds, 0)):
            if any(not least <= v <= MAX_SEARCH for v in values):
                raise UserError(f"{flag} {','.join(map(str, values))}: give whole numbers of at least {least} (and "
                                f"at most {MAX_SEARCH}), comma-separated (e.g. 100,200,400)")
        if self.expand is not None and self.expand < 1:
            raise UserError("--expand must be at least 1 (or left out: expand every node not expanded yet)")
        if self.method in ("hnsw", "nann") and self.index is None:
            what = "from rectool hnsw build" if self.method == "hnsw" else "an hnsw build or hnsw graph output"
            raise UserError(f"--method {self.method} needs --index ({what})")
        if self.method == "tdm" and self.tree is None:
            raise UserError("--method tdm needs --tree (from rectool tree init / tree cluster)")
        if self.method == "nann" and (len(self.ef or NANN_EF) != 3 or len(self.rounds or NANN_ROUNDS) != 3):
            raise UserError("--ef and --rounds take three values for NANN: levels 2, 1, 0 (e.g. 100,200,400)")
        if self.method == "hnsw" and len(self.ef) > 1:
            raise UserError(f"--ef {','.join(map(str, self.ef))}: --method hnsw takes one search ef")
        self._check_terms()
        return self

    def _check_terms(self) -> None:
        """The retrieve-time terms of a tower's score: valid weights, and only where they can be searched."""
        if self.mix is not None and self.method not in ("brute", "hnsw"):
            raise UserError(f"--item-to-item / --item-similarity mix soft maxima into a tower's scores: use --method "
                            f"brute (exact) or hnsw (candidates rescored), not {self.method}")
        if self.mix_candidates < 1:
            raise UserError(f"--mix-candidates {self.mix_candidates}: take at least one candidate per history item")

    @property
    def mix(self) -> ItemToItem | None:
        """The item-to-item terms (``rectool.retrieval.item_to_item``), None when both weights are 0."""
        from rectool.retrieval.item_to_item import ItemToItem  # torch: not for option parsing

        return ItemToItem.resolve(self.item_to_item, self.item_similarity, self.item_to_item_temperature)

    @property
    def inputs(self) -> list[str]:
        """The files this retrieval reads besides the model and the users."""
        return [p for p in (self.index, self.items, self.tree) if p]
