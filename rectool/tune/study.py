"""``rectool tune``: choose a method and its parameters on a validation split carved from train.

Inputs: the training lists (``--train``), the search (``rectool.tune.space``: methods, parameter
domains, sampler, trial and time budget, patience) and the carving rule
(``rectool.tune.holdout``). Each trial fits one configuration on the kept part of train, ranks
every item for the users with held-out items (their kept items are the history and, by default,
excluded) and scores the spec's metric against the held-out items (``eval-topk``'s measures).
Optuna drives the search: ``grid`` enumerates every combination (its brute-force sampler),
``tpe`` and ``random`` sample within the budget; the study stops at ``trials``, at
``budget_minutes`` (no trial starts after it), or after ``patience`` trials without a better one.
Trials run one at a time: each already uses both cores, and two at once would fight for them.

Outputs (``--output DIR``, atomic):
    ``trials.csv``   every trial: number, method, parameters, the metric, seconds, state
    ``trials.png``   the metric of each trial and the best so far
    ``best.yaml``    the chosen method and parameters (and its validation metric)
    ``recalls/``     with ``final_users``: the winner fitted on the *whole* train, top-``final_k`` for
                     those users (the recall format of ``retrieve``; ``eval-topk`` reads it)
    ``_meta.json``   kind ``tune``

Example::

    rectool tune --space examples/tune/classical.yaml --train out/seq/train_sequences --holdout last \\
        --final-users out/seq/test/truth -o out/tune
"""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rectool import console
from rectool.artifacts import atomic_dir, write_meta
from rectool.errors import UserError
from rectool.retrieval.baselines import classical_topk
from rectool.retrieval.classical import CLASSICAL, ClassicalParams
from rectool.retrieval.formats import UserLists, read_user_lists
from rectool.retrieval.metrics import topk_metrics
from rectool.tune import Holdout
from rectool.tune.holdout import carve, lists_of, read_ordered
from rectool.tune.space import Range, TuneSpec

TUNE_KIND = "tune"


def _suggest(trial: Any, name: str, domain: Any) -> Any:
    if isinstance(domain, list):
        return trial.suggest_categorical(name, domain)
    assert isinstance(domain, Range)
    if domain.int:
        return trial.suggest_int(name, int(domain.low), int(domain.high), log=domain.log,
                                 step=int(domain.step or 1))
    return trial.suggest_float(name, domain.low, domain.high, log=domain.log, step=domain.step)


def _params(trial: Any, spec: TuneSpec) -> ClassicalParams:
    method = trial.suggest_categorical("method", list(spec.methods))
    values = {name: _suggest(trial, f"{method}.{name}", domain) for name, domain in spec.methods[method].items()}
    return CLASSICAL[method](**values)


