"""``retrieve --method hnsw`` with the item-to-item terms against ``--method brute`` with the same terms.

Issue 18: the retrieve-time terms (``--item-to-item``, ``--item-similarity``, ``--repeat-bonus``)
must run on an index, since brute force cannot at 4M items, and keep >= 99% of brute force's
recall@20. Here, on the given splits of ``bench_retrieval_quality.py`` (amazon-cds,
taobao-multibehavior), one two-tower model per dataset (mean pooling, linear user tower,
temperature 0.1, ``--targets set``: the recipe of BENCHMARKS.md at a smaller width and fewer
epochs, since the comparison is of the search, not the model) is exported, embedded and indexed
(``hnsw build --space ip``); both searches run with the taobao terms (both weights 0.35,
temperature 0.05; taobao also the repeat bonus) for the same test users, and ``eval-topk
--brute-path`` gives recall-Δ and coverage of brute force's top-K.

    python bench/bench_mix_hnsw.py [--datasets amazon-cds,taobao-multibehavior] [--users 5000]
        [--candidates 20,50] [--dim 128] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml
from bench_baselines import _shared_data
from bench_retrieval_quality import DATASETS, _n_items, apply_overrides, build_split, config, rt
from common import DATA, emit, log

TERMS = ["--item-to-item", "0.35", "--item-similarity", "0.35", "--item-to-item-temperature", "0.05",
         "--repeat-column", "hist_item_ids"]


def sample_users(seq: Path, out: Path, n: int) -> tuple[Path, Path]:
    """A seeded sample of ``n`` test users: their input rows and their truth rows (all users when fewer)."""
    table = pads.dataset(seq / "test" / "inputs").to_table()
    if table.num_rows > n:
        table = table.take(np.sort(np.random.default_rng(7).choice(table.num_rows, n, replace=False)))
    truth = pads.dataset(seq / "test" / "truth").to_table()
    truth = truth.filter(pc.is_in(truth["user_id"], table["user_id"]))
    for name, part in (("users", table), ("truth", truth)):
        (out / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(part, out / name / "part-0.parquet")
    return out / "users", out / "truth"


def evaluate(recalls: str, truth: Path, out: Path, k: int, brute: str | None = None) -> dict:
    extra = ["--brute-path", brute] if brute else []
    rt("eval-topk", "--recall-path", recalls, "--truth-path", truth, "--k-list", k,
       "--output", out, "--overwrite", *extra)
    row = json.loads((out / "metrics.json").read_text())["metrics"][str(k)]
    meta = json.loads((Path(recalls) / "_meta.json").read_text())
    return {"mean_scored": round(meta.get("mean_scored_per_user") or 0, 1),
            **{f"{m}@{k}": round(row[m], 4) for m in ("recall", "hit_rate", "recall_brute", "recall_delta",
                                                       "coverage_brute") if m in row}}


def run_dataset(name: str, src: Path, n_users: int, candidates: list[int], dim: int, epochs: int) -> dict:
    spec = DATASETS[name]
    work = DATA / "mix_hnsw" / name
    work.mkdir(parents=True, exist_ok=True)
    seq = build_split(name, spec, src, work, "test")
    k = spec["k"][-1]
    cfg = apply_overrides(config(seq, work / "model", "two_tower", _n_items(seq), epochs),
                          {"embedding_dim": dim, "model.history_pooling": "mean", "model.user_tower.hidden_units": [],
                           "model.loss.temperature": 0.1})
    (work / "model.yaml").write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    model = rt("train", "--config", work / "model.yaml")
    train_s = round(time.perf_counter() - start, 1)
    ex = rt("export", "--model-dir", model, "--export-dir", work / "export", "--overwrite")
    emb = rt("embed", "--model", ex, "--items", seq / "items", "-o", work / "emb", "--overwrite")
    index = rt("hnsw", "build", "--input", emb, "--space", "ip", "-o", work / "index", "--overwrite")
    users, truth = sample_users(seq, work, n_users)
    terms = TERMS + (["--repeat-bonus", "1.0"] if spec["layout"] == "taobao" else [])
    rows = []
    for label, extra in (("u·v only", []), ("with the terms", terms)):
        start = time.perf_counter()
        brute = rt("retrieve", "--method", "brute", "--model", ex, "--items", emb, "--users", users, "--topk", k,
                   *extra, "-o", work / f"brute_{len(rows)}", "--overwrite")
        rows.append({"search": f"brute, {label}", "seconds": round(time.perf_counter() - start, 1),
                     **evaluate(brute, truth, work / f"eval_brute_{len(rows)}", k)})
        log(f"{name}: {rows[-1]}")
        for c in candidates if extra else [None]:
            flags = extra + (["--mix-candidates", c] if c else [])
            start = time.perf_counter()
            found = rt("retrieve", "--method", "hnsw", "--model", ex, "--index", index, "--users", users,
                       "--topk", k, "--ef", 200, *flags, "-o", work / f"hnsw_{len(rows)}", "--overwrite")
            rows.append({"search": f"hnsw ef 200, {label}" + (f", {c} candidates per history view" if c else ""),
                         "seconds": round(time.perf_counter() - start, 1),
                         **evaluate(found, truth, work / f"eval_hnsw_{len(rows)}", k, brute)})
            log(f"{name}: {rows[-1]}")
    return {"users": n_users, "k": k, "model": {"dim": dim, "epochs": epochs, "train_seconds": train_s},
            "terms": " ".join(map(str, terms)), "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="amazon-cds,taobao-multibehavior")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--candidates", default="20,50")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    root = _shared_data()
    if root is None:
        raise SystemExit("bench_mix_hnsw: ../shared/data not found (set RECTOOL_SHARED_DATA)")
    results = {name: run_dataset(name, root / DATASETS[name]["dir"], args.users,
                                 [int(c) for c in args.candidates.split(",")], args.dim, args.epochs)
               for name in args.datasets.split(",")}
    emit("mix_hnsw", results)


if __name__ == "__main__":
    main()
