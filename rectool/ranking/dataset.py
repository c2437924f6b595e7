"""``rectool dataset --task ranking``: candidates, labels and features joined, per day.

Inputs
    The events (``convert``), the feature tables (``features``; they must hold a cut-off
    for every label day and the predict day), optionally the item subset P (``--items``).

Candidates and labels
    For a day ``L``, the candidates are the (user, item) pairs with any action in the
    ``K = --candidate-days`` days before it (``L-K .. L-1``; item in P with ``--items``);
    ``label`` is 1 when the pair is bought on ``L``. Features are those of cut-off ``L``
    (events strictly before ``L``). The *recall ceiling* of a day is the share of its
    label pairs (bought on ``L``, item in P) that are candidates.

Outputs (``OUT/``)
    ``train/``, ``eval/`` (label days) and ``predict/`` (the unlabelled ``--predict-day``),
    flat parquet datasets with::

        user_id int64, item_id int64, category_id int64, label_day date32,
        label int8 (train/eval only), then the features of every group prefixed
        u_ i_ c_ ui_ uc_ as float32 (filled where a group has no row: counts 0,
        hours_since_* 9999, ui_cart_hour_1d -1), then u_last_items, u_last_categories
        list<int64> (most recent last; unless --no-sequences).

    ``labels/``: every label pair ``user_id, item_id, label_day, split`` (train/eval) and
    ``covered`` (int8, 1 when it is a candidate), so ``eval-f1`` can score against all the
    true pairs, not only the covered ones. ``_meta.json`` (kind ``samples``) reports
    per day the candidates, positives, label pairs, recall ceiling and the negative
    keep rate, and lists ``feature_columns`` for trainers; each split folder carries its
    own ``_meta.json`` (kind ``samples`` with ``split``; ``labels/`` kind ``labels``).

Split and sampling
    ``--split last-day``: the last label day is eval, the others train. ``--split
    user-hash``: a user goes to eval when ``mix64(mix64(user_id) ^ seed)`` falls in the
    ``--eval-fraction`` share. ``--neg-ratio R > 0`` keeps about R negatives per positive
    in train (a negative of day L is kept with probability min(1, R * positives / negatives)
    of L, decided by a seeded hash of the pair); eval and predict keep every candidate.

Example::

    rectool dataset --events data/events --features data/features --items data/items \\
        --label-days 2014-12-17,2014-12-18 --predict-day 2014-12-19 --output data/samples
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, get_args

import pyarrow as pa

from rectool import console
from rectool.artifacts import atomic_dir, check_kind
from rectool.duck import Events, bound, day_param, duck_session, open_events
from rectool.errors import UserError
from rectool.ranking.common import days_before, read_item_subset
from rectool.ranking.features import GROUPS, PREFIX, fill_value
from rectool.ranking.samples import SampleWriter, Split, keep_negative

# what `rectool dataset` builds: ranking samples (here) or next-item sequences (rectool.retrieval.sequences)
Task = Literal["ranking", "next-item"]
SEQUENCE_COLUMNS = ("last_items", "last_categories")
BATCH_ROWS = 65_536
CHUNK_ROWS = 400_000


def _feature_sources(features: Path, meta: dict, day: dt.date,
                     sequences: bool) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(LEFT JOIN clauses, SELECT expressions, their file-list parameters) of the feature tables of
    cut-off ``day``; each table is first cut down to the keys of the candidates, so the hash tables
    stay small."""
    joins, cols, files_of = [], [], {}
    on = {"user": "u.user_id = c.user_id", "item": "i.item_id = c.item_id", "category": "g.category_id = c.category_id",
          "user_item": "ui.user_id = c.user_id AND ui.item_id = c.item_id",
          "user_category": "uc.user_id = c.user_id AND uc.category_id = c.category_id"}
    alias = {"user": "u", "item": "i", "category": "g", "user_item": "ui", "user_category": "uc"}
    for group, keys in GROUPS.items():
        folder = features / group / f"cutoff={day.isoformat()}"
        files = sorted(str(p) for p in folder.glob("*.parquet"))
        if not files:
            raise UserError(f"--features {features}: no {group} table for cut-off {day}; rebuild the features "
                            f"with --cutoffs including {day}")
        key = keys[0]
        files_of[f"files_{group}"] = files
        joins.append(f"LEFT JOIN (SELECT * FROM read_parquet($files_{group}) WHERE {key} IN "
                     f"(SELECT {key} FROM cand)) AS {alias[group]} ON {on[group]}")
        for name, type_ in meta["groups"][group].items():
            if name in keys or name == "category_id":
                continue
            out = f"{PREFIX[group]}{name}"
            if name in SEQUENCE_COLUMNS:
                if sequences:
                    cols.append(f"coalesce({alias[group]}.{name}, []) AS {out}")
            elif not type_.startswith("list"):
                cols.append(f"coalesce({alias[group]}.{name}, {fill_value(name)})::FLOAT AS {out}")
    return joins, cols, files_of


