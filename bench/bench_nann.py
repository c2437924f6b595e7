"""NANN quality and speed on generated UserBehavior data (issue 7), through the CLI end to end.

``synth --dataset userbehavior`` → ``convert`` → ``dataset --task next-item --protocol
user-split`` → ``train`` (``examples/nann_userbehavior.yaml``, bounded steps) → ``export`` →
``embed`` → ``hnsw build`` → ``retrieve --method brute`` (every item of the index scored by the
model: "recall-all") and ``retrieve --method nann`` at several widths → ``eval-topk
--brute-path`` (recall-Δ and coverage of the brute-force top-K). Each search is its own
process; users/s is from the wall time of the search itself (the ``retrieve`` summary),
so model loading is not counted for either.

    python bench/bench_nann.py                       # 200k items: recall-Δ@200 and share scored
    python bench/bench_nann.py --items 1000000 --users 40000 --tag speed_1m --brute-users 50
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml
from bench_retrieval_quality import rt as _rt
from common import DATA, ROOT, emit, log

# (ef and rounds for levels 2, 1, 0; expand): the paper's default first (every new node expanded next
# round), then best-first expansion (HNSW's search, batched) run until it converges
SETTINGS = [((100, 200, 400), (1, 1, 3), None), ((100, 200, 400), (1, 2, 6), None),
            ((50, 100, 200), (1, 100, 1000), 2), ((100, 200, 300), (1, 100, 1000), 4),
            ((100, 200, 400), (1, 100, 1000), 4), ((100, 200, 600), (1, 100, 1000), 8)]


def rt(*args: object) -> str:
    return _rt(*args) if args[0] == "train" else _rt(*args, "--overwrite")


def retrieve(*args: object) -> tuple[str, dict]:
    """``retrieve`` with its summary (users/s of the search, items scored) read from stderr's JSON-free table."""
    start = time.perf_counter()
    out = rt("retrieve", *args)
    seconds = time.perf_counter() - start
    meta = json.loads((Path(out) / "_meta.json").read_text())
    return out, {"process_s": round(seconds, 1), "search_s": meta.get("search_seconds"),
                 "mean_scored": round(meta["mean_scored_per_user"], 1), "catalogue": meta["catalogue"],
                 "share_scored": round(meta["mean_scored_per_user"] / meta["catalogue"], 4), "users": meta["rows"]}


