"""CLI of the ranking pipeline: ``features``, ``dataset``, ``baseline``, ``eval-f1``, ``submit``."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, get_args

import typer

from rectool import console
from rectool.cli.options import OutputOpt, OverwriteOpt, QuietOpt, SeedOpt, choices, count_option, parse_list
from rectool.errors import UserError
from rectool.ranking.common import parse_day
from rectool.ranking.dataset import Task
from rectool.ranking.samples import Split, SplitName
from rectool.ranking.submit import Format
from rectool.retrieval.sequences import Protocol, Targets

TaskChoice = choices("TaskChoice", Task)
SplitChoice = choices("SplitChoice", Split)
ProtocolChoice = choices("ProtocolChoice", Protocol)
TargetsChoice = choices("TargetsChoice", Targets)
SplitNameChoice = choices("SplitNameChoice", SplitName)
FormatChoice = choices("FormatChoice", Format)

EventsOpt = Annotated[Path, typer.Option("--events", help="Events dataset written by `rectool convert`.")]
ItemsOpt = Annotated[Path | None, typer.Option("--items", help="Item subset P: items dataset from `rectool convert "
                                                               "--format tianchi-item`, or the raw item file.")]
ThreadsOpt = Annotated[int | None, count_option("--threads", help="DuckDB threads [all cores].")]
MemoryOpt = Annotated[str, typer.Option("--memory-limit", help="DuckDB memory limit; beyond it DuckDB spills to "
                                                               "--temp-dir.")]
TempDirOpt = Annotated[Path | None, typer.Option("--temp-dir", help="Where DuckDB spills [beside the output].")]


def features(
    events: EventsOpt,
    output: OutputOpt,
    items: ItemsOpt = None,
    cutoffs: Annotated[str | None, typer.Option("--cutoffs", help="Cut-off days YYYY-MM-DD, comma-separated; "
                                                                  "features use events strictly before each [the "
                                                                  "last two days of the log and the day after].")]
    = None,
    windows: Annotated[str, typer.Option("--windows", help="Windows in days before the cut-off, plus 'all'.")]
    = "1,3,7,all",
    pair_days: Annotated[int | None, count_option("--pair-days", help="Keep user x item / user x category rows "
                                                                      "active in the last N days [largest window].")]
    = None,
    last_n: Annotated[int, count_option("--last-n", help="Length of the per-user last items/categories lists.")]
    = 50,
    threads: ThreadsOpt = None,
    memory_limit: MemoryOpt = "2GB",
    temp_dir: TempDirOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Behaviour features per cut-off day (user, item, category, user x item, user x category), in DuckDB."""
    from rectool.ranking.features import build_features, window

    console.set_quiet(quiet)
    result = build_features(events, output, cutoffs=_days(cutoffs, "--cutoffs"), items=items,
                            windows=parse_list(windows, "--windows", window, "a window"), pair_days=pair_days,
                            last_n=last_n, threads=threads, memory_limit=memory_limit, temp_dir=temp_dir,
                            overwrite=overwrite)
    console.summary("features", result)
    console.emit_path(output)