def _sampler(spec: TuneSpec) -> Any:
    import optuna

    if spec.sampler == "grid":
        with warnings.catch_warnings():  # "experimental" since optuna 3.1; it enumerates conditional spaces
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.BruteForceSampler(seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def validation_exclusions(exclude: str, kept: UserLists, held: UserLists) -> UserLists | None:
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


def evaluate_params(params: ClassicalParams, kept: UserLists, held: UserLists, exclude: UserLists | None,
                    spec: TuneSpec) -> float:
    """The spec's metric of one configuration on the validation split."""
    has_truth = held.lists.lengths() > 0
    truth = UserLists(held.user_ids[has_truth], held.lists.take(np.flatnonzero(has_truth)))
    topk = classical_topk(params, kept, truth.user_ids, kept, spec.k, exclude=exclude, progress=False)
    recalls = UserLists(truth.user_ids, topk.items())
    return float(topk_metrics(recalls, truth, [spec.k])["metrics"][str(spec.k)][spec.metric_name])


def run_tune(spec: TuneSpec, train: str | os.PathLike[str], output: str | os.PathLike[str], *,
             holdout: Holdout = "last", share: float = 0.2, min_items: int = 5,
             holdout_table: str | os.PathLike[str] | None = None, exclude: str = "history",
             final_users: str | os.PathLike[str] | None = None, final_history: str | os.PathLike[str] | None = None,
             final_k: int = 200, overwrite: bool = False) -> dict[str, Any]:
    """Search, write the outputs above, return the summary figures."""
    import optuna

    check_output(output, overwrite)  # before the search, not after it
    if final_k < 1:
        raise UserError(f"--final-k {final_k}: recommend at least one item")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lists = read_ordered(train)
    table = read_user_lists(holdout_table, "--holdout-table") if holdout_table is not None else None
    kept, held = carve(lists, holdout, share=share, min_items=min_items, seed=spec.seed, table=table)
    excluded = validation_exclusions(exclude, kept, held)
    study = optuna.create_study(direction="maximize", sampler=_sampler(spec))
    rows: list[dict[str, Any]] = []
    started = time.monotonic()

    def objective(trial: Any) -> float:
        params = _params(trial, spec)
        start = time.perf_counter()
        value = evaluate_params(params, kept, held, excluded, spec)
        rows.append({"trial": trial.number, "method": params.method, "params": params.model_dump(exclude={"method"}),
                     spec.metric: round(value, 6), "seconds": round(time.perf_counter() - start, 2)})
        return value

    def stop_early(study: Any, trial: Any) -> None:
        bar.advance(1)
        best = study.best_trial.number
        if spec.patience and trial.number - best >= spec.patience:
            study.stop()

    with console.progress(f"tune ({spec.sampler})", total=spec.trials) as bar:
        study.optimize(objective, n_trials=spec.trials, timeout=spec.budget_minutes * 60, callbacks=[stop_early])
    best = max(rows, key=lambda r: r[spec.metric])
    winner = CLASSICAL[best["method"]](**best["params"])
    summary: dict[str, Any] = {"trials": len(rows), "best_trial": best["trial"], "method": best["method"],
                               spec.metric: best[spec.metric], "minutes": round((time.monotonic() - started) / 60, 2),
                               "validation_users": int((held.lists.lengths() > 0).sum())}
    with atomic_dir(output, overwrite) as tmp:
        _write_trials(tmp, rows, spec)
        (tmp / "best.yaml").write_text(yaml.safe_dump(
            {"method": best["method"], "params": best["params"], "validation": {spec.metric: best[spec.metric]},
             "trial": best["trial"]}, sort_keys=False))
        if final_users is not None:
            summary["final"] = _final(winner, train, tmp / "recalls", final_users, final_history, exclude, final_k)
        write_meta(tmp, kind=TUNE_KIND, inputs=[train], holdout=holdout, share=share, spec=spec.model_dump(mode="json"),
                   **{k: v for k, v in summary.items() if k != "final"})
    return summary


def _final(winner: ClassicalParams, train: str | os.PathLike[str], out: Path, users: str | os.PathLike[str],
           history: str | os.PathLike[str] | None, exclude: str, k: int) -> dict[str, Any]:
    """The winner fitted on the whole train, top-k for ``users`` from ``history`` (default: train): exactly
    what ``rectool baseline`` with these parameters writes."""
    from rectool.retrieval.baselines import run_baseline

    return run_baseline(winner.method, train, out, users=users, history=history, exclude=exclude,  # type: ignore
                        k=k, params=winner)


def _write_trials(directory: Path, rows: list[dict[str, Any]], spec: TuneSpec) -> None:
    names = sorted({name for row in rows for name in row["params"]})
    with open(directory / "trials.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", "method", *names, spec.metric, "seconds"])
        for row in rows:
            writer.writerow([row["trial"], row["method"], *(row["params"].get(n, "") for n in names),
                             row[spec.metric], row["seconds"]])
    (directory / "trials.json").write_text(json.dumps(rows, indent=1) + "\n")
    _plot(directory / "trials.png", rows, spec)


def _plot(path: Path, rows: list[dict[str, Any]], spec: TuneSpec) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    values = np.array([r[spec.metric] for r in rows])
    for method in sorted({r["method"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["method"] == method]
        ax.scatter(idx, values[idx], label=method, s=18)
    ax.plot(np.maximum.accumulate(values), color="black", linewidth=1, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {spec.metric}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_output(output: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse an existing output before the search starts (the atomic commit checks again at the end)."""
    if Path(output).exists() and not overwrite:
        raise UserError(f"--output {os.fspath(output)}: already exists; pass --overwrite to replace it")