class _DaySql:
    """The queries of one label (or predict) day, over the view ``source`` of the events files; days
    are bound parameters, so each query runs with ``bound(sql, **q.params)``."""

    def __init__(self, ev: Events, day: dt.date, k: int, with_items: bool, source: str = "ev_files") -> None:
        self.ev, self.day, self.params = ev, day, {}
        start, end = days_before(day, k, "--candidate-days"), day + dt.timedelta(days=1)
        s, d, e = day_param(start), day_param(day), day_param(end)
        self.in_p = " AND item_id IN (SELECT item_id FROM p_items)" if with_items else ""
        cand_prune = f" AND dt >= {s} AND dt < {d}" if ev.hive else ""
        day_prune = f" AND dt = {d}" if ev.hive else ""
        self.cand = (f"SELECT user_id, item_id, any_value(category_id) AS category_id FROM {source} "
                     f"WHERE time >= {s}::TIMESTAMP AND time < {d}::TIMESTAMP{cand_prune}{self.in_p} "
                     "GROUP BY user_id, item_id")
        self.labels = (f"SELECT DISTINCT user_id, item_id FROM {source} WHERE behavior = 4 "
                       f"AND time >= {d}::TIMESTAMP AND time < {e}::TIMESTAMP{day_prune}{self.in_p}")

    def counts(self) -> str:
        """Candidates and positives (for the negative keep rate)."""
        return (f"WITH cand AS ({self.cand}), lab AS ({self.labels}) SELECT count(*), "
                "count(lab.user_id) FROM cand LEFT JOIN lab USING (user_id, item_id)")

    def rows(self, features: Path, meta: dict, labelled: bool, sequences: bool, chunk: int = 0,
             chunks: int = 1) -> str:
        """The joined rows of the users in hash bucket ``chunk`` of ``chunks``."""
        joins, cols, files_of = _feature_sources(features, meta, self.day, sequences)
        self.params.update(files_of)
        label = ", (lab.user_id IS NOT NULL)::TINYINT AS label" if labelled else ""
        lab_join = "LEFT JOIN lab ON lab.user_id = c.user_id AND lab.item_id = c.item_id" if labelled else ""
        cand = self.cand if chunks == 1 else f"SELECT * FROM ({self.cand}) WHERE hash(user_id) % {chunks} = {chunk}"
        return f"""WITH cand AS ({cand}), lab AS ({self.labels})
            SELECT c.user_id, c.item_id, c.category_id, {day_param(self.day)} AS label_day{label}, {', '.join(cols)}
            FROM cand AS c {lab_join} {' '.join(joins)}"""


