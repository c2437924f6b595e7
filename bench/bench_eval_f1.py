"""Benchmark ``rectool eval-f1``: a 20-threshold x 10-top-K scan over 10M predictions.

Data (generated here, cached in bench/.data/eval_f1): 10M prediction rows (20k users,
random scores, 1% duplicate pairs) and 50k true pairs, a fifth of them predicted.

Measured in one run, each as its own process (wall time, peak RSS):
  rectool   rectool eval-f1 --topk-list (10 values) --threshold-list (20 values)
            (one sort + cumulative hit counts)                 -> target: seconds
  pandas    the loop notebooks write: dedup, then for each (K, threshold) filter, take the
            top K, merge with the true pairs. It runs the 10 top-K values at one threshold
            (10 of the 200 combinations); the JSON keeps its seconds per combination.

    python bench/bench_eval_f1.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import sys

from common import DATA, PY, RECTOOL, best_of, emit, log, run_measured

THRESHOLDS = ",".join(f"{t / 20:.2f}" for t in range(20))
TOPKS = "10000,25000,50000,75000,100000,200000,500000,1000000,5000000,all"


def make_data(rows: int) -> tuple:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = DATA / "eval_f1"
    pred, truth = folder / f"pred_{rows}.parquet", folder / "truth.csv"
    if pred.exists() and truth.exists():
        return pred, truth
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    users = rng.integers(1, 20_001, rows)
    items = rng.integers(1, 4_000_000, rows)
    dup = rng.random(rows) < 0.01
    items[dup] = np.roll(items, 1)[dup]
    users[dup] = np.roll(users, 1)[dup]
    pq.write_table(pa.table({"user_id": users, "item_id": items,
                             "score": rng.random(rows).astype(np.float32)}), pred)
    hit = rng.choice(rows, 10_000, replace=False)
    tu = np.concatenate([users[hit], rng.integers(1, 20_001, 40_000)])
    ti = np.concatenate([items[hit], rng.integers(1, 4_000_000, 40_000)])
    truth.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u, i in zip(tu, ti, strict=True)))
    return pred, truth


def pandas_loop(pred: str, truth: str) -> None:
    """The reference: one merge per (top-K, threshold) combination."""
    import pandas as pd

    p = pd.read_parquet(pred).groupby(["user_id", "item_id"], as_index=False)["score"].max()
    p = p.sort_values("score", ascending=False)
    t = pd.read_csv(truth).drop_duplicates()
    for k in [int(x) for x in TOPKS.split(",") if x != "all"] + [len(p)]:
        top = p[p["score"] >= 0.0].head(k)
        hits = len(top.merge(t, on=["user_id", "item_id"]))
        precision, recall = hits / max(len(top), 1), hits / len(t)
        _ = 2 * precision * recall / (precision + recall) if hits else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    pred, truth = make_data(args.rows)
    out = DATA / "eval_f1" / "scan"
    res = {}
    log("rectool eval-f1")
    res["rectool"] = best_of(args.repeat, RECTOOL + ["eval-f1", "--pred-path", str(pred), "--label-path", str(truth),
                                                     "--topk-list", TOPKS, "--threshold-list", THRESHOLDS,
                                                     "-o", str(out), "--overwrite", "-q"])
    log("pandas loop of merges (10 combinations)")
    res["pandas_10_combos"] = run_measured([PY, __file__, "--pandas", str(pred), str(truth)])
    for r in res.values():
        r.pop("stdout", None)
    summary = {"rows": args.rows, "combinations": 200, "rectool_s": res["rectool"]["seconds"],
               "rectool_peak_rss_mb": res["rectool"]["peak_rss_mb"],
               "pandas_s_for_10_combinations": res["pandas_10_combos"]["seconds"],
               "target": "200 combinations over 10M predictions in seconds"}
    emit("eval_f1", {"summary": summary, "runs": res})


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--pandas":
        pandas_loop(sys.argv[2], sys.argv[3])
    else:
        main()
