"""The prediction schema shared by ``baseline``, a model's ``predict``, ``eval-f1`` and ``submit``.

Schema (parquet dataset with ``_meta.json`` kind ``predictions``, or an Arrow IPC stream
for ``-``)::

    user_id int64, item_id int64, score float32 (higher = more likely bought),
    label_day date32 (reserved: the day the prediction is for)

Further reserved names, optional: ``model`` (string), ``rank`` (int32). Readers need
only ``user_id, item_id, score``; ``label_day`` lets ``eval-f1`` refuse labels of
another day. A pair may appear more than once; readers keep its highest score.

Example::

    rectool baseline --samples data/samples/predict --rule cart-last-day -o data/pred
    rectool baseline --samples data/samples/eval -o - | rectool eval-f1 --pred-path - ...
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rectool.artifacts import (
    PartWriter,
    atomic_dir,
    check_kind,
    open_dataset,
    require_columns,
    write_ipc_stdout,
    write_meta,
)
from rectool.badinput import read_table
from rectool.errors import UserError

PRED_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("score", pa.float32()),
                         ("label_day", pa.date32())])
REQUIRED = ("user_id", "item_id", "score")
RESERVED = ("label_day", "model", "rank")


def write_predictions(batches: Iterable[pa.Table], output: str | os.PathLike[str], overwrite: bool,
                      inputs: list[str], **meta: Any) -> int:
    """Write prediction tables to a directory (atomic, with ``_meta.json``) or ``-``; returns rows."""
    if os.fspath(output) == "-":
        return write_ipc_stdout((b for t in batches for b in t.cast(PRED_SCHEMA).to_batches()), PRED_SCHEMA)
    with atomic_dir(output, overwrite) as tmp, PartWriter(tmp, PRED_SCHEMA) as writer:
        for t in batches:
            writer.write(t)
        writer.close()
        write_meta(tmp, kind="predictions", inputs=inputs, rows=writer.rows, schema=PRED_SCHEMA, **meta)
    return writer.rows


def days_of(table: pa.Table, meta: dict | None) -> set[dt.date] | None:
    """The label days a table is about: its ``label_day`` values, else ``label_days`` of its meta."""
    if "label_day" in table.column_names:
        return set(pc.unique(table["label_day"].drop_null()).to_pylist())
    if meta and meta.get("label_days"):
        return {dt.date.fromisoformat(d) for d in meta["label_days"] if d}
    return None


def read_predictions(spec: str | os.PathLike[str], flag: str = "--pred-path") -> tuple[pa.Table, dict | None]:
    """Predictions as one table (``user_id, item_id, score`` [+ ``label_day``]) and their meta."""
    text = os.fspath(spec)
    meta = check_kind(text, "predictions", flag) if text != "-" else None
    ds = open_dataset(text, flag)
    require_columns(ds.schema, REQUIRED, text, "predictions need user_id, item_id, score (see `rectool baseline`)")
    cols = [*REQUIRED, *(["label_day"] if "label_day" in ds.schema.names else [])]
    table = read_table(ds, f"{flag} {text}", columns=cols)
    if table.num_rows == 0:
        raise UserError(f"{flag} {text}: holds no predictions; check the model or the candidates it scored")
    for name in ("user_id", "item_id"):
        if not pa.types.is_integer(table.schema.field(name).type):
            raise UserError(f"{flag} {text}: column {name} is {table.schema.field(name).type}, expected int64 ids")
    if not (pa.types.is_floating(table.schema.field("score").type) or pa.types.is_integer(
            table.schema.field("score").type)):
        raise UserError(f"{flag} {text}: column score is {table.schema.field('score').type}, expected numbers")
    table = table.set_column(0, "user_id", table["user_id"].cast(pa.int64()))
    table = table.set_column(1, "item_id", table["item_id"].cast(pa.int64()))
    table = table.set_column(2, "score", table["score"].cast(pa.float64()))
    bad = table.num_rows - pc.sum(pc.is_finite(table["score"].fill_null(float("nan")))).as_py()
    if bad:
        raise UserError(f"{flag} {text}: {bad:,} score(s) are null, NaN or infinite; fix the model output")
    if "label_day" in table.column_names and not pa.types.is_date(table.schema.field("label_day").type):
        try:
            table = table.set_column(3, "label_day", table["label_day"].cast(pa.date32()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise UserError(f"{flag} {text}: label_day is not a date ({exc}); write it as date32") from exc
    return table, meta
