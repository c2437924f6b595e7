"""Quality of rectool's retrieval models on the shared real datasets, through the CLI end to end.

For each dataset with a given train/test split (``../shared/data``: movielens-100k
``split_temporal_80_20``, amazon-cds): ``convert --format user-lines`` → ``dataset --task
next-item --protocol given`` (``--targets set`` on amazon-cds, whose lines are item sets) →
``train`` (two-tower, MIND) → ``export`` → ``embed`` →
``retrieve --method brute`` (every item scored, the user's training items excluded: the
full-ranking protocol of issue 5) → ``eval-topk`` at 20 and 50. Popularity and item-CF run
on the same files (``baseline``), so every figure comes from the same evaluator.

    python bench/bench_retrieval_quality.py [--datasets movielens-100k,amazon-cds] [--epochs 20]
        [--models two_tower,mind] [--no-baselines]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import yaml
from bench_baselines import PEERS, _shared_data
from common import DATA, RECTOOL, ROOT, emit, log

SPLITS = {"movielens-100k": "movielens-100k/split_temporal_80_20", "amazon-cds": "amazon-cds"}
# training samples: movielens lines are time-ordered sequences; the amazon-cds (BARS) lines are item sets
TARGETS = {"movielens-100k": "all", "amazon-cds": "set"}


def rt(*args: object) -> str:
    out = subprocess.run([*RECTOOL, *map(str, args), "--quiet"], cwd=ROOT, check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def config(seq: Path, model_dir: Path, model: str, n_items: int, epochs: int) -> dict:
    buckets = n_items + 1
    feats = [
        {"name": "hist_items", "kind": "sequence", "input": "hist_item_ids", "max_len": 50, "num_buckets": buckets,
         "embedding_dim": 64, "embedding_name": "item", "combiner": "none"},
        {"name": "item_id", "kind": "id", "num_buckets": buckets, "embedding_dim": 64, "embedding_name": "item"},
    ]
    m: dict = {"type": model, "output_dim": 64, "user_tower": {"hidden_units": [128]},
               "item_tower": {"hidden_units": []}, "l2_normalize": True,
               "loss": {"temperature": 0.05, "log_q": True}}
    if model == "two_tower":
        m["history_pooling"] = "attention"
    else:
        m.update(history="hist_items", interests=4)
    return {"data": {"train_input": str(seq / "train"), "batch_size": 512, "label": None},
            "features": feats, "feature_groups": {"user": ["hist_items"], "item": ["item_id"]}, "model": m,
            "optimizer": {"dense": {"type": "adam", "lr": 0.001}, "sparse": {"type": "sparse_adam", "lr": 0.005}},
            "train": {"model_dir": str(model_dir), "epochs": epochs, "log_every": 200, "seed": 7}}


def evaluate(recalls: Path, seq: Path, out: Path) -> dict:
    rt("eval-topk", "--recall-path", recalls, "--truth-path", seq / "test" / "truth", "--k-list", "20,50",
       "--output", out, "--overwrite")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    return {f"{m}@{k}": round(v[m], 4) for k, v in metrics.items() for m in ("recall", "ndcg")}


def run_dataset(name: str, src: Path, epochs: int, models: list[str], baselines: bool) -> dict:
    work = DATA / "quality" / name
    shutil.rmtree(work, ignore_errors=True)
    train_ev = rt("convert", "--format", "user-lines", src / "train.txt", "-o", work / "train_events")
    test_ev = rt("convert", "--format", "user-lines", src / "test.txt", "-o", work / "test_events")
    seq = Path(rt("dataset", "--task", "next-item", "--protocol", "given", "--events", train_ev, "--test-events",
                  test_ev, "--min-behaviors", "1", "--max-history", "50", "--targets", TARGETS[name],
                  "-o", work / "seq"))
    import pyarrow.dataset as pads

    n_items = int(pads.dataset(seq / "items").to_table(columns=["item_id"])["item_id"].to_numpy().max())
    rows = []
    for rule in ("popularity", "item-cf") if baselines else ():
        start = time.perf_counter()
        r = rt("baseline", "--rule", rule, "--train", seq / "train_sequences", "--history", seq / "test" / "inputs",
               "--users", seq / "test" / "truth", "--k", "50", "-o", work / f"recalls_{rule}")
        rows.append({"method": rule, "seconds": round(time.perf_counter() - start, 1),
                     **evaluate(Path(r), seq, work / f"eval_{rule}")})
        log(f"{name}: {rows[-1]}")
    for model in models:
        cfg_path = work / f"{model}.yaml"
        cfg_path.write_text(yaml.safe_dump(config(seq, work / model, model, n_items, epochs)))
        start = time.perf_counter()
        m = rt("train", "--config", cfg_path)
        train_s = time.perf_counter() - start
        ex = rt("export", "--model-dir", m, "--export-dir", work / f"{model}_export")
        emb = rt("embed", "--model", ex, "--items", seq / "items", "-o", work / f"{model}_emb")
        r = rt("retrieve", "--method", "brute", "--model", ex, "--items", emb, "--users", seq / "test" / "inputs",
               "--topk", "50", "-o", work / f"recalls_{model}")
        rows.append({"method": model, "epochs": epochs, "train_seconds": round(train_s, 1),
                     **evaluate(Path(r), seq, work / f"eval_{model}")})
        log(f"{name}: {rows[-1]}")
    return {"exclusion": "the user's training items", "targets": TARGETS[name], "items": n_items,
            "peers": PEERS[name], "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default=",".join(SPLITS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--models", default="two_tower,mind")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()
    root = _shared_data()
    if root is None:
        raise SystemExit("bench_retrieval_quality: ../shared/data not found (set RECTOOL_SHARED_DATA)")
    results = {}
    for name in args.datasets.split(","):
        src = root / SPLITS[name]
        if not src.is_dir():
            log(f"{name}: not in {root}, skipped")
            continue
        results[name] = run_dataset(name, src, args.epochs, args.models.split(","), not args.no_baselines)
    emit("retrieval_quality" + ("" if set(SPLITS) <= set(results) else "_" + "_".join(results)), results)


if __name__ == "__main__":
    main()
