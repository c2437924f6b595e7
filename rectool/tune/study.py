"""``rectool tune``: choose a method and its settings on a validation split carved from train.

Inputs: the search (``rectool.tune.space``: classical methods and trained models, parameter
domains, retrieve-time terms, sampler, trial and time budget, patience) and the data: training
lists (``--train``: classical methods only) or a next-item dataset (``--dataset``: both), with the
carving rule (``rectool.tune.splits``). A classical trial fits one configuration on the kept part
of train and ranks every item for the users with held-out items; a trained trial trains the
model's config with the trial's settings on the validation dataset, then retrieves once per
combination of the retrieve-time terms (no retraining per value: the best variant is the trial's
value). Every trial is scored by the spec's metric against the held-out items (``eval-topk``'s
measures). Optuna drives the search: ``grid`` enumerates every combination (its brute-force
sampler), ``tpe`` and ``random`` sample within the budget; the study stops at ``trials``, at
``budget_minutes`` (no trial starts after it), or after ``patience`` trials without a better one.
Trials run one at a time: each already uses both cores, and two at once would fight for them.

Outputs (``--output DIR``, atomic):
    ``trials.csv``   every trial: number, method, settings, retrieve terms, the metric, seconds (a
                     configuration proposed again is not fitted again: its row names the trial it repeats)
    ``trials.json``  the same, with every retrieve variant of a trained trial
    ``trials.png``   the metric of each trial and the best so far
    ``best.yaml``    the chosen method, its settings (and retrieve terms) and validation metric
    ``config.yaml``  a trained winner's train config (on the dataset's whole train/)
    ``recalls/``     with ``final_users`` (``--train``) or ``final`` (``--dataset``): the winner fitted on
                     the *whole* train, top-``final_k`` for those users or the dataset's test users (the
                     recall format of ``retrieve``; ``eval-topk`` reads it); a trained winner's
                     ``model/`` and ``export/`` beside it
    ``_meta.json``   kind ``tune``

Example::

    rectool tune --space examples/tune/two_tower.yaml --dataset out/seq --holdout last --final -o out/tune
"""

from __future__ import annotations

import csv
import json
import os
import shutil
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
from rectool.retrieval.formats import UserLists, read_recalls, write_recalls
from rectool.retrieval.metrics import topk_metrics
from rectool.scratch import scratch_dir
from rectool.tune import Holdout
from rectool.tune.space import Range, TuneSpec
from rectool.tune.splits import Split, dataset_split, lists_split, sample_users, test_split

TUNE_KIND = "tune"


def _suggest(trial: Any, name: str, domain: Any) -> Any:
    if isinstance(domain, list):
        return trial.suggest_categorical(name, domain)
    assert isinstance(domain, Range)
    if domain.int:
        return trial.suggest_int(name, int(domain.low), int(domain.high), log=domain.log,
                                 step=int(domain.step or 1))
    return trial.suggest_float(name, domain.low, domain.high, log=domain.log, step=domain.step)


def _sampler(spec: TuneSpec) -> Any:
    import optuna

    if spec.sampler == "grid":
        with warnings.catch_warnings():  # "experimental" since optuna 3.1; it enumerates conditional spaces
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.BruteForceSampler(seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed)


def score(recalls: UserLists, split: Split, spec: TuneSpec) -> float:
    """The spec's metric of ranked lists against the split's held-out items."""
    assert split.truth is not None
    return float(topk_metrics(recalls, split.truth, [spec.k])["metrics"][str(spec.k)][spec.metric_name])


def classical_lists(params: ClassicalParams, split: Split, k: int) -> tuple[np.ndarray, Any]:
    return split.users, classical_topk(params, split.train, split.users, split.history, k, exclude=split.exclude,
                                       progress=False)


def evaluate_params(params: ClassicalParams, split: Split, spec: TuneSpec) -> float:
    """The spec's metric of one classical configuration on the validation split."""
    users, topk = classical_lists(params, split, spec.k)
    return score(UserLists(users, topk.items()), split, spec)


