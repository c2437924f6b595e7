"""The data of one ``rectool tune`` trial: a validation split carved from train (never the test split).

Inputs: either training lists (``--train``: classical methods only) or a next-item dataset
(``--dataset``, written by ``rectool dataset --task next-item``: classical methods and trained
models). Output: a ``Split``:

    train     the lists a classical method learns from
    history   each validation user's items (what a classical method ranks from)
    truth     the held-out items (users with any)
    exclude   the items never returned to a user (None: none left out)
    dataset   a next-item dataset a trained model learns from (``train/``) and embeds (``items/``)
    inputs    the validation users' inputs there (``retrieve --users``)

``sample_users`` narrows a split to a seeded sample of its users (the search's ``validation_users``).

A dataset brings its validation split with it when it has one (``valid/``: the user-split and
leave-one-out protocols with ``--n-valid``). A ``given`` dataset has none: it is rebuilt from its own
training events (the paths in its ``_meta.json``) with the held-out events carved from them
(``rectool.retrieval.sequences.ValidationCarve``: last / random / table), under the dataset's own
settings, so a trial learns exactly as the final model will. ``test_split`` is the same view of the
dataset's test users with the whole training data: what the winner is fitted on at the end (its
truth is never read).

    split = dataset_split(Path("out/seq"), Path("out/tune.work"), holdout="last")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rectool.artifacts import check_kind, read_meta
from rectool.errors import UserError
from rectool.retrieval.formats import UserLists, read_user_lists
from rectool.tune import Holdout
from rectool.tune.holdout import carve, lists_of, read_ordered

DATASET_KIND = "next-item-dataset"


@dataclass(frozen=True)
class Split:
    train: UserLists
    history: UserLists
    users: np.ndarray              # the users ranked: those with held-out items (final: every input user)
    truth: UserLists | None        # None: the final fit, whose truth tune never reads
    exclude: UserLists | None
    dataset: Path | None = None
    inputs: Path | None = None


def sample_users(split: Split, n: int, seed: int, work: Path) -> Split:
    """The split for a seeded sample of ``n`` of its users (the same users for every trial); a dataset's
    inputs are written to ``work`` for the sample."""
    if len(split.users) <= n:
        return split
    users = np.sort(np.random.default_rng(seed).choice(split.users, n, replace=False))
    truth = None if split.truth is None else \
        UserLists(users, split.truth.lists.take(split.truth.rows_of(users)))
    inputs = split.inputs
    if inputs is not None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from rectool.artifacts import open_dataset

        table = open_dataset(inputs, "--dataset").to_table()
        (work / "sampled_inputs").mkdir(parents=True, exist_ok=True)
        inputs = work / "sampled_inputs"
        pq.write_table(table.filter(pc.is_in(table["user_id"], value_set=pa.array(users))),
                       inputs / "part-00000.parquet")
    return Split(split.train, split.history, users, truth, split.exclude, split.dataset, inputs)


def _with_truth(held: UserLists) -> np.ndarray:
    return held.user_ids[held.lists.lengths() > 0]


def lists_split(train: str | os.PathLike[str], holdout: Holdout, *, share: float, min_items: int, seed: int,
                holdout_table: str | os.PathLike[str] | None, exclude: str) -> Split:
    """``--train`` lists carved in memory (``rectool.tune.holdout``): the kept part is train and history."""
    lists = read_ordered(train)
    table = read_user_lists(holdout_table, "--holdout-table") if holdout_table is not None else None
    kept, held = carve(lists, holdout, share=share, min_items=min_items, seed=seed, table=table)
    return Split(kept, kept, _with_truth(held), held, list_exclusions(exclude, kept, held))


def list_exclusions(exclude: str, kept: UserLists, held: UserLists) -> UserLists | None:
    """Validation exclusions: the kept history, none, or a table's items minus the held-out truth."""
    if exclude == "history":
        return kept
    if exclude == "none":
        return None
    table = read_user_lists(exclude, "--exclude")
    rows = held.rows_of(table.user_ids)
    lists = [np.setdiff1d(table.lists.row(i), held.lists.row(r)) if r >= 0 else table.lists.row(i)
             for i, r in enumerate(rows)]
    return lists_of(table.user_ids, lists)


