"""Raw log layouts that ``rectool convert`` reads, and the schemas it writes.

Built-in formats (``--format``):

============== ======= =====================================================================
name           writes  raw columns (in file order)
============== ======= =====================================================================
tianchi-user   events  user_id, item_id, behavior_type (1-4), user_geohash, item_category,
                       time (``2014-12-06 02``); CSV with header (offline) or TSV without
                       header (online parts A/B): delimiter and header are detected
tianchi-item   items   item_id, item_geohash, item_category (items repeat: deduplicated)
userbehavior   events  user_id, item_id, category_id, behavior_type (pv|fav|cart|buy),
                       timestamp (unix seconds, converted to China time, UTC+8); no header
movielens      events  MovieLens u.data: user, item, rating, unix time; tab separated
movielens-1m   events  MovieLens-1M ratings.dat: ``UserID::MovieID::Rating::Timestamp`` (``::``
                       separated, no header, unix seconds)
user-lines     events  one line per user ``uid item item ...`` (see ``rectool.ingest.lines``)
pairs          events  one ``user item`` pair per line
generic        events  described by a YAML file (``--schema spec.yaml``), see below
               or items
============== ======= =====================================================================

Events schema (hive-partitioned by ``dt=YYYY-MM-DD`` when times exist)::

    user_id int64, item_id int64, category_id int64 (null if unknown),
    behavior int8 (1 browse/pv, 2 collect/fav, 3 cart, 4 buy), time timestamp[ms] (local
    time of the dataset), geohash string (null if empty)  [+ extra columns of a generic spec]

ORC and parquet inputs (``.orc``, ``.parquet``: by suffix) are read by column *name*: a
format's raw column names (or a generic spec's ``columns``) name the source columns, in any
order, and ``rename`` maps them to rectool's; ``delimiter`` and ``header`` do not apply. A
source column holding numbers, text or (for times) timestamps is converted as its type says.

Items schema::

    item_id int64, category_id int64, geohashes list<string> (distinct, non-empty)

Generic spec example (``ratings.yaml``)::

    kind: events
    delimiter: "\\t"
    header: false
    columns:
      - {name: user_id, type: int64}
      - {name: item_id, type: int64}
      - {name: rating, type: float64}        # extra columns are kept as they are
      - {name: time, type: timestamp, format: unix_s}
    behavior_default: 1                      # no behaviour column: every row is a view

The same spec for a parquet file whose columns are ``uid, adgroup_id, ts`` (``ads.yaml``)::

    kind: events
    columns:
      - {name: uid, type: int64}
      - {name: adgroup_id, type: int64}
      - {name: ts, type: timestamp, format: unix_s}
    rename: {uid: user_id, adgroup_id: item_id, ts: time}

A delimiter of several characters (``"::"``) is allowed for text files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rectool.errors import UserError
from rectool.yamlconfig import read_yaml_file, validate_file

EVENT_COLUMNS = ("user_id", "item_id", "category_id", "behavior", "time", "geohash")
EVENTS_SCHEMA = pa.schema([
    ("user_id", pa.int64()),
    ("item_id", pa.int64()),
    ("category_id", pa.int64()),
    ("behavior", pa.int8()),
    ("time", pa.timestamp("ms")),  # parquet has no second unit
    ("geohash", pa.string()),
])
ITEMS_SCHEMA = pa.schema([
    ("item_id", pa.int64()),
    ("category_id", pa.int64()),
    ("geohashes", pa.list_(pa.string())),
])
BEHAVIOR_NAMES = {"pv": 1, "browse": 1, "click": 1, "fav": 2, "collect": 2, "cart": 3, "buy": 4}

# behavior: names or codes (pv/fav/cart/buy or 1-4); behavior_code: codes 1-4 only (read as int8, faster)
ColumnType = Literal["int64", "int32", "float64", "float32", "string", "timestamp", "behavior", "behavior_code"]
_ARROW_TYPES = {"int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(), "float32": pa.float32(),
                "string": pa.string()}


class ColumnSpec(BaseModel):
    """One raw column: its name (a name of the output schema maps onto it) and type."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    type: ColumnType = "string"
    format: str | None = Field(default=None, description="timestamp: strptime format, or unix_s / unix_ms")

    @model_validator(mode="after")
    def _time_needs_format(self) -> ColumnSpec:
        if self.type == "timestamp" and not self.format:
            raise ValueError(f"column {self.name}: a timestamp needs `format` (strptime, unix_s or unix_ms)")
        return self


