"""``rectool embed`` throughput on 1M items, against the item tower alone on preloaded tensors.

A two-tower model whose item tower reads ``item_id`` (1M + 1 buckets, dim 64) and
``category_id`` (1,000 buckets, dim 16) through an MLP [128] to 64-d outputs is trained
for a few steps on generated sequences (only to have a checkpoint), exported, and
``rectool embed`` runs it over a 1M-item parquet table (read, batches, the exported
program, ``item_emb`` fixed-size lists written atomically). The reference, in the same
run: the same exported program called on the same batches already in memory (the
compute limit of the model; no parquet read or write).

    python bench/bench_embed.py [--items 1000000] [--batch-size 65536]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from common import DATA, RECTOOL, emit, log, run_measured


def write_data(work: Path, n_items: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    items = work / "items"
    items.mkdir(parents=True, exist_ok=True)
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    pq.write_table(pa.table({"item_id": ids, "category_id": rng.integers(0, 1000, n_items)}),
                   items / "part-0.parquet", row_group_size=131_072)
    train = work / "train"
    train.mkdir(parents=True, exist_ok=True)
    rows = 20_000
    lengths = rng.integers(1, 20, rows)
    hist = pa.ListArray.from_arrays(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32),
                                    rng.integers(1, n_items + 1, int(lengths.sum())))
    pq.write_table(pa.table({"hist_item_ids": hist, "item_id": rng.integers(1, n_items + 1, rows),
                             "category_id": rng.integers(0, 1000, rows)}), train / "part-0.parquet")
    return items, train


def config(train: Path, model_dir: Path, n_items: int) -> dict:
    feats = [{"name": "hist_items", "kind": "sequence", "input": "hist_item_ids", "max_len": 20,
              "num_buckets": n_items + 1, "embedding_dim": 64, "embedding_name": "item", "combiner": "mean"},
             {"name": "item_id", "kind": "id", "num_buckets": n_items + 1, "embedding_dim": 64,
              "embedding_name": "item"},
             {"name": "category_id", "kind": "id", "num_buckets": 1000, "embedding_dim": 16}]
    return {"data": {"train_input": str(train), "batch_size": 1024, "label": None}, "features": feats,
            "feature_groups": {"user": ["hist_items"], "item": ["item_id", "category_id"]},
            "model": {"type": "two_tower", "output_dim": 64, "user_tower": {"hidden_units": [128]},
                      "item_tower": {"hidden_units": [128]}},
            "train": {"model_dir": str(model_dir), "max_steps": 5, "log_every": 5}}


def model_only(export: Path, items: Path, batch_size: int) -> float:
    """Seconds for the exported item tower over every item, batches preloaded as tensors."""
    import torch

    from rectool.programs.load import load_program

    program, _ = load_program(export, "item_tower")
    table = pq.read_table(items)
    ids = torch.from_numpy(table["item_id"].to_numpy())
    cats = torch.from_numpy(table["category_id"].to_numpy())
    batches = [{"item_id": ids[a:a + batch_size], "category_id": cats[a:a + batch_size]}
               for a in range(0, len(ids), batch_size)]
    with torch.inference_mode():
        program(batches[0])
        start = time.perf_counter()
        for b in batches:
            program(b)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=65_536)
    args = ap.parse_args()
    work = DATA / f"embed_{args.items}"
    shutil.rmtree(work, ignore_errors=True)
    items, train = write_data(work, args.items)
    cfg = work / "two_tower.yaml"
    cfg.write_text(yaml.safe_dump(config(train, work / "model", args.items)))
    log("train (5 steps) + export")
    run_measured(RECTOOL + ["train", "--config", str(cfg), "--quiet"])
    run_measured(RECTOOL + ["export", "--model-dir", str(work / "model"), "--export-dir", str(work / "export"),
                            "--quiet"])
    log("embed")
    run = run_measured(RECTOOL + ["embed", "--model", str(work / "export"), "--items", str(items),
                                  "--output", str(work / "emb"), "--batch-size", str(args.batch_size), "--quiet"])
    meta = json.loads((work / "emb" / "_meta.json").read_text())
    one = work / "one_item"  # the fixed cost of a process: imports, loading the program, writing a table
    one.mkdir()
    pq.write_table(pq.read_table(items).slice(0, 1), one / "part-0.parquet")
    fixed = run_measured(RECTOOL + ["embed", "--model", str(work / "export"), "--items", str(one),
                                    "--output", str(work / "emb_one"), "--quiet"])["seconds"]
    log("model only")
    limit = model_only(work / "export", items, args.batch_size)
    emit("embed", {"items": args.items, "rows_written": meta["rows"], "batch_size": args.batch_size,
                   "embed_process_s": run["seconds"], "embed_items_per_s": round(args.items / run["seconds"], 1),
                   "embed_peak_rss_mb": run["peak_rss_mb"], "one_item_process_s": fixed,
                   "embed_items_per_s_after_startup": round(args.items / max(run["seconds"] - fixed, 1e-9), 1),
                   "model_only_s": round(limit, 3),
                   "model_only_items_per_s": round(args.items / limit, 1),
                   "embed_after_startup_vs_model_only": round(limit / max(run["seconds"] - fixed, 1e-9), 3)})


if __name__ == "__main__":
    main()
