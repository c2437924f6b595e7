"""Benchmark ``--nproc 2`` against ``--nproc 1`` on one machine: train, embed and exact retrieval.

The reference is rectool itself on one process, measured in the same run on the same data:

- ``train``: DeepFM on the 1M-row CTR table of ``bench/bench_train.py`` (made by
  ``../shared/bench/peers/bench_ctr_peers.py``; same config), one epoch; samples/s of the
  training loop (metrics.jsonl), wall and CPU seconds of the whole command.
- ``embed``: a two-tower export whose item table has 1,000,000 items (trained a few steps on
  generated sequences: the speed, not the quality, is measured), every item embedded.
- ``retrieve --method brute``: 10,000 users x the 1,000,000 item vectors, top 200.

    python bench/bench_distributed.py [--rows 1000000] [--items 1000000] [--users 10000]

On a 2-core machine the processes share the cores a single process already uses, so the
efficiency (speed-up / processes) measures the cost of the distributed path (gloo all-reduce,
sharded reading and the merge), not a gain; on more cores and machines the same commands
scale out. CPU seconds include every worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from bench_train import rectool_config
from common import DATA, PY, RECTOOL, ROOT, emit, log, run_measured

PEERS_DIR = ROOT.parent / "shared" / "bench" / "peers"


def ctr_table(rows: int) -> tuple[dict, Path]:
    data_dir = DATA / f"ctr_{rows}"
    if not (data_dir / "meta.json").is_file():
        log(f"generating the CTR table ({rows:,} rows) with bench_ctr_peers.py")
        # the generator reports the table's Bayes AUC with scikit-learn, which only the peers' env has:
        # outside it, rectool's own AUC (train/metrics.py) stands in for roc_auc_score
        shim = DATA / "sklearn_shim" / "sklearn"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "__init__.py").write_text("")
        (shim / "metrics.py").write_text(
            "import numpy as np\nfrom rectool.train.metrics import gauc\n\n\n"
            "def roc_auc_score(y, p):\n    y = np.asarray(y)\n"
            "    return gauc(np.asarray(p, dtype=np.float64), y, np.zeros(len(y), dtype=np.int64))\n")
        env = {**os.environ, "PYTHONPATH": str(shim.parent)}
        subprocess.run([PY, str(PEERS_DIR / "bench_ctr_peers.py"), "--rows", str(rows), "--data-dir", str(data_dir),
                        "--peers", ""], check=True, capture_output=True, env=env)
    return json.loads((data_dir / "meta.json").read_text()), data_dir


def bench_train(rows: int, work: Path) -> list[dict]:
    meta, data_dir = ctr_table(rows)
    results = []
    for nproc in (1, 2):
        model_dir = work / f"deepfm_{nproc}"
        shutil.rmtree(model_dir, ignore_errors=True)
        cfg = rectool_config(meta, data_dir, model_dir, "sparse_adam", "auto")
        path = work / f"deepfm_{nproc}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log(f"train --nproc {nproc}")
        run = run_measured(RECTOOL + ["train", "--config", str(path), "--quiet", "--nproc", str(nproc),
                                      "--device", "cpu"])
        lines = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
        last_train = [x for x in lines if x["kind"] == "train"][-1]
        last_eval = [x for x in lines if x["kind"] == "eval"][-1]
        results.append({"stage": "train", "nproc": nproc, "samples_per_s": round(last_train["samples_per_s"], 1),
                        "auc": round(last_eval["auc"], 4), "wall_s": run["seconds"], "cpu_s": run["cpu_s"],
                        "peak_rss_mb": run["peak_rss_mb"]})
    return results


def tower_export(items: int, work: Path) -> tuple[Path, Path, Path]:
    """A two-tower export over ``items`` items, the item table and a table of 10,000+ users."""
    rng = np.random.default_rng(0)
    root = work / f"tower_{items}"
    if (root / "export" / "_meta.json").is_file():
        return root / "export", root / "items", root / "users"
    shutil.rmtree(root, ignore_errors=True)
    for d in ("train", "items", "users"):
        (root / d).mkdir(parents=True)
    n = 50_000
    hist = pa.array([list(rng.integers(0, items, 10)) for _ in range(n)], pa.list_(pa.int64()))
    table = pa.table({"user_id": np.arange(n, dtype=np.int64), "hist_item_ids": hist,
                      "item_id": rng.integers(0, items, n)})
    pq.write_table(table, root / "train" / "part-0.parquet")
    pq.write_table(table.slice(0, 20_000).select(["user_id", "hist_item_ids"]), root / "users" / "part-0.parquet",
                   row_group_size=2_000)
    pq.write_table(pa.table({"item_id": np.arange(items, dtype=np.int64)}), root / "items" / "part-0.parquet",
                   row_group_size=65_536)
    cfg = {"data": {"train_input": str(root / "train"), "batch_size": 1024, "num_workers": 0, "label": None},
           "features": [{"name": "hist", "kind": "sequence", "input": "hist_item_ids", "max_len": 10,
                         "num_buckets": items, "embedding_dim": 32, "embedding_name": "item", "combiner": "mean"},
                        {"name": "item_id", "kind": "id", "num_buckets": items, "embedding_dim": 32,
                         "embedding_name": "item"}],
           "feature_groups": {"user": ["hist"], "item": ["item_id"]},
           "model": {"type": "two_tower", "output_dim": 32, "user_tower": {"hidden_units": [64]}},
           "train": {"model_dir": str(root / "model"), "max_steps": 20, "log_every": 10}}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    subprocess.run(RECTOOL + ["train", "-c", str(root / "c.yaml"), "-q"], check=True, capture_output=True)
    subprocess.run(RECTOOL + ["export", "--model-dir", str(root / "model"), "--export-dir", str(root / "export"),
                              "-q"], check=True, capture_output=True)
    return root / "export", root / "items", root / "users"


def bench_inference(items: int, users: int, work: Path) -> list[dict]:
    export, item_table, user_table = tower_export(items, work)
    users_dir = work / f"users_{users}"
    if not users_dir.is_dir():
        users_dir.mkdir()
        pq.write_table(pq.read_table(user_table).slice(0, users), users_dir / "part-0.parquet",
                       row_group_size=max(1, users // 8))
    results = []
    for nproc in (1, 2):
        emb = work / f"emb_{nproc}"
        shutil.rmtree(emb, ignore_errors=True)
        log(f"embed --nproc {nproc}")
        run = run_measured(RECTOOL + ["embed", "--model", str(export), "--items", str(item_table), "-o", str(emb),
                                      "--nproc", str(nproc), "--device", "cpu", "-q"])
        results.append({"stage": "embed", "nproc": nproc, "items": items, "wall_s": run["seconds"],
                        "cpu_s": run["cpu_s"], "items_per_s": round(items / run["seconds"], 1),
                        "peak_rss_mb": run["peak_rss_mb"]})
    for nproc in (1, 2):
        out = work / f"recalls_{nproc}"
        shutil.rmtree(out, ignore_errors=True)
        log(f"retrieve --method brute --nproc {nproc}")
        run = run_measured(RECTOOL + ["retrieve", "--method", "brute", "--model", str(export), "--items",
                                      str(work / "emb_1"), "--users", str(users_dir), "--topk", "200",
                                      "--keep-seen", "-o", str(out), "--nproc", str(nproc), "--device", "cpu",
                                      "-q"])
        results.append({"stage": "retrieve brute", "nproc": nproc, "users": users, "items": items,
                        "wall_s": run["seconds"], "cpu_s": run["cpu_s"],
                        "users_per_s": round(users / run["seconds"], 1), "peak_rss_mb": run["peak_rss_mb"]})
    # the same users and items; the user tower runs on other batch compositions, so scores may differ in
    # the last float bits (BLAS picks kernels by batch size) and near-tied items swap places
    one, two = pq.read_table(work / "recalls_1"), pq.read_table(work / "recalls_2")
    s1, s2 = (np.array(t.column("scores").to_pylist(), dtype=np.float64) for t in (one, two))
    i1, i2 = (np.array(t.column("item_ids").to_pylist()) for t in (one, two))
    results.append({"stage": "retrieve brute", "compare": "nproc 2 vs 1",
                    "users_equal": one.column("user_id").equals(two.column("user_id")),
                    "max_abs_score_diff": float(np.abs(s1 - s2).max()),
                    "share_of_items_in_other_place": round(float((i1 != i2).mean()), 6),
                    "share_of_items_not_in_other_list": round(float(np.mean([len(set(a) - set(b)) / len(a)
                                                                              for a, b in zip(i1, i2)])), 6)})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=10_000)
    args = ap.parse_args()
    work = DATA / "distributed_bench"
    work.mkdir(parents=True, exist_ok=True)
    results = bench_train(args.rows, work) + bench_inference(args.items, args.users, work)
    summary = {}
    for stage, key in (("train", "samples_per_s"), ("embed", "items_per_s"), ("retrieve brute", "users_per_s")):
        one, two = ([r for r in results if r["stage"] == stage and r.get("nproc") == n][0] for n in (1, 2))
        summary[stage] = {"speedup_2_vs_1": round(two[key] / one[key], 3),
                          "efficiency": round(two[key] / one[key] / 2, 3),
                          "cpu_s_ratio": round(two["cpu_s"] / one["cpu_s"], 3)}
    emit("distributed", {"summary": summary, "results": results})


if __name__ == "__main__":
    main()
