"""The export contract: what ``export`` writes about its programs, read once by every reader.

An export directory's ``_meta.json`` (kind ``export``) carries an ``ExportManifest``: the
model type, its class count, every column it reads, and one ``PartManifest`` per program
(``NAME.pt2``):

=============== ============== ================================================================
part            output kind    what the program returns
=============== ============== ================================================================
model           probabilities  [B] (binary) or [B, num_class]
user_tower      vector         [B, D] user vectors (two_tower)
user_tower      interests      [B, K, D] interest vectors (mind)
item_tower      vector         [B, D] item vectors
scorer          pair_scores    [B, T] scores of each row's user and its T candidates (tdm, nann)
item_embedding  vector         [B, D] candidate embeddings (tdm, nann)
=============== ============== ================================================================

A pair scorer names its candidate column and the candidate's shape: ``[B, T]`` (a matrix,
every export since scorers took one) or ``[B]`` (older exports: one candidate per row). A
two-tower trained with ``model.repeat`` adds its history column and learned bonus.

Readers call ``ExportManifest.read(export_dir)`` once and pass the manifest on; exports
written before the manifest had a version (no ``kind`` per part) are read by inferring the
kind from the part's name and its description, so they still load.

    manifest = ExportManifest.read(Path("out/export"))
    manifest.part("user_tower").kind   # "vector"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from rectool.artifacts import check_kind
from rectool.errors import UserError

MANIFEST_VERSION = 1
OutputKind = Literal["probabilities", "vector", "interests", "pair_scores"]
CandidateShape = Literal["[B]", "[B, T]"]
ITEM_PARTS = ("item_tower", "item_embedding")  # the item programs ``embed`` runs, in order of preference


class RepeatManifest(BaseModel):
    """A two-tower's learned repeat bonus: ``bonus[c]`` for an item found c times in ``column``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    column: str
    bonus: list[float]


class PartManifest(BaseModel):
    """One exported program: the columns it reads, what it returns, and what a reader needs besides."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    columns: list[str]
    kind: OutputKind
    output: str = ""                          # the same in words, with shapes (for people)
    candidate: str | None = None              # pair scorers: the candidate id column
    candidate_shape: CandidateShape | None = None
    repeat: RepeatManifest | None = None


class ExportManifest(BaseModel):
    """Everything a reader of an export needs to know without loading a program."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: int = MANIFEST_VERSION
    model: str | None = None
    num_class: int = 1
    columns: list[str] = []
    parts: dict[str, PartManifest] = {}
    checkpoint: str | None = None
    step: int | None = None

    @classmethod
    def read(cls, export_dir: Path, flag: str = "--model") -> ExportManifest:
        """The manifest of ``export_dir``; a one-line error naming ``flag`` if it is no export."""
        export_dir = Path(export_dir)
        meta = check_kind(export_dir, "export", flag) or {}  # the one read of _meta.json
        try:
            return cls.from_meta(meta)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UserError(f"{flag} {export_dir}: _meta.json {where}: {first['msg']}; export the model again "
                            "with this rectool") from None

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ExportManifest:
        """From an export's ``_meta.json`` (its other keys, written by every command, are not the manifest's)."""
        parts = {name: _upgrade(name, dict(part)) for name, part in meta.get("parts", {}).items()}
        best_known = {k: meta[k] for k in ("model", "num_class", "columns", "checkpoint", "step") if k in meta}
        return cls(version=meta.get("manifest_version", MANIFEST_VERSION), parts=parts, **best_known)

    def to_meta(self) -> dict[str, Any]:
        """The keys ``export`` adds to ``_meta.json``."""
        out = self.model_dump(exclude={"version"})
        return {"manifest_version": self.version, **out}

    def part(self, name: str, flag: str = "--model", where: Path | str = "") -> PartManifest:
        if name not in self.parts:
            have = ", ".join(self.parts) or "none"
            raise UserError(f"{flag} {where}: has no {name}.pt2 (it has: {have}); give an export of a model "
                            f"with a '{name}' program")
        return self.parts[name]

    @property
    def towers(self) -> bool:
        """A user tower (two_tower, mind): retrieval searches its vectors."""
        return "user_tower" in self.parts

    @property
    def pair_scorer(self) -> bool:
        """A scorer of (user, candidate) pairs (tdm, nann): retrieval searches with the model."""
        return "scorer" in self.parts

    @property
    def item_part(self) -> str | None:
        """The item program ``embed`` runs, if any."""
        return next((p for p in ITEM_PARTS if p in self.parts), None)


def _upgrade(name: str, part: dict[str, Any]) -> dict[str, Any]:
    """A part as exports before the manifest's version wrote it (no ``kind``) -> today's fields."""
    if "kind" not in part:
        described = str(part.get("output", ""))
        if name == "model":
            part["kind"] = "probabilities"
        elif name == "scorer":
            part["kind"] = "pair_scores"
        else:
            part["kind"] = "interests" if described.startswith("interest") else "vector"
    if part.get("candidate") and not part.get("candidate_shape"):
        part["candidate_shape"] = "[B]"
    return part
