"""The validation split of ``rectool tune``, carved from the training lists (the test split is never read).

Inputs: the training lists (``user_id, item_ids``, each list in the order the data has: time order
for logs, any order for item sets) and a rule. Outputs: (kept lists, held-out lists); the kept ones
are what a trial learns from and the user's history, the held-out ones its truth (both sorted sets,
as ``read_user_lists`` gives every other list).

    last    per user with >= ``min_items`` items, the last ``share`` of the list (time-ordered data:
            the split of ``split_temporal_80_20``)
    random  the same count, a seeded random choice (item sets, e.g. amazon-cds' BARS files)
    table   the (user, item) pairs of a given table (e.g. taobao's ``valid.txt`` buy), taken out
            of the training lists

Example: ``carve(train, "last", share=0.2)`` on ``[1, 2, 3, 4, 5]`` keeps ``[1, 2, 3, 4]`` and
holds out ``[5]``.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow.compute as pc

from rectool.artifacts import open_dataset, require_columns
from rectool.badinput import read_table
from rectool.errors import UserError
from rectool.retrieval.formats import ITEM_ID, ITEM_IDS, USER_ID, Ragged, UserLists, int_column
from rectool.tune import Holdout


def read_ordered(path: str | os.PathLike[str], flag: str = "--train") -> UserLists:
    """Training lists in the data's order: list form (``user_id, item_ids``) as written, long form
    (``user_id, item_id`` [, ``time``]) by time when there is a time column, else in file order; an item
    repeated in a list counts at its first place."""
    ds = open_dataset(path, flag)
    source = f"{flag} {os.fspath(path)}"
    require_columns(ds.schema, [USER_ID], source, f"give {USER_ID} and {ITEM_IDS} (or {ITEM_ID})")
    names = ds.schema.names
    if ITEM_IDS in names:
        table = read_table(ds, source, columns=[USER_ID, ITEM_IDS])
        lengths = pc.list_value_length(table[ITEM_IDS]).fill_null(0).to_numpy(zero_copy_only=False)
        users = np.repeat(int_column(table[USER_ID], source, USER_ID), lengths)
        items = int_column(pc.list_flatten(table[ITEM_IDS]), source, ITEM_IDS)
    elif ITEM_ID in names:
        columns = [USER_ID, ITEM_ID] + (["time"] if "time" in names else [])
        table = read_table(ds, source, columns=columns)
        if "time" in names:
            table = table.take(pc.sort_indices(table, [(USER_ID, "ascending"), ("time", "ascending")]))
        users, items = int_column(table[USER_ID], source, USER_ID), int_column(table[ITEM_ID], source, ITEM_ID)
    else:
        raise UserError(f"{source}: missing column {ITEM_IDS} (list form) or {ITEM_ID} (long form); it has "
                        f"{', '.join(names)}")
    order = np.argsort(users, kind="stable")  # users sorted, each list in its own order
    users, items = users[order], items[order]
    first = np.unique(np.stack([users, items]), axis=1, return_index=True)[1]  # first place of each pair
    keep = np.sort(first)
    users, items = users[keep], items[keep]
    ids, counts = np.unique(users, return_counts=True)
    return UserLists(ids, Ragged.from_lengths(counts.astype(np.int64), items))


def lists_of(users: np.ndarray, rows: list[np.ndarray]) -> UserLists:
    return UserLists(users, Ragged.from_lengths(np.array([len(r) for r in rows], dtype=np.int64),
                                                np.concatenate(rows) if rows else np.zeros(0, np.int64)))


def carve(train: UserLists, rule: Holdout, *, share: float = 0.2, min_items: int = 5, seed: int = 7,
          table: UserLists | None = None) -> tuple[UserLists, UserLists]:
    """(kept, held out) per the rule above; users with nothing held out keep their whole list."""
    if not 0 < share < 1:
        raise UserError(f"--holdout-share {share}: give a share between 0 and 1")
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for u in range(len(train)):
        items = train.lists.row(u)
        if rule == "table":
            if table is None:
                raise UserError("--holdout table needs --holdout-table (the validation pairs)")
            row = table.rows_of(train.user_ids[u:u + 1])[0]
            out = np.isin(items, table.lists.row(row)) if row >= 0 else np.zeros(len(items), bool)
        else:
            n_out = int(len(items) * share) if len(items) >= min_items else 0
            out = np.zeros(len(items), bool)
            if rule == "last":
                out[len(items) - n_out:] = n_out > 0
            else:
                out[rng.choice(len(items), n_out, replace=False)] = True
        kept.append(np.sort(items[~out]))  # sets from here on, sorted as every list reader gives them
        held.append(np.sort(items[out]))
    kept_lists, held_lists = lists_of(train.user_ids, kept), lists_of(train.user_ids, held)
    if held_lists.lists.lengths().sum() == 0:
        raise UserError(f"--holdout {rule}: nothing held out (users need >= {min_items} items, or the table's "
                        "pairs must be in the training lists); lower --holdout-min-items")
    return kept_lists, held_lists
