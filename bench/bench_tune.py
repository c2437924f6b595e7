"""``rectool tune`` on the developer datasets: a two-tower and the classical methods searched together within a
fixed budget, on a validation split that ``tune`` carves itself; the winner refitted on the whole train
(``--final``) and evaluated on test with ``eval-topk``.

Same test splits, exclusions and evaluator as ``bench_retrieval_quality.py`` (its ``build_split``, a
next-item dataset through the CLI). The validation split is ``tune``'s: the last 20% of each
time-ordered user's events (movielens-100k), a seeded random 20% (amazon-cds' item sets), or the
provided ``valid.txt`` buy taken out of the buys (taobao, ``--holdout table``) -- the rules the quality
bench uses. The search (TPE over the union of the methods' spaces, the retrieve-time terms tried on
every trained model) is the same on every dataset: nothing here is chosen per dataset except by
``tune`` on validation.

    python bench/bench_tune.py [--datasets movielens-100k,amazon-cds,taobao-multibehavior]
        [--trials 16] [--budget-minutes 30] [--dim 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from bench_retrieval_quality import DATASETS, _n_items, build_split, config, rt
from common import DATA, log, run_shared_datasets

HOLDOUT = {"movielens-100k": ["--holdout", "last"], "amazon-cds": ["--holdout", "random"],
           "taobao-multibehavior": ["--holdout", "table"]}


def two_tower(seq: Path, work: Path, n_items: int, dim: int) -> Path:
    """The recommended recipe's shape: mean-pooled history, linear towers, L2-normalised, sampled softmax."""
    cfg = config(seq, work / "two_tower", "two_tower", n_items, epochs=5)
    for feature in cfg["features"]:
        feature["embedding_dim"] = dim
    cfg["model"].update(output_dim=dim, history_pooling="mean", user_tower={"hidden_units": []})
    path = work / "two_tower.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def space(model_config: Path, trials: int, budget: float, k: int, repeats: bool) -> dict[str, Any]:
    retrieve: dict[str, Any] = {"item_similarity": [0, 0.35], "item_to_item": [0, 0.35],
                                "repeat_column": "hist_item_ids"}  # the item-id history the terms read
    if repeats:  # taobao: a bought item is often in the user's cart
        retrieve["repeat_bonus"] = [None, 1.0]
    return {"metric": f"recall@{k}", "sampler": "tpe", "trials": trials, "budget_minutes": budget, "seed": 7,
            "models": {"two_tower": {"config": str(model_config),
                                     "params": {"model.loss.temperature": [0.05, 0.1, 0.2],
                                                "train.epochs": [5, 10, 20]},
                                     "retrieve": retrieve}},
            "methods": {"als": {"factors": [64, 128, 256], "alpha": {"low": 1, "high": 50, "log": True},
                                "regularization": {"low": 0.01, "high": 10, "log": True}},
                        "ease": {"l2": {"low": 10, "high": 5000, "log": True}},
                        "item-knn": {"neighbours": {"low": 10, "high": 1000, "log": True, "int": True}}}}


def run_dataset(name: str, src: Path, trials: int, budget: float, dim: int) -> dict:
    spec = DATASETS[name]
    work = DATA / "tune" / name
    shutil.rmtree(work, ignore_errors=True)  # the split's commands write fresh outputs
    work.mkdir(parents=True)
    seq = build_split(name, spec, src, work, "test")
    k = max(spec["k"])
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump(space(two_tower(seq, work, _n_items(seq) + 1, dim), trials, budget, k,
                                         spec["layout"] == "taobao")))
    holdout = list(HOLDOUT[name])
    if spec["layout"] == "taobao":  # the provided validation buy, as events
        holdout += ["--holdout-table", rt("convert", "--format", "pairs", "--behavior", "4", src / "valid.txt",
                                          "-o", work / "valid_pairs", "--overwrite")]
    start = time.perf_counter()
    out = rt("tune", "--space", path, "--dataset", seq, *holdout, "--final", "--final-k", k, "-o", work / "tune",
             "--overwrite")
    minutes = round((time.perf_counter() - start) / 60, 1)
    rt("eval-topk", "--recall-path", Path(out) / "recalls", "--truth-path", seq / "test" / "truth", "--k-list",
       ",".join(map(str, spec["k"])), "-o", work / "eval", "--overwrite")
    metrics = json.loads((work / "eval" / "metrics.json").read_text())["metrics"]
    best = yaml.safe_load((Path(out) / "best.yaml").read_text())
    trials_run = json.loads((Path(out) / "trials.json").read_text())
    result = {"chosen": best, "minutes": minutes, "trials": [
        {key: row[key] for key in ("trial", "method", "params", "retrieve", f"recall@{k}", "seconds")}
        for row in trials_run],
        "test": {f"{m}@{kk}": round(v[m], 4) for kk, v in metrics.items() for m in ("recall", "ndcg", "hit_rate")}}
    log(f"{name}: chosen {best['method']} {best['params']} {best['retrieve']}, test {result['test']}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="movielens-100k,amazon-cds,taobao-multibehavior")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--budget-minutes", type=float, default=30.0)
    ap.add_argument("--dim", type=int, default=64, help="the two-tower's embedding width")
    args = ap.parse_args()
    run_shared_datasets("tune", DATASETS, args.datasets, lambda name, src: run_dataset(
        name, src, args.trials, args.budget_minutes, args.dim))


if __name__ == "__main__":
    main()