def run_tune(spec: TuneSpec, output: str | os.PathLike[str], *, train: str | os.PathLike[str] | None = None,
             dataset: str | os.PathLike[str] | None = None, holdout: Holdout = "last", share: float = 0.2,
             min_items: int = 5, holdout_table: str | os.PathLike[str] | None = None, exclude: str = "history",
             final_users: str | os.PathLike[str] | None = None, final_history: str | os.PathLike[str] | None = None,
             final: bool = False, final_k: int = 200, overwrite: bool = False) -> dict[str, Any]:
    """Search, write the outputs above, return the summary figures."""
    import optuna

    _check_inputs(spec, train, dataset, final_users, final)
    check_output(output, overwrite)  # before the search, not after it
    if final_k < 1:
        raise UserError(f"--final-k {final_k}: recommend at least one item")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failing trial is our one-line error, not its log
    # trial models, exports and the validation dataset; a killed run's folder goes at the next run
    work = scratch_dir(Path(output).absolute().parent, f".{Path(output).name}.tune")
    try:
        if dataset is not None:
            split = dataset_split(Path(dataset), work, holdout, share=share, min_items=min_items, seed=spec.seed,
                                  holdout_table=holdout_table, exclude=exclude)
        else:
            assert train is not None
            split = lists_split(train, holdout, share=share, min_items=min_items, seed=spec.seed,
                                holdout_table=holdout_table, exclude=exclude)
        if spec.validation_users is not None:
            split = sample_users(split, spec.validation_users, spec.seed, work)
        rows = _search(spec, split, work)
        best = max(rows, key=lambda r: r[spec.metric])
        summary: dict[str, Any] = {"trials": len(rows), "best_trial": best["trial"], "method": best["method"],
                                   spec.metric: best[spec.metric], "validation_users": len(split.users)}
        with atomic_dir(output, overwrite) as tmp:
            _write_trials(tmp, rows, spec)
            chosen = {"method": best["method"], "params": best["params"], "retrieve": best["retrieve"],
                      "validation": {spec.metric: best[spec.metric]}, "trial": best["trial"]}
            (tmp / "best.yaml").write_text(yaml.safe_dump(chosen, sort_keys=False))
            if best["method"] in spec.models and dataset is not None:
                _write_config(tmp, spec, best, Path(dataset))
            if final_users is not None:
                assert train is not None
                summary["final"] = _final_lists(CLASSICAL[best["method"]](**best["params"]), train, tmp / "recalls",
                                                final_users, final_history, exclude, final_k)
            elif final:
                assert dataset is not None
                summary["final"] = _final_dataset(spec, best, test_split(Path(dataset), exclude), tmp, work, final_k)
            summary["minutes"] = round(sum(r["seconds"] for r in rows) / 60, 2)
            write_meta(tmp, kind=TUNE_KIND, inputs=[p for p in (train, dataset) if p is not None], holdout=holdout,
                       share=share, spec=spec.model_dump(mode="json"),
                       **{k: v for k, v in summary.items() if k != "final"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _check_inputs(spec: TuneSpec, train: Any, dataset: Any, final_users: Any, final: bool) -> None:
    if (train is None) == (dataset is None):
        raise UserError("give --train (training lists: classical methods) or --dataset (a next-item dataset: "
                        "classical methods and trained models), not both")
    if spec.models and dataset is None:
        raise UserError(f"models {', '.join(spec.models)}: a trained model needs --dataset (a next-item dataset "
                        "written by `rectool dataset --task next-item`)")
    if final_users is not None and dataset is not None:
        raise UserError("--final-users goes with --train; with --dataset, --final fits the winner for the "
                        "dataset's test users")
    if final and dataset is None:
        raise UserError("--final goes with --dataset; with --train, name the users with --final-users")


def _search(spec: TuneSpec, split: Split, work: Path) -> list[dict[str, Any]]:
    """Every trial's row; trials one at a time, within the spec's budget and patience."""
    import optuna

    from rectool.tune.trained import fit_and_retrieve

    study = optuna.create_study(direction="maximize", sampler=_sampler(spec))
    rows: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}  # a configuration TPE proposes again is not fitted again

    def objective(trial: Any) -> float:
        method = trial.suggest_categorical("method", [*spec.methods, *spec.models])
        space = spec.methods[method] if method in spec.methods else spec.models[method].params
        settings = {name: _suggest(trial, f"{method}.{name}", domain) for name, domain in space.items()}
        key = json.dumps([method, settings], sort_keys=True, default=str)
        if key in seen:
            rows.append({**seen[key], "trial": trial.number, "seconds": 0.0, "repeat_of": seen[key]["trial"]})
            return rows[-1][spec.metric]
        start = time.perf_counter()
        row: dict[str, Any] = {"trial": trial.number, "method": method, "retrieve": {}}
        if method in spec.methods:
            params = CLASSICAL[method](**settings)
            row["params"] = params.model_dump(exclude={"method"})
            row[spec.metric] = round(evaluate_params(params, split, spec), 6)
        else:
            model = spec.models[method]
            variants = model.retrieve.variants()
            _, paths = fit_and_retrieve(model, settings, split, work / f"trial-{trial.number}", k=spec.k,
                                        variants=variants)
            values = [round(score(read_recalls(p), split, spec), 6) for p in paths]
            shutil.rmtree(work / f"trial-{trial.number}", ignore_errors=True)  # 512-d tables: keep the disk free
            pick = int(np.argmax(values))
            row.update(params=settings, retrieve=variants[pick], variants=[
                {"retrieve": v, spec.metric: x} for v, x in zip(variants, values)])
            row[spec.metric] = values[pick]
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        seen[key] = row
        return row[spec.metric]

    def stop_early(study: Any, trial: Any) -> None:
        bar.advance(1)
        if spec.patience and trial.number - study.best_trial.number >= spec.patience:
            study.stop()

    with console.progress(f"tune ({spec.sampler})", total=spec.trials) as bar:
        study.optimize(objective, n_trials=spec.trials, timeout=spec.budget_minutes * 60, callbacks=[stop_early])
    return rows


def _write_config(directory: Path, spec: TuneSpec, best: dict[str, Any], dataset: Path) -> None:
    """The winner's train config on the dataset's whole training data, ready for ``rectool train``."""
    from rectool.train.config import dump_config
    from rectool.tune.space import model_config
    from rectool.tune.trained import trial_config

    model = spec.models[best["method"]]
    model_dir = Path(model_config(model, best["params"]).train.model_dir + "_tuned")  # not the untuned model's
    cfg = trial_config(model, best["params"], test_split(dataset, "none"), model_dir)
    (directory / "config.yaml").write_text(dump_config(cfg))


def _final_lists(winner: ClassicalParams, train: str | os.PathLike[str], out: Path, users: str | os.PathLike[str],
                 history: str | os.PathLike[str] | None, exclude: str, k: int) -> dict[str, Any]:
    """The winner fitted on the whole train, top-k for ``users`` from ``history`` (default: train): exactly
    what ``rectool baseline`` with these parameters writes."""
    from rectool.retrieval.baselines import run_baseline

    return run_baseline(winner.method, train, out, users=users, history=history, exclude=exclude,  # type: ignore
                        k=k, params=winner)


def _final_dataset(spec: TuneSpec, best: dict[str, Any], split: Split, out: Path, work: Path,
                   k: int) -> dict[str, Any]:
    """The winner on the dataset's whole train, top-k for its test users (``recalls/``; a trained model's
    ``model/`` and ``export/`` beside it)."""
    method = best["method"]
    if method in spec.methods:
        users, topk = classical_lists(CLASSICAL[method](**best["params"]), split, k)
        return write_recalls(out / "recalls", users, topk, inputs=[split.dataset], method=method, **best["params"])
    from rectool.tune.trained import fit_and_retrieve

    _, paths = fit_and_retrieve(spec.models[method], best["params"], split, work / "final", k=k,
                                variants=[best["retrieve"]])
    for name, source in (("model", work / "final" / "model"), ("export", work / "final" / "export"),
                         ("recalls", paths[0])):
        shutil.move(source, out / name)
    return {"output": os.fspath(out / "recalls"), "users": len(split.users), "method": method}


def _write_trials(directory: Path, rows: list[dict[str, Any]], spec: TuneSpec) -> None:
    names = sorted({name for row in rows for name in row["params"]})
    terms = sorted({name for row in rows for name in row["retrieve"]})
    with open(directory / "trials.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial", "method", *names, *(f"retrieve.{t}" for t in terms), spec.metric, "seconds",
                         "repeat_of"])
        for row in rows:
            writer.writerow([row["trial"], row["method"], *(row["params"].get(n, "") for n in names),
                             *(row["retrieve"].get(t, "") for t in terms), row[spec.metric], row["seconds"],
                             row.get("repeat_of", "")])
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