def dataset(
    ctx: typer.Context,
    events: Annotated[list[Path], typer.Option("--events", help="Events dataset written by `rectool convert`; "
                                                               "next-item: repeat to join several (buy + cart).")],
    output: OutputOpt,
    features: Annotated[Path | None, typer.Option("--features", help="ranking: feature tables written by "
                                                                     "`rectool features`.")] = None,
    task: Annotated[TaskChoice, typer.Option("--task", help="ranking: (user, item) candidates with purchase labels; "
                                                            "next-item: history -> next item, with test inputs and "
                                                            "truth.")] = TaskChoice("ranking"),
    items: ItemsOpt = None,
    label_days: Annotated[str | None, typer.Option("--label-days", help="ranking: labelled days YYYY-MM-DD, "
                                                                        "comma-separated [the last two days of "
                                                                        "the log].")] = None,
    predict_day: Annotated[str | None, typer.Option("--predict-day", help="ranking: unlabelled target day, or "
                                                                          "'none' [the day after the log].")] = None,
    candidate_days: Annotated[int, count_option("--candidate-days", help="ranking: candidates are pairs with an "
                                                                         "action in the K days before the day.")] = 3,
    neg_ratio: Annotated[float, typer.Option("--neg-ratio", help="ranking: keep about R negatives per positive in "
                                                                 "train (0 keeps all).")] = 0.0,
    split: Annotated[SplitChoice, typer.Option("--split", help="ranking: last-day (last label day is eval) or "
                                                               "user-hash (a hashed share of users is eval).")]
    = SplitChoice("last-day"),
    eval_fraction: Annotated[float, typer.Option("--eval-fraction", help="ranking: share of users in eval "
                                                                         "(user-hash).")] = 0.2,
    sequences: Annotated[bool, typer.Option("--sequences/--no-sequences", help="ranking: include the per-user last "
                                                                               "items and categories lists.")] = True,
    protocol: Annotated[ProtocolChoice, typer.Option("--protocol", help="next-item: user-split (TDM/JTM), "
                                                                        "leave-one-out, or given (with "
                                                                        "--test-events).")]
    = ProtocolChoice("user-split"),
    test_events: Annotated[str | None, typer.Option("--test-events", help="next-item, protocol given: the test "
                                                                          "interactions (events dataset).")] = None,
    min_behaviors: Annotated[int, count_option("--min-behaviors", help="next-item: users with fewer behaviours "
                                                                       "are dropped.")] = 10,
    n_test: Annotated[int, count_option("--n-test", least=0, help="next-item, user-split: test users.")] = 10_000,
    n_valid: Annotated[int, count_option("--n-valid", least=0, help="next-item: validation users (user-split), or 1 "
                                                                    "to hold out a validation item (leave-one-out).")]
    = 10_000,
    max_history: Annotated[int, count_option("--max-history", help="next-item: history length kept (most recent "
                                                                   "last).")] = 50,
    targets: Annotated[TargetsChoice, typer.Option("--targets", help="next-item: all (every position is a target), "
                                                                     "last, or set (each item against the user's "
                                                                     "other items).")] = TargetsChoice("all"),
    behaviors: Annotated[str | None, typer.Option("--behaviors", help="next-item: keep only these behaviours "
                                                                      "(1-4, comma-separated).")] = None,
    exclude_behaviors: Annotated[str | None, typer.Option(
        "--exclude-behaviors", help="next-item: seen_item_ids (what retrieval leaves out) holds only input items "
                                    "of these behaviours [all].")] = None,
    target_behaviors: Annotated[str | None, typer.Option(
        "--target-behaviors", help="next-item: only events of these behaviours are training targets (histories "
                                   "keep every behaviour), e.g. 4 to learn buys from buys and carts [all].")] = None,
    target_in_history: Annotated[bool, typer.Option(
        "--target-in-history/--no-target-in-history",
        help="next-item: --no-target-in-history takes a target's own item out of its history, so a model learns "
             "only new items and repeats are left to retrieve --repeat-bonus.")] = True,
    seed: SeedOpt = 2014,
    threads: ThreadsOpt = None,
    memory_limit: MemoryOpt = "2GB",
    temp_dir: TempDirOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Samples for a task: ranking (candidates, labels, features) or next-item (sequences, test inputs, truth)."""
    console.set_quiet(quiet)
    _refuse_other_task_flags(ctx, task.value)
    if task.value == "next-item":
        from rectool.retrieval.sequences import build_next_item

        result = build_next_item([str(e) for e in events], output, protocol=protocol.value, test_events=test_events,
                                 min_behaviors=min_behaviors, n_test=n_test, n_valid=n_valid, max_history=max_history,
                                 targets=targets.value, behaviors=_ints(behaviors, "--behaviors"),
                                 exclude_behaviors=_ints(exclude_behaviors, "--exclude-behaviors"),
                                 target_behaviors=_ints(target_behaviors, "--target-behaviors"),
                                 target_in_history=target_in_history, seed=seed,
                                 threads=threads, memory_limit=memory_limit, temp_dir=temp_dir, overwrite=overwrite)
        console.summary("dataset (next-item)", result)
        console.emit_path(output)
        return
    from rectool.ranking.dataset import build_dataset

    if features is None:
        raise UserError("--features is required for --task ranking (the output of rectool features)")
    if len(events) != 1:
        raise UserError(f"--events given {len(events)} times: --task ranking reads one events dataset (convert "
                        "several raw files into one with a single `rectool convert`)")
    target = "default" if predict_day is None else (None if predict_day.strip().lower() == "none"
                                                    else parse_day(predict_day, "--predict-day"))
    result = build_dataset(events[0], features, output, label_days=_days(label_days, "--label-days"),
                           predict_day=target, items=items, candidate_days=candidate_days, neg_ratio=neg_ratio,
                           split=split.value, eval_fraction=eval_fraction, seed=seed, sequences=sequences,
                           threads=threads, memory_limit=memory_limit, temp_dir=temp_dir, overwrite=overwrite)
    console.summary(f"dataset ({task.value})", result)
    console.emit_path(output)


# dataset flags that only one --task reads: given with the other task, they are refused rather than ignored
_TASK_FLAGS: dict[Task, tuple[str, ...]] = {
    "ranking": ("features", "items", "label_days", "predict_day", "candidate_days", "neg_ratio", "split",
                "eval_fraction", "sequences"),
    "next-item": ("protocol", "test_events", "min_behaviors", "n_test", "n_valid", "max_history", "targets",
                  "behaviors", "exclude_behaviors", "target_behaviors", "target_in_history"),
}


def _refuse_other_task_flags(ctx: typer.Context, task: str) -> None:
    for other, names in _TASK_FLAGS.items():
        if other == task or task not in _TASK_FLAGS:
            continue
        for param in ctx.command.params:
            # by name: typer's ParameterSource enum lives in a private module
            if param.name in names and getattr(ctx.get_parameter_source(param.name), "name", "") == "COMMANDLINE":
                raise UserError(f"{'/'.join([*param.opts, *param.secondary_opts])} is for --task {other}; "
                                f"--task {task} does not read it")


def _ints(text: str | None, flag: str) -> list[int]:
    """``--behaviors 1,4`` -> ``[1, 4]``; not given -> ``[]`` (every behaviour)."""
    return parse_list(text, flag, int, "an integer")


def _days(text: str | None, flag: str) -> list[dt.date] | None:
    """``--cutoffs`` / ``--label-days``: None when not given (the stage's default days), else at least one."""
    if not text:
        return None
    days = parse_list(text, flag, lambda part: parse_day(part, flag), "a day")
    if not days:
        raise UserError(f"{flag}: no day given; write days as YYYY-MM-DD separated by commas")
    return days


def baseline(
    output: Annotated[Path, typer.Option("--output", "-o", help="Predictions (ranking rules; - for Arrow IPC on "
                                                                "stdout) or recalls (retrieval rules) directory.")],
    rule: Annotated[str, typer.Option("--rule", help="ranking: cart-last-day (carted on the last day, not bought) or "
                                                     "weighted-recency; retrieval: popularity, item-cf, item-knn "
                                                     "(BARS), ease or als.")]
    = "cart-last-day",
    samples: Annotated[Path | None, typer.Option("--samples", help="ranking: a split of `rectool dataset` (e.g. "
                                                                   "OUT/predict), or the dataset folder with "
                                                                   "--split.")] = None,
    split: Annotated[SplitNameChoice | None, typer.Option("--split", help="ranking: train, eval or predict, when "
                                                                          "--samples is the dataset folder "
                                                                          "[predict].")] = None,
    train: Annotated[Path | None, typer.Option("--train", help="retrieval: training interactions (events, or a "
                                                               "table user_id + item_id / item_ids).")] = None,
    history: Annotated[Path | None, typer.Option("--history", help="retrieval: each query user's items (e.g. "
                                                                   "test/inputs of a next-item dataset) [--train].")]
    = None,
    users: Annotated[Path | None, typer.Option("--users", help="retrieval: whom to recommend for (a table with "
                                                               "user_id, e.g. test/truth) [every --history user].")]
    = None,
    exclude: Annotated[str, typer.Option("--exclude", help="retrieval: history (never recommend a history item), "
                                                           "none, or a table of items to leave out per user.")]
    = "history",
    k: Annotated[int, count_option("--k", help="retrieval: items per user.")] = 200,
    neighbours: Annotated[int, count_option("--neighbours", help="item-cf, item-knn: neighbours kept per "
                                                                 "item.")] = 200,
    similarity: Annotated[str, typer.Option("--similarity", help="item-cf: cosine or cooccurrence.")] = "cosine",
    factors: Annotated[int, count_option("--factors", help="als: latent dimensions.")] = 64,
    regularization: Annotated[float, typer.Option("--regularization", min=0.0, help="als: L2 weight of the "
                                                                                    "factors.")] = 0.01,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, help="als: confidence of an observed pair (the "
                                                                  "rest: 1).")] = 1.0,
    iterations: Annotated[int, count_option("--iterations", help="als: alternating sweeps.")] = 15,
    l2: Annotated[float, typer.Option("--l2", min=0.0, help="ease: lambda, the ridge on the item-item "
                                                            "weights.")] = 200.0,
    renormalize: Annotated[bool, typer.Option("--renormalize/--no-renormalize", help="item-knn: similarity "
                                                                                    "(1 + cos) / 2, as BARS.")]
    = True,
    item_bias: Annotated[bool, typer.Option("--item-bias/--no-item-bias", help="item-knn: centre by the item "
                                                                               "means, as BARS.")] = True,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Floors every model must beat: ranking rules (prediction schema) or retrieval baselines (recall format)."""
    from rectool.ranking.baseline import RULES, run_baseline

    console.set_quiet(quiet)
    if rule not in RULES:  # the ranking rules' registry, then the retrieval baselines' Literal
        from rectool.retrieval.baselines import Method
        from rectool.retrieval.baselines import run_baseline as run_retrieval

        if rule not in get_args(Method):
            raise UserError(f"--rule {rule}: choose one of {', '.join([*RULES, *get_args(Method)])}")
        if train is None:
            raise UserError(f"--rule {rule} needs --train (the training interactions)")
        from pydantic import ValidationError

        from rectool.retrieval.classical import ALSParams, EASEParams, ItemKNNParams

        try:
            params = {"als": lambda: ALSParams(factors=factors, regularization=regularization, alpha=alpha,
                                               iterations=iterations),
                      "ease": lambda: EASEParams(l2=l2),
                      "item-knn": lambda: ItemKNNParams(neighbours=neighbours, renormalize=renormalize,
                                                        item_bias=item_bias)}.get(rule, lambda: None)()
        except ValidationError as exc:  # the flags are the fields: name the flag
            error = exc.errors()[0]
            raise UserError(f"--{error['loc'][0]} {error['input']}: {error['msg'].lower()}") from None
        result = run_retrieval(rule, train, output, history=history, users=users,  # type: ignore[arg-type]
                               exclude=exclude, k=k, neighbours=neighbours, similarity=similarity,  # type: ignore
                               params=params, overwrite=overwrite)
        console.summary(f"baseline {rule}", result)
        console.emit_path(output)
        return
    if samples is None:
        raise UserError(f"--rule {rule} needs --samples (a split of rectool dataset)")
    result = run_baseline(samples, output, rule, split=split.value if split else None, overwrite=overwrite)
    console.summary("baseline", result)
    if os.fspath(output) != "-":
        console.emit_path(output)


def eval_f1(
    pred_path: Annotated[str, typer.Option("--pred-path", help="Predictions: directory, file, glob or - (stdin).")],
    label_path: Annotated[str, typer.Option("--label-path", help="True pairs: a dataset split (eval/), its labels/, "
                                                                 "a parquet table or a CSV user_id,item_id.")],
    topk_list: Annotated[str, typer.Option("--topk-list", help="Global top-K values, comma-separated, 'all' for no "
                                                               "cut, or auto (multiples of the true pairs).")]
    = "auto",
    threshold_list: Annotated[str, typer.Option("--threshold-list", help="Score thresholds (keep score >= t), "
                                                                         "'none' for no threshold.")] = "none",
    max_per_user: Annotated[str | None, typer.Option("--max-per-user", help="Per-user caps to scan as well, "
                                                                            "e.g. 1,2,5.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Directory for scan.csv, scan.parquet and "
                                                                       "the plot.")] = None,
    settings_from: Annotated[Path | None, typer.Option(
        "--settings-from", help="An eval-f1 output: score only its best row's top-K, threshold and per-user cap "
                                "(e.g. chosen on the eval day, applied to the target day).")] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The competition's F1 over a top-K x threshold (x per-user cap) scan."""
    from rectool.ranking.f1 import CAP_EXPECTED, THRESHOLD_EXPECTED, TOPK_EXPECTED, best_settings, cap, threshold, topk
    from rectool.ranking.f1 import eval_f1 as run_eval

    console.set_quiet(quiet)
    topks = None if topk_list.strip().lower() == "auto" else parse_list(topk_list, "--topk-list", topk, TOPK_EXPECTED)
    thresholds = parse_list(threshold_list, "--threshold-list", threshold, THRESHOLD_EXPECTED) or [None]
    caps = parse_list(max_per_user, "--max-per-user", cap, CAP_EXPECTED)
    if settings_from is not None:
        best = best_settings(settings_from)
        topks, thresholds, caps = [best["topk"]], [best["threshold"]], [best["max_entries_per_user"]]
    result = run_eval(pred_path, label_path, topks=topks, thresholds=thresholds, caps=caps, output=output,
                      overwrite=overwrite)
    console.summary("eval-f1", result)
    if output is not None:
        console.emit_path(output)


def submit(
    pred_path: Annotated[str, typer.Option("--pred-path", help="Predictions of one day: directory, file, glob or -.")],
    item_subset_path: Annotated[Path, typer.Option("--item-subset-path", help="Item subset P: items dataset or the "
                                                                              "raw item file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Submission file to write (atomically).")],
    threshold: Annotated[float | None, typer.Option("--threshold", help="Keep pairs with score >= this.")] = None,
    topk: Annotated[int | None, count_option("--topk", help="Keep the K best pairs overall.")] = None,
    max_entries_per_user: Annotated[int | None, count_option("--max-entries-per-user", help="Keep each user's N "
                                                                                           "best pairs.")] = None,
    format: Annotated[FormatChoice, typer.Option("--format", help="tsv (no header) or csv (header "
                                                                   "user_id,item_id).")] = FormatChoice("tsv"),
    settings_from: Annotated[Path | None, typer.Option(
        "--settings-from", help="An eval-f1 output: take top-K, threshold and per-user cap from its best row.")]
    = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the submission file: pairs in P, deduplicated, best first."""
    from rectool.ranking.submit import submit as run_submit

    console.set_quiet(quiet)
    result = run_submit(pred_path, item_subset_path, output, threshold=threshold, topk=topk,
                        max_entries_per_user=max_entries_per_user, fmt=format.value, overwrite=overwrite,
                        settings_from=settings_from)
    console.summary("submit", result)
    console.emit_path(output)