def evaluate(recalls: str, truth: Path, out: Path, brute: str | None) -> dict:
    extra = ["--brute-path", brute] if brute else []
    rt("eval-topk", "--recall-path", recalls, "--truth-path", truth, "--k-list", "20,200", "--output", out, *extra)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    keep = ("recall", "recall_brute", "recall_delta", "coverage_brute")
    return {f"{m}@{k}": round(metrics[k][m], 4) for k in ("20", "200") for m in keep if m in metrics[k]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--categories", type=int, default=2_000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--brute-users", type=int, default=0, help="score everything for only this many test users "
                                                                "(0: all); NANN runs on the same users")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--space", default="l2")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--adv-eps", type=float, default=None)
    ap.add_argument("--hash-buckets", type=int, default=2_000_000, help="item id buckets (few collisions)")
    ap.add_argument("--tag", default="quality_200k")
    ap.add_argument("--reuse", action="store_true", help="keep data, model and index of an earlier run")
    args = ap.parse_args()
    work = DATA / "nann" / args.tag
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    seq = work / "seq"
    if not (args.reuse and (seq / "_meta.json").is_file()):
        raw = rt("synth", "--dataset", "userbehavior", "-o", work / "raw", "--users", args.users, "--items",
                 args.items, "--categories", args.categories)
        events = rt("convert", "--format", "userbehavior", *sorted(Path(raw).glob("*.csv*")), "-o", work / "events")
        rt("dataset", "--task", "next-item", "--protocol", "user-split", "--events", events, "--n-test", args.n_test,
           "--n-valid", 0, "--max-history", 30, "-o", seq)
    n_items = pads.dataset(seq / "items").count_rows()
    log(f"{n_items} items in the catalogue")
    inputs, truth = seq / "test" / "inputs", seq / "test" / "truth"
    if args.brute_users:
        table = pads.dataset(inputs).to_table().slice(0, args.brute_users)
        inputs = work / "inputs_subset"
        inputs.mkdir(exist_ok=True)
        pq.write_table(table, inputs / "part-0.parquet")
        kept = pads.dataset(truth).to_table()
        kept = kept.filter(pa.compute.is_in(kept["user_id"], value_set=table["user_id"]))
        truth = work / "truth_subset"
        truth.mkdir(exist_ok=True)
        pq.write_table(kept, truth / "part-0.parquet")
    ex = work / "export"
    train_s = None
    if not (args.reuse and ex.is_dir()):
        cfg = yaml.safe_load((ROOT / "examples" / "nann_userbehavior.yaml").read_text())
        cfg["data"].update(train_input=str(seq / "train"), eval_input=str(seq / "train"))
        cfg["train"] = {"model_dir": str(work / "model"), "epochs": 1, "max_steps": args.steps, "log_every": 200,
                        "seed": 7}
        cfg["eval"] = {"max_rows": 5000}
        for feature in cfg["features"]:
            feature["hash_bucket_size"] = args.hash_buckets
        if args.adv_eps is not None:
            cfg["model"]["adv_eps"] = args.adv_eps
        (work / "nann.yaml").write_text(yaml.safe_dump(cfg))
        shutil.rmtree(work / "model", ignore_errors=True)
        start = time.perf_counter()
        m = rt("train", "--config", work / "nann.yaml")
        train_s = round(time.perf_counter() - start, 1)
        rt("export", "--model-dir", m, "--export-dir", ex)
    emb = work / "emb"
    if not (args.reuse and emb.is_dir()):
        rt("embed", "--model", ex, "--items", seq / "items", "-o", emb)
    index = work / f"index_{args.space}_m{args.m}"
    if not (args.reuse and index.is_dir()):
        rt("hnsw", "build", "--input", emb, "--space", args.space, "--m", args.m, "-o", index)
    # warm-up on one user: numba compiles the search kernels on first use in a fresh checkout (then caches them)
    one = work / "inputs_one"
    one.mkdir(exist_ok=True)
    pq.write_table(pads.dataset(inputs).to_table().slice(0, 1), one / "part-0.parquet")
    for expand in ([], ["--expand", 4]):
        rt("retrieve", "--method", "nann", "--model", ex, "--index", index, "--users", one, "--topk", 200, *expand,
           "-o", work / "recalls_warm_up")
    brute, brute_info = retrieve("--method", "brute", "--model", ex, "--index", index, "--users", inputs,
                                 "--topk", 200, "-o", work / "recalls_brute")
    rows = [{"method": "brute force (every item scored)", **brute_info, **evaluate(brute, truth, work / "eval_brute",
                                                                                   None)}]
    log(str(rows[-1]))
    for ef, rounds, expand in SETTINGS:
        tag = "_".join(map(str, ef + rounds + (expand or 0,)))
        r, info = retrieve("--method", "nann", "--model", ex, "--index", index, "--users", inputs, "--topk", 200,
                           "--ef", ",".join(map(str, ef)), "--rounds", ",".join(map(str, rounds)),
                           *(["--expand", expand] if expand else []), "-o", work / f"recalls_nann_{tag}")
        row = {"method": f"nann ef {ef} rounds {rounds} expand {expand or 'all'}", **info,
               **evaluate(r, truth, work / f"eval_{tag}", brute)}
        if brute_info["search_s"] and info["search_s"]:
            row["speedup_vs_brute"] = round(brute_info["search_s"] / info["search_s"], 1)
        rows.append(row)
        log(str(row))
    emit(f"nann_{args.tag}", {"args": vars(args), "catalogue": n_items, "train_seconds": train_s, "runs": rows})


if __name__ == "__main__":
    main()
