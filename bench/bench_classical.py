"""The classical methods (ALS, EASE, BARS item-kNN) on the developer datasets, each configuration chosen
on a validation split of train, through the CLI (``rectool baseline --rule ...`` -> ``eval-topk``).

Same splits, exclusions and evaluator as ``bench_retrieval_quality.py`` (its ``build_split``): the
test split is the dataset's own; the validation split is carved from train (the last 20% of each
time-ordered line on movielens-100k, a seeded random 20% of each item set on amazon-cds, the
provided ``valid.txt`` buy on taobao). Every grid entry runs on validation; the best by validation
recall at the first K (taobao: hit rate, one truth item per user) runs on test. Every configuration
tried is reported. The default parameters of each method (no tuning) run on test as well.

    python bench/bench_classical.py [--datasets movielens-100k,amazon-cds,taobao-multibehavior]
        [--methods item-knn,ease,als] [--grid METHOD.PARAM=JSON ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from bench_baselines import PEERS
from bench_retrieval_quality import DATASETS, build_split, evaluate, rt
from common import DATA, log, run_shared_datasets

GRIDS: dict[str, dict[str, list[Any]]] = {
    "item-knn": {"neighbours": [20, 50, 100, 200, 500]},
    "ease": {"l2": [50.0, 200.0, 500.0, 2000.0]},
    "als": {"factors": [64, 128, 256], "alpha": [1.0, 10.0], "regularization": [0.01, 1.0]},
}
FLAGS = {"neighbours": "--neighbours", "l2": "--l2", "factors": "--factors", "alpha": "--alpha",
         "regularization": "--regularization", "iterations": "--iterations"}


def configurations(method: str) -> list[dict[str, Any]]:
    grid = GRIDS[method]
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def run(method: str, params: dict[str, Any], seq: Path, spec: dict, work: Path, tag: str) -> dict:
    # taobao: the whole train list (buy and cart) is the history; only the buys are left out
    scope = (["--history", seq / "train_sequences", "--exclude", seq / "test" / "inputs"]
             if spec["layout"] == "taobao" else ["--history", seq / "test" / "inputs"])
    flags = [str(a) for key, value in params.items() for a in (FLAGS[key], value)]
    start = time.perf_counter()
    out = rt("baseline", "--rule", method, *flags, "--train", seq / "train_sequences", *scope,
             "--users", seq / "test" / "truth", "--k", max(spec["k"]), "-o", work / f"recalls_{tag}", "--overwrite")
    seconds = round(time.perf_counter() - start, 1)
    return {"method": method, **params, "seconds": seconds,
            **evaluate(Path(out), seq, work / f"eval_{tag}", spec["k"], spec.get("segments", False))}


def run_dataset(name: str, src: Path, methods: list[str]) -> dict:
    spec = DATASETS[name]
    work = DATA / "classical" / name
    work.mkdir(parents=True, exist_ok=True)
    test_seq = build_split(name, spec, src, work, "test")
    valid_seq = build_split(name, spec, src, work, "valid")
    metric = f"{'hit_rate' if spec['layout'] == 'taobao' else 'recall'}@{spec['k'][0]}"
    validation, rows = [], []
    for method in methods:
        tried = []
        for i, params in enumerate(configurations(method)):
            tried.append(run(method, params, valid_seq, spec, work, f"valid_{method}_{i}"))
            log(f"{name} validation: {tried[-1]}")
        validation += tried
        best = max(tried, key=lambda r: r[metric])
        chosen = {k: best[k] for k in GRIDS[method]}
        rows.append({**run(method, chosen, test_seq, spec, work, f"test_{method}"),
                     "chosen_by": f"validation {metric}"})
        log(f"{name}: {rows[-1]}")
        rows.append({**run(method, {}, test_seq, spec, work, f"test_{method}_defaults"), "chosen_by": "defaults"})
        log(f"{name}: {rows[-1]}")
    return {"split": spec.get("exclusion"), "peers": PEERS.get(name), "validation_metric": metric,
            "grids": {m: GRIDS[m] for m in methods}, "validation": validation, "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--methods", default=",".join(GRIDS))
    ap.add_argument("--grid", nargs="*", default=[], metavar="METHOD.PARAM=JSON",
                    help='replace one grid, e.g. ease.l2=[500] (a smaller search where a fit is expensive)')
    args = ap.parse_args()
    for item in args.grid:
        key, values = item.split("=", 1)
        method, param = key.split(".", 1)
        GRIDS[method] = {**GRIDS[method], param: json.loads(values)}
    run_shared_datasets("classical", DATASETS, args.datasets,
                        lambda name, src: run_dataset(name, src, args.methods.split(",")))


if __name__ == "__main__":
    main()
