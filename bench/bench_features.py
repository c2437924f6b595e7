"""Benchmark ``rectool features`` + ``rectool dataset`` at full Tianchi scale against pandas.

Data: the generated full-scale log of ``bench_convert.py`` (23.3M rows, 20k users, 4.76M
items; cached in bench/.data), converted once (not timed). Then, each as its own process
(wall time, peak RSS), in the same run:

  rectool   rectool features (3 cut-offs, item subset P)  +  rectool dataset (2 label days,
            the predict day)                   -> targets: >= 5x pandas, peak RSS < 4 GB,
                                                  features < 2 min on 2 cores
  pandas    bench/ref_features.py: the same candidates and a subset of the features, the
            straightforward pandas way (whole log in a DataFrame, groupby per window)

Afterwards (not timed) the rule baselines are scored: on the eval day against the
dataset's labels, and on the hidden target day against synth's truth file.

    python bench/bench_features.py [--rows 23291027] [--threads 2] [--skip-pandas]
"""

from __future__ import annotations

import argparse
import json
import shutil

from common import DATA, PY, RECTOOL, ROOT, best_of, emit, log, run_measured

LABEL_DAYS, PREDICT_DAY = "2014-12-17,2014-12-18", "2014-12-19"
CUTOFFS = f"{LABEL_DAYS},{PREDICT_DAY}"


def prepare(rows: int, users: int) -> tuple:
    raw = DATA / f"tianchi_{rows}"
    src = raw / "offline" / "tianchi_fresh_comp_train_user.csv"
    if not src.exists():
        log(f"generating {rows:,} rows into {raw}")
        n_items = max(1000, int(4_758_484 * rows / 23_291_027))
        run_measured(RECTOOL + ["synth", "--output", str(raw), "--users", str(users), "--items", str(n_items),
                                "--categories", "9557", "--rows", str(rows), "--layout", "offline", "--overwrite",
                                "-q"])
    events, items = DATA / f"events_{rows}", DATA / f"items_{rows}"
    if not (events / "_meta.json").exists():
        log("converting the log (not timed)")
        run_measured(RECTOOL + ["convert", str(src), "-o", str(events), "--overwrite", "-q"])
    if not (items / "_meta.json").exists():
        item_file = raw / "offline" / "tianchi_fresh_comp_train_item.csv"
        run_measured(RECTOOL + ["convert", "-f", "tianchi-item", str(item_file), "-o", str(items), "--overwrite", "-q"])
    return raw, events, items


def rule_f1(raw, samples, work) -> dict:
    """Best F1 of each rule on the eval day (dataset labels) and on the target day (synth's truth)."""
    out = {}
    for rule in ("cart-last-day", "weighted-recency"):
        for split, labels in (("eval", samples / "eval"), ("predict", raw / "truth" / "next_day_purchases.csv")):
            pred = work / f"pred_{rule}_{split}"
            run_measured(RECTOOL + ["baseline", "--samples", str(samples / split), "--rule", rule, "-o", str(pred),
                                    "--overwrite", "-q"])
            run_measured(RECTOOL + ["eval-f1", "--pred-path", str(pred), "--label-path", str(labels),
                                    "-o", str(work / f"f1_{rule}_{split}"), "--overwrite", "-q"])
            meta = json.loads((work / f"f1_{rule}_{split}" / "_meta.json").read_text())
            out[f"{rule} {split}"] = {"f1": round(meta["best"]["f1"], 4), "n_pred": meta["best"]["n_pred"],
                                      "true_pairs": meta["true_pairs"], "days": meta["label_days"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=23_291_027)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads (the target machine has 2 cores)")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-pandas", action="store_true")
    args = ap.parse_args()
    raw, events, items = prepare(args.rows, args.users)
    work = DATA / "features_out"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    limits = ["--threads", str(args.threads), "--memory-limit", args.memory_limit]
    res: dict = {}
    log("rectool features")
    res["rectool_features"] = best_of(args.repeat, RECTOOL + [
        "features", "--events", str(events), "--items", str(items), "--cutoffs", CUTOFFS, "-o", str(work / "feat"),
        "--overwrite", "-q", *limits])
    log("rectool dataset")
    res["rectool_dataset"] = best_of(args.repeat, RECTOOL + [
        "dataset", "--events", str(events), "--features", str(work / "feat"), "--items", str(items),
        "--label-days", LABEL_DAYS, "--predict-day", PREDICT_DAY, "-o", str(work / "samples"), "--overwrite", "-q",
        *limits])
    if not args.skip_pandas:
        log("pandas reference")
        res["pandas"] = run_measured([PY, str(ROOT / "bench" / "ref_features.py"), str(events), str(items),
                                      str(work / "pandas"), LABEL_DAYS, PREDICT_DAY])
    for r in res.values():
        r.pop("stdout", None)
    log("rule baselines")
    f1 = rule_f1(raw, work / "samples", work)
    meta = json.loads((work / "samples" / "_meta.json").read_text())
    rt = res["rectool_features"]["seconds"] + res["rectool_dataset"]["seconds"]
    summary = {
        "rows": args.rows, "threads": args.threads, "memory_limit": args.memory_limit,
        "rectool_features_s": res["rectool_features"]["seconds"],
        "rectool_dataset_s": res["rectool_dataset"]["seconds"],
        "rectool_total_s": round(rt, 2),
        "rectool_cpu_s": round(res["rectool_features"]["cpu_s"] + res["rectool_dataset"]["cpu_s"], 2),
        "rectool_peak_rss_mb": max(res["rectool_features"]["peak_rss_mb"], res["rectool_dataset"]["peak_rss_mb"]),
        "samples": meta["rows"], "feature_columns": len(meta["feature_columns"]),
        "recall_ceiling": meta["recall_ceiling"],
        "rule_f1": f1,
        "targets": {"speed_vs_pandas": ">= 5", "peak_rss_mb": "< 4096", "features_s": "< 120 on 2 cores"},
    }
    if "pandas" in res:
        summary.update(pandas_s=res["pandas"]["seconds"], pandas_cpu_s=res["pandas"]["cpu_s"],
                       pandas_peak_rss_mb=res["pandas"]["peak_rss_mb"],
                       speed_vs_pandas=round(res["pandas"]["seconds"] / rt, 2))
    emit("features", {"summary": summary, "runs": res})


if __name__ == "__main__":
    main()
