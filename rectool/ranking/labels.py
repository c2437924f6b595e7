"""True (user, item) pairs for ``eval-f1``, from any of the forms a user has at hand.

``read_labels(path)`` accepts

* a split of ``rectool dataset`` (``OUT/eval``, ``OUT/train``): its label pairs are read
  from the sibling ``OUT/labels`` (every pair bought on the label day, also those the
  candidates missed, so recall is the competition's); without that folder, the rows
  with ``label = 1``;
* a dataset folder (``OUT``) or its ``OUT/labels``: all label pairs;
* any parquet table of true pairs with ``user_id, item_id`` (+ optional ``label_day``),
  or one with a ``label`` column (rows with ``label = 1``);
* a CSV/TSV file with header ``user_id,item_id`` (+ optional ``label_day``) or without
  header (first two columns), such as synth's ``truth/next_day_purchases.csv``.

It returns ``Labels(table, days, source)``: distinct pairs (``user_id, item_id`` and
``label_day`` when known) and the set of label days (None when the input does not say).
``align_days(pred_days, labels)`` refuses labels of another day and restricts labels that
cover more days than the predictions.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from rectool import console
from rectool.artifacts import expand_paths, open_dataset, read_meta, require_columns
from rectool.badinput import quote, read_table
from rectool.errors import UserError
from rectool.ranking.predictions import days_of

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class Labels:
    table: pa.Table            # distinct user_id, item_id [, label_day]
    days: set[dt.date] | None  # label days, None when unknown
    source: str                # what was read, for the report


def _distinct(table: pa.Table) -> pa.Table:
    keys = [c for c in ("user_id", "item_id", "label_day") if c in table.column_names]
    return table.select(keys).group_by(keys).aggregate([])


def _read_text(path: Path) -> pa.Table:
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8-sig", errors="replace").strip()  # -sig: a byte order mark is no name
    delimiter = "\t" if "\t" in first else ","
    fields = [f.strip().lower() for f in first.split(delimiter)]
    header = not fields[0].lstrip("-").isdigit()
    if header and not {"user_id", "item_id"} <= set(fields):
        raise UserError(f"--label-path {path}: header {quote(first)} lacks user_id,item_id; write the true pairs as "
                        "user_id,item_id")
    names = fields if header else ["user_id", "item_id", *[f"c{i}" for i in range(2, len(fields))]]
    types = {"user_id": pa.int64(), "item_id": pa.int64()}
    if "label_day" in names:
        types["label_day"] = pa.date32()
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
                               parse_options=pacsv.ParseOptions(delimiter=delimiter),
                               convert_options=pacsv.ConvertOptions(column_types=types,
                                                                    include_columns=list(types)))
    except pa.ArrowInvalid as exc:
        raise UserError(f"--label-path {path}: {str(exc).splitlines()[0]}; the file needs integer "
                        "user_id,item_id columns") from exc
    return table


def _from_dataset_split(path: Path, meta: dict) -> Labels | None:
    """Label pairs of one split, from the dataset's labels/ folder."""
    name = meta.get("split_name")
    if name == "predict":
        raise UserError(f"--label-path {path}: the predict split has no labels; score against eval/ (or train/) or "
                        "the true pairs of the target day")
    labels_dir = path / (meta.get("labels") or "../labels")
    if not labels_dir.is_dir():
        return None
    table = read_table(open_dataset(labels_dir, "--label-path"), f"--label-path {labels_dir}")
    table = table.filter(pc.equal(table["split"], name))
    days = {dt.date.fromisoformat(d) for d in meta.get("label_days", [])}
    return Labels(_distinct(table), days, f"{labels_dir.resolve()} (split {name})")


