"""Next-item datasets for retrieval: behaviour sequences -> training samples, test inputs, truth.

Protocols (``protocol=``), as in the literature:

``user-split``     TDM/JTM: users with >= ``min_behaviors`` behaviours; ``n_test`` and
                   ``n_valid`` users drawn by a seeded hash, disjoint from the training
                   users. A held-out user's first half of behaviours (by time) is the
                   input, the distinct items of the second half the truth.
``leave-one-out``  every user's last item is the test truth (the one before it the
                   validation truth, with ``n_valid`` > 0); the rest trains.
``given``          train events and test events come separately (Amazon/MovieLens split
                   files, Taobao buy ∪ cart vs held-out buys): a test user's input is their
                   train history, the truth their test items.

Inputs: events datasets from ``rectool convert`` (ordered by ``time``, then ``seq``).
Outputs (one directory)::

    train/   user_id, hist_item_ids list<int64>, hist_category_ids list<int64>,
             item_id int64 (the target), category_id int64 — one row per target position
             (``targets="all"``: every position after the first; ``"last"``: the last only;
             ``"set"``: every distinct (item, behaviour), its history up to ``max_history`` of the
             user's *other* events, for logs whose lines are item sets rather than sequences,
             e.g. the Amazon/BARS split files or Taobao's buy ∪ cart: each user's events in a
             seeded shuffled order, the history of the event at position p the events that
             follow it, cyclically; a bought item's history may hold its own cart).
             ``target_behaviors`` keeps only targets of those behaviours (Taobao: buys), the
             histories still hold every behaviour; ``target_in_history=False`` removes the
             target's own item from its history (rows left with none are dropped), so the
             towers learn only transitions to *other* items and repeats are left to
             ``retrieve --repeat-bonus`` (Taobao: 20% of the buy rows hold their own cart)
    train_sequences/  user_id, item_ids list<int64>: each training user's whole training
             sequence in order (what the baselines learn from)
    test/inputs/  user_id, hist_item_ids, hist_category_ids (last ``max_history``, most recent
                  last), seen_item_ids list<int64> (every input item of the excluded
                  behaviours: what retrieval may leave out)
    test/truth/   user_id, item_ids list<int64>
    valid/inputs/, valid/truth/   the same for validation users (when any)
    items/   item_id, category_id, train_count — the catalogue seen in training
    _meta.json   protocol, parameters, counts

Everything runs in DuckDB (out-of-core with ``memory_limit`` and ``temp_dir``): the session and
the events reader are the ranking pipeline's (``rectool.duck``), so ``--threads``,
``--memory-limit`` and ``--temp-dir`` mean the same with both tasks.

    rectool dataset --task next-item --events data/ub_events --protocol user-split --output data/ub_seq
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rectool import console
from rectool.artifacts import atomic_dir, write_meta
from rectool.duck import Events, bound, duck_session, open_events
from rectool.errors import UserError
from rectool.retrieval.choices import Holdout

Protocol = Literal["user-split", "leave-one-out", "given"]
Targets = Literal["all", "last", "set"]
ID_COLUMNS = ("user_id", "item_id")  # what next-item needs of an events dataset; the rest is optional


@dataclass(frozen=True)
class ValidationCarve:
    """A validation split carved from the *training* events, in place of ``--test-events``
    (``rectool tune``): per user, ``last`` holds out the last ``share`` of the time-ordered events,
    ``random`` a seeded random ``share`` (item sets), both only for users with >= ``min_items``
    events; ``table`` holds out the events whose (user_id, item_id) pair is in ``pairs`` (and whose
    behaviour is a target behaviour, when the dataset has them: Taobao's held-out buy)."""

    rule: Holdout
    share: float = 0.2
    min_items: int = 5
    seed: int = 7
    pairs: pa.Table | None = None  # user_id, item_id: the table rule's held-out pairs


def _events_view(con, name: str, events: Events) -> None:  # noqa: ANN001
    """A view ``name`` over events datasets with the ordering columns ``t`` and ``s`` (the paths go to
    DuckDB as a list, never as SQL text)."""
    cols = events.columns
    events.view(con, f"{name}_files")
    t = "epoch_ms(time)" if "time" in cols else "0"
    s = "seq" if "seq" in cols else "0"
    cat = "category_id" if "category_id" in cols else "NULL::BIGINT"
    beh = "behavior" if "behavior" in cols else "1::TINYINT"
    con.execute(f"""CREATE OR REPLACE TEMP VIEW {name} AS
        SELECT user_id, item_id, {cat} AS category_id, {beh} AS behavior, {t} AS t, {s} AS s FROM {name}_files""")


def _sequences(con, source: str, target: str, behaviors: Sequence[int] | None) -> None:  # noqa: ANN001
    where = "WHERE list_contains($behaviors, behavior)" if behaviors else ""
    sql = f"""CREATE OR REPLACE TEMP TABLE {target} AS
        SELECT user_id,
               list(item_id ORDER BY t, s, behavior, item_id) AS items,
               list(coalesce(category_id, 0) ORDER BY t, s, behavior, item_id) AS cats,
               list(behavior ORDER BY t, s, behavior, item_id) AS behs
        FROM {source} {where} GROUP BY user_id"""
    con.execute(sql, bound(sql, behaviors=list(behaviors or [])))


def _pick_users(con, min_behaviors: int, n_test: int, n_valid: int, seed: int) -> pa.Table:  # noqa: ANN001
    """Role of each eligible user: 0 train, 1 valid, 2 test (a seeded hash order, deterministic)."""
    from rectool.hashing import mix64  # here: numba only when the dataset is built, not for `rectool --help`

    users = con.execute("SELECT user_id FROM seqs WHERE len(items) >= $min_behaviors",
                        {"min_behaviors": min_behaviors}).fetchnumpy()["user_id"]
    users = np.asarray(users, dtype=np.int64)
    if users.size <= n_test + n_valid:
        raise UserError(f"only {users.size} users have >= {min_behaviors} behaviours, not more than "
                        f"--n-test {n_test} + --n-valid {n_valid}; lower them or --min-behaviors")
    order = np.argsort(mix64(users ^ np.int64(seed)), kind="stable")
    role = np.zeros(users.size, dtype=np.int8)
    role[order[:n_test]] = 2
    role[order[n_test:n_test + n_valid]] = 1
    return pa.table({"user_id": users, "role": role})


def _copy(con, query: str, path: Path, params: dict[str, Any]) -> int:  # noqa: ANN001
    """Write ``query`` (its ``$name`` parameters taken from ``params``) to ``path/part-00000.parquet``."""
    path.mkdir(parents=True, exist_ok=True)
    target = path / "part-00000.parquet"
    sql = f"COPY ({query}) TO $target (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 131072)"
    con.execute(sql, bound(sql, **params, target=str(target)))
    return pq.ParquetFile(target).metadata.num_rows


def _behavior_filter(column: str, target_behaviors: Sequence[int] | None) -> str:
    return f"AND list_contains($target_behaviors, {column})" if target_behaviors else ""


# the queries below take the user's values as parameters: $max_history, $min_history, $seed,
# $target_behaviors, $exclude_behaviors (see ``_copy``)


def _train_query(source: str, targets: Targets, target_behaviors: Sequence[int] | None = None) -> str:
    first = "len(items)" if targets == "last" else "$min_history + 1"
    return f"""
        SELECT user_id,
               list_slice(items, greatest(1, pos - $max_history), pos - 1) AS hist_item_ids,
               list_slice(cats, greatest(1, pos - $max_history), pos - 1) AS hist_category_ids,
               items[pos] AS item_id, cats[pos] AS category_id
        FROM (SELECT user_id, items, cats, behs, unnest(range({first}, len(items) + 1)) AS pos
              FROM {source} WHERE len(items) > $min_history)
        WHERE true {_behavior_filter("behs[pos]", target_behaviors)}"""


def _set_train_query(source: str, target_behaviors: Sequence[int] | None = None) -> str:
    """Every distinct (item, behaviour) of a user's set against up to ``max_history`` of the user's
    other events (see the module docstring): an item listed twice with one behaviour is one event;
    an item carted and bought is two, so a bought item's history can hold its own cart."""
    return f"""
        WITH shuffled AS (
            SELECT user_id, list(item_id ORDER BY h) AS items, list(category_id ORDER BY h) AS cats,
                   list(behavior ORDER BY h) AS behs
            FROM (SELECT user_id, item_id, behavior, any_value(category_id) AS category_id,
                         hash(user_id, item_id, behavior, $seed::BIGINT) AS h
                  FROM (SELECT user_id, unnest(items) AS item_id, unnest(cats) AS category_id,
                               unnest(behs) AS behavior FROM {source})
                  GROUP BY user_id, item_id, behavior)
            GROUP BY user_id HAVING count(*) > 1)
        SELECT user_id,
               list_slice(items || items, pos + 1, pos + least($max_history, len(items) - 1)) AS hist_item_ids,
               list_slice(cats || cats, pos + 1, pos + least($max_history, len(items) - 1)) AS hist_category_ids,
               items[pos] AS item_id, cats[pos] AS category_id
        FROM (SELECT user_id, items, cats, behs, unnest(range(1, len(items) + 1)) AS pos FROM shuffled)
        WHERE true {_behavior_filter("behs[pos]", target_behaviors)}"""


def _without_target(train: str) -> str:
    """The training rows of ``train`` with the target's item taken out of its history window."""
    return f"""
        SELECT user_id, list_transform(kept, lambda x: x[1]) AS hist_item_ids,
               list_transform(kept, lambda x: x[2]) AS hist_category_ids, item_id, category_id
        FROM (SELECT *, list_filter(list_zip(hist_item_ids, hist_category_ids), lambda x: x[1] != item_id) AS kept
              FROM ({train}))
        WHERE len(kept) > 0"""


def _inputs_query(source: str, exclude: Sequence[int] | None) -> str:
    seen = "list_distinct(items)" if not exclude else (
        "list_distinct(list_transform(list_filter(list_zip(items, behs), "
        "lambda x: list_contains($exclude_behaviors, x[2])), lambda x: x[1]))")
    return f"""
        SELECT user_id,
               list_slice(items, greatest(1, len(items) - $max_history + 1), len(items)) AS hist_item_ids,
               list_slice(cats, greatest(1, len(items) - $max_history + 1), len(items)) AS hist_category_ids,
               {seen} AS seen_item_ids
        FROM {source}"""


def _carve(con, source: str, carve: ValidationCarve, target_behaviors: Sequence[int] | None) -> None:  # noqa: ANN001
    """Views ``{source}_kept`` (the events a validation trial learns from) and ``test_ev`` (the held-out
    ones) over ``source``; the rule's values go to DuckDB as parameters."""
    if not 0 < carve.share < 1:
        raise UserError(f"--holdout-share {carve.share}: give a share between 0 and 1")
    params: dict[str, Any] = {"share": carve.share, "min_items": carve.min_items, "seed": carve.seed,
                              "target_behaviors": list(target_behaviors or [])}
    if carve.rule == "table":
        assert carve.pairs is not None
        con.register("holdout_pairs", carve.pairs.select(["user_id", "item_id"]))
        rows = source
        held = ("EXISTS (SELECT 1 FROM holdout_pairs p WHERE p.user_id = e.user_id AND p.item_id = e.item_id)"
                + (" AND list_contains($target_behaviors, e.behavior)" if target_behaviors else ""))
    else:  # last: the final floor(n * share) events in time order; random: the first ones in a seeded hash order
        order = "t, s, behavior, item_id" if carve.rule == "last" else "hash(item_id, t, s, $seed), item_id"
        rows = f"""(SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY {order}) AS pos,
                           count(*) OVER (PARTITION BY user_id) AS n FROM {source})"""
        held = f"n >= $min_items AND {'n - pos' if carve.rule == 'last' else 'pos - 1'} < floor(n * $share)"
    sql = f"""CREATE OR REPLACE TEMP TABLE carved AS
        SELECT e.user_id, e.item_id, e.category_id, e.behavior, e.t, e.s, ({held}) AS held FROM {rows} e"""
    con.execute(sql, bound(sql, **params))
    con.execute(f"""CREATE OR REPLACE TEMP VIEW {source}_kept AS
        SELECT user_id, item_id, category_id, behavior, t, s FROM carved WHERE NOT held""")
    con.execute("CREATE OR REPLACE TEMP VIEW test_ev AS SELECT user_id, item_id FROM carved WHERE held")
    if not con.execute("SELECT count(*) FROM carved WHERE held").fetchone()[0]:
        raise UserError(f"--holdout {carve.rule}: nothing held out (users need >= {carve.min_items} events, or the "
                        "table's pairs must be in the training events); lower --holdout-min-items")


def build_next_item(events: str | Sequence[str], output: str | os.PathLike[str], protocol: Protocol = "user-split",
                    test_events: str | Sequence[str] | None = None, min_behaviors: int = 10, n_test: int = 10_000,
                    n_valid: int = 10_000, max_history: int = 50, targets: Targets = "all",
                    min_history: int = 1, behaviors: Sequence[int] | None = None,
                    exclude_behaviors: Sequence[int] | None = None, target_behaviors: Sequence[int] | None = None,
                    target_in_history: bool = True, seed: int = 2024, threads: int | None = None,
                    memory_limit: str = "2GB", temp_dir: str | os.PathLike[str] | None = None,
                    overwrite: bool = False, validation: ValidationCarve | None = None) -> dict[str, Any]:
    """Write a next-item dataset; returns its counts. With ``validation`` (protocol given, no test
    events) the held-out part of the training events takes the test split's place: the dataset a
    validation trial learns from and is scored on."""
    if protocol not in get_args(Protocol):
        raise UserError(f"--protocol {protocol}: choose user-split, leave-one-out or given")
    if validation is not None and (protocol != "given" or test_events is not None):
        raise UserError("a validation carve replaces the test events of --protocol given")
    if (protocol == "given") != (test_events is not None or validation is not None):
        raise UserError("--test-events is required with --protocol given, and only used with it")
    if targets not in get_args(Targets):
        raise UserError(f"--targets {targets}: choose all, last or set")
    if targets == "last" and target_behaviors:
        raise UserError("--target-behaviors works with --targets all or set; with last, filter the events with "
                        "--behaviors instead")
    if max_history < 1 or min_history < 1:
        raise UserError("--max-history and --min-history must be at least 1")
    events = [events] if isinstance(events, (str, os.PathLike)) else list(events)
    given = [test_events] if isinstance(test_events, (str, os.PathLike)) else list(test_events or [])
    train_files = open_events(events, "--events", ID_COLUMNS)
    test_files = open_events(given, "--test-events", ID_COLUMNS) if given else None
    # the user's values reach DuckDB as parameters of the statements (``_copy``), never as SQL text
    params = {"max_history": max_history, "min_history": min_history, "seed": seed,
              "min_len": max(min_behaviors, 3 if n_valid > 0 else 2),
              "target_behaviors": list(target_behaviors or []), "exclude_behaviors": list(exclude_behaviors or [])}
    if validation is not None and validation.rule == "table" and validation.pairs is None:
        raise UserError("--holdout table needs --holdout-table (the validation pairs)")
    inputs = [f.inputs for f in (train_files, test_files) if f is not None]
    counts: dict[str, Any] = {}
    with duck_session(threads, memory_limit, temp_dir, inputs=inputs, beside=output) as con, \
            atomic_dir(output, overwrite) as tmp, console.progress("dataset next-item", total=4) as bar:
        _events_view(con, "ev", train_files)
        if validation is not None:  # the held-out events become "test_ev", the rest trains
            _carve(con, "ev", validation, target_behaviors)
        _sequences(con, "ev_kept" if validation is not None else "ev", "seqs", behaviors)
        bar.advance(1)
        if protocol == "user-split":
            con.register("roles", _pick_users(con, min_behaviors, n_test, n_valid, seed))
            con.execute("CREATE TEMP TABLE train_seqs AS SELECT s.* FROM seqs s JOIN roles r USING (user_id) "
                        "WHERE r.role = 0")
            for role, name in ((2, "test"), (1, "valid")):
                con.execute("""CREATE OR REPLACE TEMP TABLE held AS
                    SELECT user_id, list_slice(items, 1, len(items) // 2) AS items,
                           list_slice(cats, 1, len(items) // 2) AS cats, list_slice(behs, 1, len(items) // 2) AS behs,
                           list_distinct(list_slice(items, len(items) // 2 + 1, len(items))) AS truth
                    FROM seqs JOIN roles USING (user_id) WHERE role = $role""", {"role": role})
                if con.execute("SELECT count(*) FROM held").fetchone()[0]:
                    counts[f"{name}_users"] = _copy(con, _inputs_query("held", exclude_behaviors),
                                                    tmp / name / "inputs", params)
                    _copy(con, "SELECT user_id, truth AS item_ids FROM held", tmp / name / "truth", params)
        elif protocol == "leave-one-out":
            cut = 2 if n_valid > 0 else 1  # the held-out items at the end of each sequence
            con.execute(f"""CREATE TEMP TABLE train_seqs AS
                SELECT user_id, list_slice(items, 1, len(items) - {cut}) AS items,
                       list_slice(cats, 1, len(items) - {cut}) AS cats, list_slice(behs, 1, len(items) - {cut}) AS behs
                FROM seqs WHERE len(items) >= $min_len""", {"min_len": params["min_len"]})
            for back, name in ((0, "test"), (1, "valid")) if n_valid > 0 else ((0, "test"),):
                con.execute(f"""CREATE OR REPLACE TEMP TABLE held AS
                    SELECT user_id, list_slice(items, 1, len(items) - {back + 1}) AS items,
                           list_slice(cats, 1, len(items) - {back + 1}) AS cats,
                           list_slice(behs, 1, len(items) - {back + 1}) AS behs,
                           [items[len(items) - {back}]] AS truth
                    FROM seqs WHERE len(items) >= $min_len""", {"min_len": params["min_len"]})
                counts[f"{name}_users"] = _copy(con, _inputs_query("held", exclude_behaviors),
                                                tmp / name / "inputs", params)
                _copy(con, "SELECT user_id, truth AS item_ids FROM held", tmp / name / "truth", params)
        else:
            if test_files is not None:
                _events_view(con, "test_ev", test_files)
            con.execute("CREATE TEMP TABLE train_seqs AS SELECT * FROM seqs")
            con.execute("""CREATE TEMP TABLE held AS
                SELECT s.user_id, s.items, s.cats, s.behs, t.truth
                FROM seqs s JOIN (SELECT user_id, list_distinct(list(item_id)) AS truth FROM test_ev GROUP BY user_id)
                     t USING (user_id)""")
            counts["test_users"] = _copy(con, _inputs_query("held", exclude_behaviors), tmp / "test" / "inputs",
                                         params)
            _copy(con, "SELECT user_id, truth AS item_ids FROM held", tmp / "test" / "truth", params)
            orphans = con.execute("SELECT count(DISTINCT user_id) FROM test_ev WHERE user_id NOT IN "
                                  "(SELECT user_id FROM seqs)").fetchone()[0]
            counts["test_users_without_history"] = int(orphans)
        bar.advance(1)
        train = _set_train_query("train_seqs", target_behaviors) if targets == "set" else \
            _train_query("train_seqs", targets, target_behaviors)
        if not target_in_history:
            train = _without_target(train)
        counts["train_samples"] = _copy(con, train, tmp / "train", params)
        counts["train_users"] = _copy(con, "SELECT user_id, items AS item_ids FROM train_seqs",
                                      tmp / "train_sequences", params)
        bar.advance(1)
        counts["items"] = _copy(con, """SELECT item_id, any_value(category_id) AS category_id, count(*) AS train_count
                                        FROM (SELECT unnest(items) AS item_id, unnest(cats) AS category_id
                                              FROM train_seqs) GROUP BY item_id ORDER BY item_id""", tmp / "items",
                                params)
        bar.advance(1)
        write_meta(tmp, kind="next-item-dataset", inputs=[*events, *given],
                   rows=counts, protocol=protocol, events=[os.path.abspath(e) for e in events],
                   test_events=[os.path.abspath(e) for e in given],
                   validation=None if validation is None else {
                       "rule": validation.rule, "share": validation.share, "min_items": validation.min_items,
                       "seed": validation.seed},
                   params={"min_behaviors": min_behaviors, "n_test": n_test, "n_valid": n_valid,
                           "max_history": max_history, "targets": targets, "min_history": min_history,
                           "behaviors": list(behaviors or []), "exclude_behaviors": list(exclude_behaviors or []),
                           "target_behaviors": list(target_behaviors or []),
                           "target_in_history": target_in_history, "seed": seed})
    return {"output": os.fspath(output), "protocol": protocol, **counts}
