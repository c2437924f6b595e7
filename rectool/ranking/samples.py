"""Writing a ranking dataset: the train/eval split, negative sampling, label pairs, recall ceiling.

``SampleWriter(root, split, label_days, eval_fraction, seed)`` receives the joined rows of
each label day as a stream of Arrow batches (``write_day``) and of the predict day
(``write_predict``), routes them to ``root/train``, ``root/eval``, ``root/predict``,
records every label pair in ``root/labels`` and writes the ``_meta.json`` files on
``close``. Decisions are hashes of ids (``rectool.hashing.mix64``), so they do not
depend on row order, threads or batch sizes::

    user_in_eval(np.array([1, 2, 3]), seed=7, fraction=0.5)     # -> e.g. [False, True, False]
    keep_negative(users, items, date(2014, 12, 18), seed=7, rate=0.1)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rectool.artifacts import PartWriter, write_meta

Split = Literal["last-day", "user-hash"]        # how label days are divided into train and eval
SplitName = Literal["train", "eval", "predict"]  # the sample folders of a ranking dataset
ID_COLUMNS = ("user_id", "item_id", "category_id", "label_day", "label")
LABELS_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("label_day", pa.date32()),
                           ("split", pa.string()), ("covered", pa.int8())])
_TWO53 = float(1 << 53)


def _unit(h: np.ndarray) -> np.ndarray:
    """int64 hashes -> uniform floats in [0, 1)."""
    return (h.view(np.uint64) >> np.uint64(11)).astype(np.float64) / _TWO53


def user_in_eval(user_ids: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """The user-hash split: True for the users of the eval share (the same users every day and run)."""
    from rectool.hashing import mix64  # here: numba only when samples are written, not for `rectool --help`

    return _unit(mix64(mix64(np.array(user_ids, np.int64)) ^ np.int64(seed))) < fraction


def keep_negative(user_ids: np.ndarray, item_ids: np.ndarray, day: dt.date, seed: int, rate: float) -> np.ndarray:
    """A seeded coin per (user, item, day), True with probability ``rate``."""
    from rectool.hashing import mix64

    salt = np.int64(day.toordinal() * 1_000_003 + seed)
    # copies: Arrow's zero-copy arrays are read-only, a numba signature of its own (compiled on each run)
    h = mix64(mix64(mix64(np.array(user_ids, np.int64)) ^ np.array(item_ids, np.int64)) ^ salt)
    return _unit(h) < rate


class SampleWriter:
    """Routes joined rows to train/eval/predict and keeps the statistics of every day."""

    def __init__(self, root: Path, split: Split, label_days: list[dt.date], eval_fraction: float, seed: int) -> None:
        self.root, self.split, self.label_days = root, split, label_days
        self.eval_fraction, self.seed = eval_fraction, seed
        self.writers: dict[str, PartWriter] = {}
        self.days: dict[str, dict[str, Any]] = {}
        self.labels: list[pa.Table] = []
        self.feature_columns: list[str] = []
        self.sequence_columns: list[str] = []

    def is_eval(self, user_ids: np.ndarray, day: dt.date) -> np.ndarray:
        if self.split == "last-day":
            return np.full(len(user_ids), day == self.label_days[-1])
        return user_in_eval(user_ids, self.seed, self.eval_fraction)

    def _writer(self, name: SplitName, schema: pa.Schema) -> PartWriter:
        if name not in self.writers:
            (self.root / name).mkdir()
            self.writers[name] = PartWriter(self.root / name, schema)
            if not self.feature_columns:
                self.feature_columns = [f.name for f in schema if f.name not in ID_COLUMNS
                                        and not pa.types.is_list(f.type)]
                self.sequence_columns = [f.name for f in schema if pa.types.is_list(f.type)]
        return self.writers[name]

    def write_day(self, day: dt.date, batches: pa.RecordBatchReader, pairs: pa.Table, rate: float,
                  keep: Callable[[pa.Table], np.ndarray]) -> None:
        """Rows of one label day: eval rows all kept, train negatives kept where ``keep`` says so."""
        train, evals = self._writer("train", batches.schema), self._writer("eval", batches.schema)
        stats = {"candidates": 0, "positives": 0, "train_rows": 0, "eval_rows": 0, "neg_keep_rate": round(rate, 6)}
        positives: list[pa.Table] = []
        for batch in batches:
            t = pa.Table.from_batches([batch])
            users = t.column("user_id").to_numpy()
            label = t.column("label").to_numpy(zero_copy_only=False) == 1
            to_eval = self.is_eval(users, day)
            to_train = ~to_eval & (label | keep(t))
            evals.write(t.filter(pa.array(to_eval)))
            train.write(t.filter(pa.array(to_train)))
            positives.append(t.filter(pa.array(label)).select(["user_id", "item_id"]))
            stats["candidates"] += t.num_rows
            stats["positives"] += int(label.sum())
            stats["train_rows"] += int(to_train.sum())
            stats["eval_rows"] += int(to_eval.sum())
        hits = {(u, i) for t in positives
                for u, i in zip(t["user_id"].to_pylist(), t["item_id"].to_pylist(), strict=True)}
        is_covered = [(u, i) in hits
                      for u, i in zip(pairs["user_id"].to_pylist(), pairs["item_id"].to_pylist(), strict=True)]
        split = np.where(self.is_eval(pairs.column("user_id").to_numpy(), day), "eval", "train")
        self.labels.append(pa.table({
            "user_id": pairs["user_id"], "item_id": pairs["item_id"],
            "label_day": pa.array([day] * pairs.num_rows, pa.date32()), "split": pa.array(split, pa.string()),
            "covered": pa.array(is_covered, pa.bool_()).cast(pa.int8())}, schema=LABELS_SCHEMA))
        stats["label_pairs"] = pairs.num_rows
        stats["recall_ceiling"] = round(stats["positives"] / pairs.num_rows, 4) if pairs.num_rows else None
        self.days[day.isoformat()] = stats

    def write_predict(self, batches: pa.RecordBatchReader) -> None:
        """Rows of the unlabelled target day, all kept."""
        writer = self._writer("predict", batches.schema)
        for batch in batches:
            writer.write(batch)

    def _ceiling(self, labels: pa.Table) -> float | None:
        n = labels.num_rows
        return round(pc.sum(labels["covered"]).as_py() / n, 4) if n else None

    def close(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Close the writers and describe everything in ``_meta.json`` files; returns the summary."""
        for w in self.writers.values():
            w.close()
        labels = pa.concat_tables(self.labels) if self.labels else LABELS_SCHEMA.empty_table()
        (self.root / "labels").mkdir()
        with PartWriter(self.root / "labels", LABELS_SCHEMA) as lw:
            lw.write(labels)
        days = [d.isoformat() for d in self.label_days]
        meta = dict(meta)
        inputs = meta.pop("inputs", [])
        common = {**meta, "label_days": days, "split": self.split, "feature_columns": self.feature_columns,
                  "sequence_columns": self.sequence_columns}
        rows = {name: w.rows for name, w in self.writers.items()}
        split_days = {"train": [d for d in days if self.split == "user-hash" or d != days[-1]],
                      "eval": [d for d in days if self.split == "user-hash" or d == days[-1]]}
        for name, w in self.writers.items():
            part = labels.filter(pc.equal(labels["split"], name)) if name != "predict" else None
            write_meta(self.root / name, kind="samples", inputs=inputs, rows=w.rows, schema=w.schema,
                       **{**common, "split_name": name,
                          "label_days": split_days.get(name, [meta.get("predict_day")]),
                          "labels": "../labels" if name != "predict" else None,
                          "recall_ceiling": self._ceiling(part) if part is not None else None})
        write_meta(self.root / "labels", kind="labels", inputs=inputs, rows=labels.num_rows,
                   schema=LABELS_SCHEMA, label_days=days)
        ceiling = self._ceiling(labels)
        write_meta(self.root, kind="samples", inputs=inputs, rows=rows, schema=None,
                   **{**common, "days": self.days, "recall_ceiling": ceiling})
        out: dict[str, Any] = {"label_days": ", ".join(days), **{f"rows {k}": v for k, v in rows.items()}}
        for d, s in self.days.items():
            out[f"{d} candidates / positives / label pairs"] = (f"{s['candidates']:,} / {s['positives']:,} / "
                                                                f"{s['label_pairs']:,}")
            out[f"{d} recall ceiling"] = "n/a (no label pairs)" if s["recall_ceiling"] is None \
                else f"{s['recall_ceiling']:.1%}"
        out["recall ceiling (all label days)"] = "n/a" if ceiling is None else f"{ceiling:.1%}"
        out["features"] = len(self.feature_columns)
        return out

