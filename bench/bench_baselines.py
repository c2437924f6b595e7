"""Quality of the retrieval baselines (popularity, item-CF) on the shared real datasets,
measured by ``eval-topk`` with the full-ranking protocol of issue 5, beside the peer
figures measured on this machine with the same protocol (implicit 0.7.3).

Protocol: for each test user score every item, exclude the user's training items (taobao:
only the user's buys), take the top K; recall@K = |top-K ∩ test| / |test|; NDCG@K binary
with the ideal DCG of min(|test|, K) items; averaged over users with >= 1 test item.

    python bench/bench_baselines.py            # needs ../shared/data (skips what is absent)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from common import DATA, emit, log, shared_data

PEERS = {  # issue 5: best peer and popularity figures on this machine, same protocol
    "movielens-100k": {"best_peer": "ALS 64 factors: recall@20 0.191, NDCG@20 0.189", "popularity_recall@20": 0.097},
    "amazon-cds": {"best_peer": "item-kNN (BARS) recall@20 0.162 / NDCG@20 0.106; ALS 0.161 / 0.102",
                   "popularity_recall@20": 0.012},
    "taobao-multibehavior": {"best_peer": "implicit cosine item-kNN hit@10 0.185, hit@20 0.245",
                             "popularity_hit@20": 0.011},
}


_shared_data = shared_data  # the name the other benches import


def _user_lines(path: Path) -> tuple[list[int], list[list[int]]]:
    users, lists = [], []
    for line in open(path):
        fields = line.split()
        if fields:
            users.append(int(fields[0]))
            lists.append([int(x) for x in fields[1:]])
    return users, lists


def _pairs(*paths: Path) -> tuple[list[int], list[list[int]]]:
    by_user: dict[int, list[int]] = {}
    for path in paths:
        for line in open(path):
            fields = line.split()
            if fields:
                by_user.setdefault(int(fields[0]), []).append(int(fields[1]))
    users = sorted(by_user)
    return users, [by_user[u] for u in users]


def _write(path: Path, data: tuple[list[int], list[list[int]]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    users, lists = data
    pq.write_table(pa.table({"user_id": pa.array(users, pa.int64()),
                             "item_ids": pa.array(lists, pa.list_(pa.int64()))}), path)
    return path


def _dataset(name: str, root: Path) -> dict[str, Any] | None:
    work = DATA / "baselines" / name
    if name == "taobao-multibehavior":
        src = root / name
        if not src.is_dir():
            return None
        return {"train": _write(work / "train.parquet", _pairs(src / "buy.txt", src / "cart.txt")),
                "test": _write(work / "test.parquet", _pairs(src / "test.txt")),
                "exclude": _write(work / "buys.parquet", _pairs(src / "buy.txt")),
                "rule": "exclude the user's buys only (22% of test buys are in the user's cart)",
                "k_list": [10, 20]}
    src = root / name / "split_temporal_80_20" if name == "movielens-100k" else root / name
    if not src.is_dir():
        return None
    return {"train": _write(work / "train.parquet", _user_lines(src / "train.txt")),
            "test": _write(work / "test.parquet", _user_lines(src / "test.txt")),
            "exclude": "history", "rule": "exclude the user's training items", "k_list": [20, 50]}


def main() -> None:
    from rectool import console
    from rectool.retrieval.baselines import run_baseline
    from rectool.retrieval.metrics import evaluate_topk

    console.set_quiet(True)
    root = _shared_data()
    if root is None:
        sys.exit("bench_baselines: ../shared/data not found (set RECTOOL_SHARED_DATA)")
    results: dict[str, Any] = {}
    runs = [("popularity", {}), *(("item-cf", {"neighbours": n}) for n in (20, 200, 1000))]
    for name in PEERS:
        data = _dataset(name, root)
        if data is None:
            log(f"{name}: not in {root}, skipped")
            continue
        rows = []
        for method, options in runs:
            out = DATA / "baselines" / name / f"{method}_{options.get('neighbours', 0)}"
            start = time.perf_counter()
            run_baseline(method, data["train"], out, users=data["test"], exclude=data["exclude"], k=50,
                         overwrite=True, **options)
            seconds = time.perf_counter() - start
            metrics = evaluate_topk(out, data["test"], out.with_name(out.name + "_eval"), k_list=data["k_list"],
                                    overwrite=True)
            row = {"method": method, **options, "seconds": round(seconds, 2), "users": metrics["users"]}
            for k, values in metrics["metrics"].items():
                row.update({f"recall@{k}": round(values["recall"], 4), f"ndcg@{k}": round(values["ndcg"], 4),
                            f"hit@{k}": round(values["hit_rate"], 4)})
            log(f"{name}: {row}")
            rows.append(row)
        results[name] = {"exclusion": data["rule"], "peers": PEERS[name], "runs": rows}
    emit("baselines", results)


if __name__ == "__main__":
    main()
