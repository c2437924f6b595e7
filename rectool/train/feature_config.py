"""The ``features`` section of a training config: one frozen class per feature kind, told apart by ``kind``.

``id`` (an id column, hashed or bucketed into an embedding table), ``raw`` (a number,
normalised, optionally bucketized into an embedding; or a fixed-length list of numbers, a
multi-dimensional dense input), ``cross`` (hashed combinations of columns) and ``sequence``
(a list column, or a string of ids joined by ``separator``, pooled by a combiner, or kept as
a sequence for attention). An ``id`` or ``raw`` feature (and the label) also reads a column
of 1-element lists, as RecIS writes them. ``Strict`` is the base of every config class:
frozen, unknown keys refused.

    features:
      - {name: user_id, kind: id, hash_bucket_size: 100000, embedding_dim: 16}
      - {name: dense1, kind: raw, normalizer: zscore}            # list<double> of 8: 8 dense values
      - {name: hist_item_ids, kind: sequence, embedding_name: item, combiner: mean, max_len: 50}
      - {name: tags, kind: sequence, separator: ";", hash_bucket_size: 1000, embedding_dim: 8, max_len: 20}

Sequence combiners: ``sum``, ``mean``, ``tile`` (the first ``tile_len`` embeddings
concatenated, RecIS's name; ``concat``, Torch-RecHub's name for it, is read as ``tile``) and
``none`` (the sequence itself, for attention).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")



class _EmbeddingOptions(Strict):
    embedding_dim: int | None = Field(default=None, gt=0)
    embedding_name: str | None = Field(default=None, description="share one table between features")


class _IdOptions(_EmbeddingOptions):
    hash_bucket_size: int | None = Field(default=None, gt=0)
    num_buckets: int | None = Field(default=None, gt=0)
    modulo: bool = Field(default=False, description="num_buckets: take out-of-range ids modulo, not an error")
    vocab_list: list[int | str] | None = None
    default_id: int = Field(default=0, description="id used for missing (null) values")

    @model_validator(mode="after")
    def _one_bucketing(self) -> _IdOptions:
        chosen = [k for k in ("hash_bucket_size", "num_buckets", "vocab_list") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("give exactly one of hash_bucket_size, num_buckets, vocab_list"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        return self

    @property
    def table_size(self) -> int:
        if self.hash_bucket_size is not None:
            return self.hash_bucket_size
        if self.num_buckets is not None:
            return self.num_buckets
        return len(self.vocab_list or []) + 1  # row 0: out of vocabulary


class IdFeature(_IdOptions):
    """A categorical id column (int64 or string) mapped to an embedding row."""

    kind: Literal["id"]
    name: str
    input: str | None = Field(default=None, description="column name (default: the feature name)")


class RawFeature(_EmbeddingOptions):
    """A numeric column: normalised and fed as a dense value, or bucketized to an id. On a column of
    fixed-length lists of numbers (``list<double>`` of 8 values) it is 8 dense values, normalised per
    component; on a column of 1-element lists, the one value."""

    kind: Literal["raw"]
    name: str
    input: str | None = None
    match: str | None = Field(default=None, description="glob over column names: one dense value per matching "
                                                         "numeric column (e.g. 'ui_*')")
    normalizer: Literal["none", "log1p", "zscore", "minmax"] = "none"
    stats: dict[str, float] | None = Field(
        default=None, description="zscore: {mean, std}; minmax: {min, max}; computed from training data if absent")
    boundaries: list[float] | None = Field(default=None, description="bucketize into len+1 ids (needs embedding_dim)")
    default_value: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> RawFeature:
        if self.match is not None and (self.input is not None or self.boundaries is not None or self.stats):
            raise ValueError("match selects many columns: it cannot be combined with input, boundaries or stats")
        if self.boundaries is not None:
            if sorted(self.boundaries) != list(self.boundaries):
                raise ValueError("boundaries must be sorted ascending")
            if self.embedding_dim is None:
                raise ValueError("boundaries turn the feature into an id: give embedding_dim")
        elif self.embedding_dim is not None:
            raise ValueError("embedding_dim on a raw feature needs boundaries (else it is a dense value)")
        need = {"zscore": {"mean", "std"}, "minmax": {"min", "max"}}.get(self.normalizer)
        if self.stats is not None and need is not None and set(self.stats) != need:
            raise ValueError(f"stats for {self.normalizer} must have exactly {sorted(need)}")
        return self

    @property
    def table_size(self) -> int:
        return len(self.boundaries or []) + 1

    def columns(self, names: Sequence[str]) -> list[str]:
        """The columns it reads: its ``input`` (or name), or every name of ``names`` matching ``match``."""
        if self.match is None:
            return [self.input or self.name]
        return [n for n in names if fnmatch.fnmatchcase(n, self.match)]


class CrossFeature(_EmbeddingOptions):
    """Hashed cross of two or more id columns."""

    kind: Literal["cross"]
    name: str
    inputs: list[str] = Field(min_length=2)
    hash_bucket_size: int = Field(gt=0)

    @property
    def table_size(self) -> int:
        return self.hash_bucket_size


class SequenceFeature(_IdOptions):
    """A list<id> column (most recent last), truncated to ``max_len`` and padded. With ``separator``
    it also reads a string column of joined ids (``"1;2;3"``, TorchEasyRec's data; ``""`` is an empty
    sequence): integer ids, or any string hashed when the feature has ``hash_bucket_size``."""

    kind: Literal["sequence"]
    name: str
    input: str | None = None
    max_len: int = Field(gt=0)
    truncate: Literal["keep_last", "keep_first"] = "keep_last"
    combiner: Literal["sum", "mean", "tile", "none"] = Field(
        default="mean", description="sum, mean, tile (concat: the same), none (kept for attention)")
    tile_len: int | None = Field(default=None, gt=0)
    separator: str | None = Field(default=None, min_length=1,
                                  description="the column is a string of ids joined by it (default: a list column)")

    @field_validator("combiner", mode="before")
    @classmethod
    def _concat_is_tile(cls, value: object) -> object:
        return "tile" if value == "concat" else value  # Torch-RecHub's name for tile

    @model_validator(mode="after")
    def _tile(self) -> SequenceFeature:
        if self.combiner == "tile" and self.tile_len is None:
            raise ValueError("combiner tile needs tile_len (concat is tile)")
        if self.combiner != "tile" and self.tile_len is not None:
            raise ValueError("tile_len is only used with combiner tile")
        if self.tile_len is not None and self.tile_len > self.max_len:
            raise ValueError("tile_len cannot exceed max_len")
        return self


Feature = Annotated[IdFeature | RawFeature | CrossFeature | SequenceFeature, Field(discriminator="kind")]