def read_labels(spec: str | os.PathLike[str]) -> Labels:
    """The true pairs named by ``--label-path``."""
    text = os.fspath(spec)
    if text == "-":
        raise UserError("--label-path -: labels cannot come from stdin; give a file or directory")
    paths = expand_paths(text, "--label-path")
    if len(paths) == 1 and paths[0].is_file() and paths[0].suffix.lower() in TEXT_SUFFIXES:
        table = _read_text(paths[0])
        return Labels(_distinct(table), days_of(table, None) if "label_day" in table.column_names else None, text)
    path = paths[0]
    meta = read_meta(path) if len(paths) == 1 else None
    if meta is not None and meta.get("kind") == "samples":
        if meta.get("split_name"):
            found = _from_dataset_split(path, meta)
            if found is not None:
                return found
        elif (path / "labels").is_dir():  # a whole dataset
            return read_labels(path / "labels")
    elif meta is not None and meta.get("kind") not in (None, "labels"):
        raise UserError(f"--label-path {text}: this is a '{meta.get('kind')}' artifact; give a dataset split, "
                        "its labels/ folder or a table of true pairs")
    ds = open_dataset(text, "--label-path")
    require_columns(ds.schema, ("user_id", "item_id"), text, "labels need user_id, item_id (+ label or label_day)")
    cols = [c for c in ("user_id", "item_id", "label_day", "label") if c in ds.schema.names]
    table = read_table(ds, f"--label-path {text}", columns=cols)
    if "label" in cols:
        console.warn(f"{text}: labels taken from the rows with label = 1, i.e. only the pairs the candidates cover; "
                     "recall is relative to the candidates")
        table = table.filter(pc.equal(table["label"], 1)).drop_columns(["label"])
    for name in ("user_id", "item_id"):
        if not pa.types.is_integer(table.schema.field(name).type):
            raise UserError(f"--label-path {text}: column {name} is {table.schema.field(name).type}, expected int64")
    table = table.cast(pa.schema([pa.field(f.name, pa.int64() if f.name != "label_day" else pa.date32())
                                  for f in table.schema]))
    return Labels(_distinct(table), days_of(table, meta), text)


def align_days(pred_days: set[dt.date] | None, labels: Labels, pred_has_day: bool) -> tuple[Labels, list[str]]:
    """Check predictions and labels are about the same day(s); returns labels and the join keys."""
    keys = ["user_id", "item_id"]
    fmt = lambda days: ", ".join(sorted(str(d) for d in days))  # noqa: E731
    if pred_days and labels.days is not None:
        if not pred_days & labels.days:
            raise UserError(f"labels are for {fmt(labels.days)} but the predictions are for {fmt(pred_days)}; "
                            "give the labels of the predicted day")
        if not pred_days <= labels.days:
            raise UserError(f"the predictions cover {fmt(pred_days)} but the labels only {fmt(labels.days)}; "
                            "score the days that have labels")
        if labels.days - pred_days:
            console.warn(f"labels cover {fmt(labels.days)}; scoring only the predicted day(s) {fmt(pred_days)}")
            if "label_day" in labels.table.column_names:
                keep = pc.is_in(labels.table["label_day"], value_set=pa.array(sorted(pred_days), pa.date32()))
                labels = Labels(labels.table.filter(keep), set(pred_days), labels.source)
            elif len(pred_days) > 1:
                raise UserError("the labels have no label_day column; score one day at a time")
    elif not pred_days and labels.days is not None and len(labels.days) > 1:
        raise UserError(f"the predictions name no day but the labels cover {fmt(labels.days)}; add a label_day "
                        "column to the predictions or give the labels of one day (e.g. the eval split)")
    elif pred_days and len(pred_days) > 1 and "label_day" not in labels.table.column_names:
        raise UserError(f"the predictions span {fmt(pred_days)} but the labels name no day; score one day at a time "
                        "or give labels with a label_day column")
    if pred_has_day and "label_day" in labels.table.column_names and len(pred_days or ()) > 1:
        keys.append("label_day")
    if "label_day" in labels.table.column_names and "label_day" not in keys:
        labels = Labels(_distinct(labels.table.drop_columns(["label_day"])), labels.days, labels.source)
    return labels, keys
