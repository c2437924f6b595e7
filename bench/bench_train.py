"""Benchmark ``rectool train`` (DeepFM) against torch-rechub, deepctr-torch and a plain PyTorch loop.

The same generated CTR table for everyone, in the same run: ``../shared/bench/peers/bench_ctr_peers.py``
makes it (1M rows: 26 Zipf categorical fields, 13 dense, labels from a known logistic model;
90% train) and runs the peers, each in its own process, from the peers' own virtual env.
rectool trains the same architecture (embedding dim 16 for every field, FM, MLP 256-128 with
BatchNorm, Adam lr 1e-3, batch 4096, one epoch) streaming from the parquet file, with its
defaults (lazy Adam on the embedding tables, loader workers chosen from the cores) and with
dense Adam on everything.

    python bench/bench_train.py [--rows 1000000] [--peers torch_ref,torch_ref_fused,rechub_prebatched,...]

Targets: rectool >= the plain loop's samples/s (>= 1.5x torch-rechub) at the same AUC (+-0.003).
The peers' environment: ``VENV=bench/.peer-venv bash ../shared/bench/peers/setup_peer_venv.sh``
(``make bench`` does it), or ``--peer-python`` to use another.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import yaml
from common import DATA, RECTOOL, ROOT, emit, log, run_measured

PEERS_DIR = ROOT.parent / "shared" / "bench" / "peers"
DEFAULT_PEERS = "torch_ref,torch_ref_fused,rechub_prebatched,rechub_parquet,deepctr"


def peer_python(given: str | None) -> str:
    for cand in [given, str(ROOT / "bench" / ".peer-venv" / "bin" / "python"), "/work/peer-venv/bin/python"]:
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("no peer environment: run VENV=bench/.peer-venv bash ../shared/bench/peers/setup_peer_venv.sh")


def rectool_config(meta: dict, data_dir: Path, model_dir: Path, sparse: str, workers: int | str) -> dict:
    feats = [{"name": c, "kind": "id", "num_buckets": v, "embedding_dim": 16}
             for c, v in zip(meta["sparse_cols"], meta["vocab_sizes"])]
    feats += [{"name": c, "kind": "raw"} for c in meta["dense_cols"]]
    return {
        "data": {"train_input": str(data_dir / "train.parquet"), "eval_input": str(data_dir / "test.parquet"),
                 "label": "label", "batch_size": 4096, "eval_batch_size": 65536, "num_workers": workers,
                 "shuffle_buffer": 262144},
        "features": feats,
        "feature_groups": {"deep": [f["name"] for f in feats]},
        "model": {"type": "deepfm", "deep": {"hidden_units": [256, 128], "batch_norm": True}},
        "optimizer": {"dense": {"type": "adam", "lr": 1e-3}, "sparse": {"type": sparse, "lr": 1e-3}},
        "train": {"model_dir": str(model_dir), "epochs": 1, "log_every": 1000, "seed": 2024},
        "eval": {"metrics": ["auc", "logloss"]},
    }


def run_rectool(meta: dict, data_dir: Path, work: Path, name: str, sparse: str, workers: int | str) -> dict:
    model_dir = work / name
    shutil.rmtree(model_dir, ignore_errors=True)
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(rectool_config(meta, data_dir, model_dir, sparse, workers)))
    run = run_measured(RECTOOL + ["train", "--config", str(cfg_path), "--quiet"])
    lines = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    last_train = [x for x in lines if x["kind"] == "train"][-1]
    last_eval = [x for x in lines if x["kind"] == "eval"][-1]
    return {"peer": name, "samples_per_s": round(last_train["samples_per_s"], 1), "auc": round(last_eval["auc"], 4),
            "peak_rss_mb": run["peak_rss_mb"], "process_s": run["seconds"], "steps": last_train["step"],
            "sparse_optimizer": sparse, "loader_workers": workers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--peers", default=DEFAULT_PEERS)
    ap.add_argument("--peer-python", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    py = peer_python(args.peer_python)
    data_dir = DATA / f"ctr_{args.rows}"
    script = str(PEERS_DIR / "bench_ctr_peers.py")
    log(f"peers ({args.peers}) on {args.rows:,} rows, data in {data_dir}")
    proc = subprocess.run([py, script, "--rows", str(args.rows), "--data-dir", str(data_dir), "--peers", args.peers,
                           "--threads", str(args.threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    peers = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = json.loads((data_dir / "meta.json").read_text())
    work = DATA / "train_bench"
    work.mkdir(parents=True, exist_ok=True)
    results = [{k: r.get(k) for k in ("peer", "samples_per_s", "auc", "peak_rss_mb", "train_s")}
               for r in peers["results"]]
    # rectool's defaults (lazy Adam on the tables, loader workers chosen from the cores), then dense Adam
    for name, sparse, workers in [("rectool", "sparse_adam", "auto"), ("rectool_dense_adam", "dense", "auto")]:
        log(name)
        results.append(run_rectool(meta, data_dir, work, name, sparse, workers))
    by = {r["peer"]: r for r in results}
    rt = by["rectool"]
    rechub = max((r for r in results if r["peer"].startswith("rechub")), key=lambda r: r["samples_per_s"] or 0,
                 default=None)
    summary = {"rows": args.rows, "bayes_auc": meta.get("bayes_auc_test")}
    if "torch_ref" in by:
        summary["speed_vs_plain_loop"] = round(rt["samples_per_s"] / by["torch_ref"]["samples_per_s"], 3)
        summary["auc_minus_plain_loop"] = round(rt["auc"] - by["torch_ref"]["auc"], 4)
    if "torch_ref_fused" in by:
        summary["speed_vs_plain_loop_fused_adam"] = round(rt["samples_per_s"] / by["torch_ref_fused"]["samples_per_s"],
                                                          3)
    if rechub is not None:
        summary["speed_vs_best_rechub"] = round(rt["samples_per_s"] / rechub["samples_per_s"], 3)
        summary["best_rechub"] = rechub["peer"]
    if "deepctr" in by:
        summary["speed_vs_deepctr"] = round(rt["samples_per_s"] / by["deepctr"]["samples_per_s"], 3)
    summary["targets"] = {"speed_vs_plain_loop": ">= 1.0", "speed_vs_best_rechub": ">= 1.5", "auc": "+-0.003"}
    emit("train", {"summary": summary, "results": results, "peer_machine": peers.get("machine"),
                   "contention_cpu_s": peers.get("other_cpu_s_total")})


if __name__ == "__main__":
    main()