def _dataset_meta(dataset: Path) -> dict[str, Any]:
    check_kind(dataset, DATASET_KIND, "--dataset")
    meta = read_meta(dataset)
    if meta is None or meta.get("kind") != DATASET_KIND:
        raise UserError(f"--dataset {dataset}: not a next-item dataset (no _meta.json of kind {DATASET_KIND}); "
                        "write one with `rectool dataset --task next-item`")
    return meta


def dataset_split(dataset: Path, work: Path, holdout: Holdout, *, share: float, min_items: int, seed: int,
                  holdout_table: str | os.PathLike[str] | None, exclude: str) -> Split:
    """The validation split of a next-item dataset: its own ``valid/``, or a carve of its training events."""
    meta = _dataset_meta(dataset)
    if (dataset / "valid" / "inputs").is_dir():
        return _view(dataset, "valid", exclude, truth=True)
    if meta.get("protocol") != "given":
        raise UserError(f"--dataset {dataset}: has no validation split (valid/); build it with --n-valid > 0")
    events = meta.get("events")
    if not events:
        raise UserError(f"--dataset {dataset}: its _meta.json does not name its training events (written by an "
                        "older rectool); rebuild it with `rectool dataset --task next-item`")
    from rectool.retrieval.sequences import ValidationCarve, build_next_item

    pairs = None
    if holdout == "table":
        if holdout_table is None:
            raise UserError("--holdout table needs --holdout-table (the validation pairs)")
        held = read_user_lists(holdout_table, "--holdout-table")
        pairs = pa.table({"user_id": np.repeat(held.user_ids, held.lists.lengths()), "item_id": held.lists.values})
    params = dict(meta.get("params") or {})
    built = work / "valid_dataset"
    build_next_item(events, built, protocol="given", min_behaviors=params.get("min_behaviors", 1),
                    max_history=params.get("max_history", 50), targets=params.get("targets", "all"),
                    min_history=params.get("min_history", 1), behaviors=params.get("behaviors") or None,
                    exclude_behaviors=params.get("exclude_behaviors") or None,
                    target_behaviors=params.get("target_behaviors") or None,
                    target_in_history=params.get("target_in_history", True), seed=params.get("seed", 2024),
                    n_valid=0, overwrite=True,
                    validation=ValidationCarve(holdout, share=share, min_items=min_items, seed=seed, pairs=pairs))
    return _view(built, "test", exclude, truth=True)


def test_split(dataset: Path, exclude: str) -> Split:
    """The dataset's test users with its whole training data (the final fit; the truth is not read)."""
    _dataset_meta(dataset)
    return _view(dataset, "test", exclude, truth=False)


def _view(dataset: Path, part: str, exclude: str, *, truth: bool) -> Split:
    inputs = dataset / part / "inputs"
    train = read_user_lists(dataset / "train_sequences", "--dataset")
    seen = read_user_lists(inputs, "--dataset", item_column="seen_item_ids")
    held = read_user_lists(dataset / part / "truth", "--dataset") if truth else None
    users = _with_truth(held) if held is not None else seen.user_ids
    # a user's history: the whole training list where the user trains (given, leave-one-out), else the
    # input items (user-split: validation and test users do not train)
    in_train = bool(np.isin(users, train.user_ids).all())
    history = train if in_train else read_user_lists(inputs, "--dataset", item_column="hist_item_ids")
    if exclude == "history":
        excluded: UserLists | None = seen
    elif exclude == "none":
        excluded = None
    else:
        raise UserError(f"--exclude {exclude}: with --dataset, give history (the inputs' seen_item_ids) or none")
    return Split(train, history, users, held, excluded, dataset, inputs)
