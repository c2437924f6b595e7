"""``rectool tune``: the command line of ``rectool.tune.study.run_tune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rectool import console
from rectool.cli.options import OverwriteOpt, QuietOpt, choices, count_option
from rectool.tune import Holdout

HoldoutChoice = choices("HoldoutChoice", Holdout)


def tune(
    space: Annotated[Path, typer.Option("--space", help="The search, a YAML file: methods, parameter domains, "
                                                        "sampler, trials, budget_minutes, patience, metric.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory: trials.csv, trials.png, best.yaml "
                                                                "[, recalls/].")],
    train: Annotated[Path | None, typer.Option("--train", help="Training interactions for classical methods: a "
                                                               "table user_id + item_ids (in the data's order) or "
                                                               "user_id + item_id [+ time].")] = None,
    dataset: Annotated[Path | None, typer.Option("--dataset", help="A next-item dataset (rectool dataset --task "
                                                                   "next-item), for classical methods and trained "
                                                                   "models: its valid/ split, or one carved from "
                                                                   "its training events (protocol given).")] = None,
    holdout: Annotated[HoldoutChoice, typer.Option("--holdout", help="Validation split: last (the last share of "
                                                                     "each time-ordered list), random (a seeded "
                                                                     "share of each item set) or table "
                                                                     "(--holdout-table's pairs).")]
    = HoldoutChoice("last"),  # type: ignore[assignment]
    holdout_share: Annotated[float, typer.Option("--holdout-share", help="last/random: the share held out.")] = 0.2,
    holdout_min_items: Annotated[int, count_option("--holdout-min-items", help="last/random: users with fewer "
                                                                               "items hold nothing out.")] = 5,
    holdout_table: Annotated[Path | None, typer.Option("--holdout-table", help="table: the validation pairs "
                                                                               "(user_id, item_id or item_ids), "
                                                                               "taken out of the training "
                                                                               "data.")] = None,
    exclude: Annotated[str, typer.Option("--exclude", help="history (never return a history item; --dataset: "
                                                           "the inputs' seen_item_ids), none, or (--train) a "
                                                           "table of items to leave out per user.")] = "history",
    final_users: Annotated[Path | None, typer.Option("--final-users", help="Fit the winner on the whole --train "
                                                                           "and write its top --final-k for these "
                                                                           "users (a table with user_id) to "
                                                                           "OUTPUT/recalls.")] = None,
    final_history: Annotated[Path | None, typer.Option("--final-history", help="Each final user's items "
                                                                               "[--train].")] = None,
    final: Annotated[bool, typer.Option("--final/--no-final", help="With --dataset: fit (train) the winner on "
                                                                   "the dataset's whole train/ and write its top "
                                                                   "--final-k for the test users to "
                                                                   "OUTPUT/recalls (a model's model/ and export/ "
                                                                   "beside it).")] = False,
    final_k: Annotated[int, count_option("--final-k", help="Items per final user.")] = 200,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Choose a method or model and its settings on a validation split carved from train (never the test split)."""
    from rectool.tune.space import load_spec
    from rectool.tune.study import run_tune

    console.set_quiet(quiet)
    spec = load_spec(space)
    summary = run_tune(spec, output, train=train, dataset=dataset, holdout=holdout.value, share=holdout_share,
                       min_items=holdout_min_items, holdout_table=holdout_table, exclude=exclude,
                       final_users=final_users, final_history=final_history, final=final, final_k=final_k,
                       overwrite=overwrite)
    console.summary("tune", {k: v for k, v in summary.items() if k != "final"})
    console.emit_path(output)