class FormatSpec(BaseModel):
    """A raw layout: how to split lines and what each column is."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["events", "items"] = "events"
    delimiter: str | Literal["auto"] = "auto"
    header: bool | Literal["auto"] = "auto"
    columns: tuple[ColumnSpec, ...]
    behavior_default: int | None = Field(default=None, ge=1, le=4)
    utc_offset_hours: float = 0.0
    rename: dict[str, str] = Field(default_factory=dict, description="raw name -> output name")

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str) -> str:
        if v != "auto" and (not v or any(ch in v for ch in '\r\n"')):
            raise ValueError(f"delimiter must be one or more characters (no line end or quote), or 'auto' (got {v!r})")
        return v

    @model_validator(mode="after")
    def _required(self) -> FormatSpec:
        names = [self.rename.get(c.name, c.name) for c in self.columns]
        need = ("user_id", "item_id") if self.kind == "events" else ("item_id",)
        missing = [n for n in need if n not in names]
        if missing:
            raise ValueError(f"columns must include {', '.join(missing)} (after rename)")
        if len(set(names)) != len(names):
            raise ValueError("column names must be distinct")
        return self

    @property
    def raw_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def output_name(self, raw: str) -> str:
        return self.rename.get(raw, raw)


TIANCHI_USER = FormatSpec(
    kind="events",
    columns=(ColumnSpec(name="user_id", type="int64"), ColumnSpec(name="item_id", type="int64"),
             ColumnSpec(name="behavior_type", type="behavior_code"), ColumnSpec(name="user_geohash", type="string"),
             ColumnSpec(name="item_category", type="int64"),
             ColumnSpec(name="time", type="timestamp", format="%Y-%m-%d %H")),
    rename={"behavior_type": "behavior", "user_geohash": "geohash", "item_category": "category_id"},
)
TIANCHI_ITEM = FormatSpec(
    kind="items",
    columns=(ColumnSpec(name="item_id", type="int64"), ColumnSpec(name="item_geohash", type="string"),
             ColumnSpec(name="item_category", type="int64")),
    rename={"item_geohash": "geohash", "item_category": "category_id"},
)
USERBEHAVIOR = FormatSpec(
    kind="events",
    delimiter=",",
    header=False,
    columns=(ColumnSpec(name="user_id", type="int64"), ColumnSpec(name="item_id", type="int64"),
             ColumnSpec(name="category_id", type="int64"), ColumnSpec(name="behavior_type", type="behavior"),
             ColumnSpec(name="timestamp", type="timestamp", format="unix_s")),
    rename={"behavior_type": "behavior", "timestamp": "time"},
    utc_offset_hours=8.0,
)
MOVIELENS = FormatSpec(  # u.data: user item rating unix-time, tab separated, no header
    kind="events",
    delimiter="\t",
    header=False,
    columns=(ColumnSpec(name="user_id", type="int64"), ColumnSpec(name="item_id", type="int64"),
             ColumnSpec(name="rating", type="float32"),
             ColumnSpec(name="timestamp", type="timestamp", format="unix_s")),
    rename={"timestamp": "time"},
    behavior_default=1,
)
MOVIELENS_1M = MOVIELENS.model_copy(update={"delimiter": "::"})  # ratings.dat: UserID::MovieID::Rating::Timestamp
BUILTIN_FORMATS: dict[str, FormatSpec] = {
    "tianchi-user": TIANCHI_USER,
    "tianchi-item": TIANCHI_ITEM,
    "userbehavior": USERBEHAVIOR,
    "movielens": MOVIELENS,
    "movielens-1m": MOVIELENS_1M,
}
FORMAT_NAMES = (*BUILTIN_FORMATS, "user-lines", "pairs", "generic")


def load_format(name: str, schema_path: str | os.PathLike[str] | None = None) -> FormatSpec:
    """The built-in format ``name``, or the generic format described by ``schema_path``."""
    if name == "generic":
        if schema_path is None:
            raise UserError("--format generic needs --schema SPEC.yaml describing the columns")
        return load_spec_file(Path(schema_path))
    if schema_path is not None:
        raise UserError(f"--schema is only used with --format generic (got --format {name})")
    if name not in BUILTIN_FORMATS:
        raise UserError(f"--format {name}: unknown format; choose one of {', '.join(FORMAT_NAMES)}")
    return BUILTIN_FORMATS[name]


def load_spec_file(path: Path) -> FormatSpec:
    return validate_file(path, read_yaml_file(path, "--schema"), FormatSpec, label="field ")