def _stream(con: object, q: _DaySql, features: Path, meta: dict, labelled: bool, sequences: bool,
            n_cand: int) -> pa.RecordBatchReader:
    """The joined rows of a day as one reader, computed in user-hash chunks of about ``CHUNK_ROWS``
    candidates (the joins of a chunk fit the memory limit however many candidates there are)."""
    chunks = max(1, -(-n_cand // CHUNK_ROWS))

    def reader(chunk: int) -> pa.RecordBatchReader:
        sql = q.rows(features, meta, labelled, sequences, chunk, chunks)
        return con.sql(sql, params=bound(sql, **q.params)).to_arrow_reader(BATCH_ROWS)  # type: ignore[attr-defined]

    first = reader(0)

    def batches() -> Iterator[pa.RecordBatch]:
        yield from first
        for b in range(1, chunks):
            yield from reader(b)

    return pa.RecordBatchReader.from_batches(first.schema, batches())


def _check_inputs(ev_first: dt.date, ev_last: dt.date, features: Path, meta: dict, label_days: Sequence[dt.date],
                  predict_day: dt.date | None, k: int, items: str | None, split: Split) -> None:
    for d in label_days:
        if d > ev_last:
            raise UserError(f"--label-days {d}: the events end {ev_last}, so this day has no labels; "
                            "use --predict-day for the target day")
        if d <= ev_first:
            raise UserError(f"--label-days {d}: no events before it (the log starts {ev_first}); choose a later day")
    if predict_day is not None and predict_day in label_days:
        raise UserError(f"--predict-day {predict_day} is also a label day; drop it from --label-days")
    cutoffs = set(meta.get("cutoffs", []))
    needed = sorted({d.isoformat() for d in label_days} | ({predict_day.isoformat()} if predict_day else set()))
    missing = [d for d in needed if d not in cutoffs]
    if missing:
        raise UserError(f"--features {features}: has no cut-off {', '.join(missing)} (it has "
                        f"{', '.join(sorted(cutoffs)) or 'none'}); rerun `rectool features --cutoffs "
                        f"{','.join(needed)}`")
    if k > int(meta.get("pair_days", 0)):
        raise UserError(f"--candidate-days {k} exceeds the features' --pair-days {meta.get('pair_days')}: user x item "
                        f"features would be missing; lower --candidate-days or rebuild features with --pair-days {k}")
    if meta.get("items") and not items:
        raise UserError(f"--features {features} were built for the item subset {meta['items']}; pass --items too")
    if split == "last-day" and len(label_days) < 2:
        raise UserError("--split last-day needs at least two --label-days (the last one is eval); add a day or "
                        "use --split user-hash")


def build_dataset(events: str | os.PathLike[str], features: str | os.PathLike[str], output: str | os.PathLike[str],
                  label_days: Sequence[dt.date] | None = None, predict_day: dt.date | None | Literal["default"]
                  = "default", items: str | os.PathLike[str] | None = None, candidate_days: int = 3,
                  neg_ratio: float = 0.0, split: Split = "last-day", eval_fraction: float = 0.2, seed: int = 2014,
                  sequences: bool = True, threads: int | None = None, memory_limit: str = "2GB",
                  temp_dir: str | os.PathLike[str] | None = None, overwrite: bool = False) -> dict:
    """Write train/eval/predict samples and the label pairs; returns the summary figures."""
    if split not in get_args(Split):
        raise UserError(f"--split {split}: choose last-day or user-hash")
    if not 0.0 < eval_fraction < 1.0:
        raise UserError(f"--eval-fraction {eval_fraction}: give a share between 0 and 1")
    if candidate_days < 1:
        raise UserError(f"--candidate-days {candidate_days}: give at least 1")
    if neg_ratio < 0:
        raise UserError(f"--neg-ratio {neg_ratio}: give 0 (keep every negative) or a positive ratio")
    ev = open_events(events)
    feat = Path(os.fspath(features))
    meta = check_kind(feat, "features", "--features")
    if meta is None or not feat.is_dir():
        raise UserError(f"--features {features}: not a directory written by `rectool features`")
    days = sorted(set(label_days)) if label_days else [ev.last_day - dt.timedelta(days=1), ev.last_day]
    target = ev.last_day + dt.timedelta(days=1) if predict_day == "default" else predict_day
    _check_inputs(ev.first_day, ev.last_day, feat, meta, days, target, candidate_days,
                  os.fspath(items) if items else None, split)
    p_items = read_item_subset(items, "--items") if items is not None else None
    with_p = p_items is not None
    feature_files = sorted(str(p) for p in feat.rglob("*.parquet"))
    with console.Stopwatch() as sw, atomic_dir(output, overwrite) as tmp, \
            duck_session(threads, memory_limit, temp_dir, inputs=[ev.inputs, (f"--features {features}", feature_files)],
                         beside=output) as con:
        source = ev.view(con)
        if p_items is not None:
            con.register("p_items_arrow", pa.table({"item_id": p_items}))
            con.execute("CREATE TEMP TABLE p_items AS SELECT DISTINCT item_id FROM p_items_arrow").fetchall()
        writer = SampleWriter(tmp, split, days, eval_fraction, seed)
        with console.progress("dataset", total=len(days) + (1 if target else 0)) as bar:
            for day in days:
                bar.update(info=str(day))
                q = _DaySql(ev, day, candidate_days, with_p, source)
                n_cand, n_pos = con.execute(q.counts(), bound(q.counts())).fetchall()[0]
                rate = 1.0 if neg_ratio == 0 or n_cand == n_pos else min(1.0, neg_ratio * n_pos / (n_cand - n_pos))
                pairs = con.sql(q.labels, params=bound(q.labels)).to_arrow_table()
                writer.write_day(day, _stream(con, q, feat, meta, True, sequences, n_cand), pairs, rate,
                                 lambda t, d=day, r=rate: keep_negative(t.column("user_id").to_numpy(),
                                                                        t.column("item_id").to_numpy(), d, seed, r))
                bar.advance(1)
            if target is not None:
                bar.update(info=f"predict {target}")
                q = _DaySql(ev, target, candidate_days, with_p, source)
                n_cand = con.execute(q.counts(), bound(q.counts())).fetchall()[0][0]
                writer.write_predict(_stream(con, q, feat, meta, False, sequences, n_cand))
                bar.advance(1)
        inputs = [os.fspath(events), os.fspath(features)] + ([os.fspath(items)] if items else [])
        summary = writer.close(meta={
            "task": "ranking", "inputs": inputs,
            "candidate_days": candidate_days, "neg_ratio": neg_ratio, "seed": seed,
            "eval_fraction": eval_fraction if split == "user-hash" else None, "features": os.fspath(features),
            "items": os.fspath(items) if items else None, "predict_day": target.isoformat() if target else None})
    return {"output": os.fspath(output), **summary, "seconds": round(sw.seconds, 2)}
