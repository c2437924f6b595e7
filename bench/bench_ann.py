"""Benchmark retrieval: ``hnsw build`` + hnsw search vs exact search, the wrapper vs raw
hnswlib, and the NANN search kernels vs plain Python. All in one run, same machine and data.

  (1) 1M x 64 clustered items (the peers' generator, ``bench_ann_peers.make_data``), 10k
      query users: ``rectool hnsw build`` (own process: wall, peak RSS), then
      ``hnsw_search`` at several ef vs ``brute_search_dot`` (exact, numpy + numba heaps),
      same queries, same process -> target recall@10 >= 0.98 at >= 20x exact's queries/s.
  (2) the peers' setup (200k x 64, M=32, efConstruction 200, ef 100, 10k queries, 2 threads):
      ``hnsw_search`` (rectool's wrapper: labels -> item ids, scores, TopK) vs raw
      ``hnswlib.Index.knn_query`` on the same index, alternated, best of --repeat
      -> target < 10% loss.
  (3) NANN kernels alone, with a fixed dot-product scorer on the graph of (2): users/s of
      ``nann_search`` vs ``nann_reference`` (plain Python), identical results checked on the
      users both ran; also the pairwise exact search with the same scorer, recall@10 and
      the share of items scored. Plus ``hnsw graph`` extraction time.
  (4) ``eval-topk`` over 100k users x 200 items (library call).

Each block records ``other_cpu_s`` (CPU used by other processes meanwhile; ~0 = quiet).

    python bench/bench_ann.py                                   # full sizes (~10 min on 2 cores)
    python bench/bench_ann.py --n 200000 --nq 2000 --peer-n 50000 --nann-users 500   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import DATA, PY, RECTOOL, RESULTS, ROOT, emit, log, run_measured


def _peers() -> Path:
    for base in (os.environ.get("RECTOOL_SHARED"), ROOT.parent / "shared", ROOT.parent.parent / "shared"):
        if base and (Path(base) / "bench" / "peers" / "bench_ann_peers.py").is_file():
            return Path(base) / "bench" / "peers"
    sys.exit("bench_ann: ../shared/bench/peers/bench_ann_peers.py not found (set RECTOOL_SHARED)")


sys.path.insert(0, str(_peers()))
import benchlib  # noqa: E402
from bench_ann_peers import make_data  # noqa: E402

# A child forked from this (large) process would report this process's peak RSS as its own
# (Linux keeps the high-water mark across exec); a small launcher forks the command instead.
_LAUNCH = ("import os, sys\n"
           "pid = os.fork()\n"
           "if pid == 0:\n    os.execvp(sys.argv[1], sys.argv[1:])\n"
           "_, status, usage = os.wait4(pid, 0)\n"
           "print(f'child_maxrss_kb={usage.ru_maxrss}')\n"
           "sys.exit(os.waitstatus_to_exitcode(status))\n")


def measured(cmd: list[str]) -> dict[str, Any]:
    """Wall seconds and the command's own peak RSS (MB), with the other processes' CPU meanwhile."""
    with benchlib.Contention() as c:
        run = run_measured([PY, "-c", _LAUNCH, *cmd])
    kb = int(run["stdout"].rsplit("child_maxrss_kb=", 1)[1].split()[0])
    return {"seconds": run["seconds"], "peak_rss_mb": round(kb / 1024, 1), "other_cpu_s": c.other_cpu_s}


def _recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    hits = sum(len(np.intersect1d(f[:k], e[:k])) for f, e in zip(found, exact, strict=True))
    return round(hits / (len(exact) * k), 4)


def _write_table(path: Path, vectors: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    n, dim = vectors.shape
    ids = np.arange(n, dtype=np.int64) * 3 + 1  # not the row numbers: the id map is exercised
    with pq.ParquetWriter(path, pa.schema([("item_id", pa.int64()), ("item_emb", pa.list_(pa.float32(), dim))]),
                          compression="zstd") as writer:
        for lo in range(0, n, 262_144):
            hi = min(n, lo + 262_144)
            emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors[lo:hi].ravel()), dim)
            writer.write_table(pa.table({"item_id": ids[lo:hi], "item_emb": emb}))


def _build(table: Path, out: Path, m: int, ef_c: int, threads: int) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    return measured(RECTOOL + ["hnsw", "build", "--input", str(table), "--output", str(out), "--m", str(m),
                               "--ef-construction", str(ef_c), "--threads", str(threads), "--quiet"])


def timed(fn):
    with benchlib.Contention() as c:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return out, seconds, c.other_cpu_s


def part_scale(args: argparse.Namespace) -> dict[str, Any]:
    from rectool.retrieval.brute import brute_search_dot
    from rectool.retrieval.hnsw import hnsw_search, load_index

    xb, xq = make_data(args.n, args.nq, args.dim, "clustered", 1000, 7, False)
    table = DATA / f"ann_items_{args.n}x{args.dim}" / "part-0.parquet"
    _write_table(table, xb)
    log(f"(1) hnsw build {args.n:,} x {args.dim}, M={args.m}, efC={args.ef_construction}")
    build = _build(table.parent, DATA / "ann_index", args.m, args.ef_construction, args.threads)
    log(f"    {build}")
    index = load_index(DATA / "ann_index", threads=args.threads)
    ids = np.load(DATA / "ann_index" / "ids.npy")
    log(f"    exact search, {args.nq:,} queries")
    exact, exact_s, exact_other = timed(lambda: brute_search_dot(xq, xb, args.k, item_ids=ids, progress=False))
    runs = []
    for ef in [int(e) for e in args.ef.split(",")]:
        found, s, other = timed(lambda ef=ef: hnsw_search(index, xq, args.k, ef=ef, threads=args.threads))
        run = {"ef": ef, "qps": round(args.nq / s, 1), "recall_at_10": _recall(found.item_ids, exact.item_ids, 10),
               "speedup_vs_exact": round(exact_s / s, 1), "other_cpu_s": other}
        log(f"    {run}")
        runs.append(run)
    ok = [r for r in runs if r["recall_at_10"] >= 0.98]
    best = max(ok, key=lambda r: r["qps"]) if ok else None
    return {"items": args.n, "dim": args.dim, "queries": args.nq, "M": args.m, "ef_construction": args.ef_construction,
            "threads": args.threads, "build": {**build, "items_per_s": round(args.n / build["seconds"], 1)},
            "exact": {"seconds": round(exact_s, 2), "qps": round(args.nq / exact_s, 1), "other_cpu_s": exact_other},
            "hnsw": runs, "best_at_recall_0.98": best,
            "target": "recall@10 >= 0.98 at >= 20x exact qps",
            "target_met": bool(best and best["speedup_vs_exact"] >= 20)}


class _Replay:
    """Stands in for ``hnswlib.Index``: returns a recorded answer at once."""

    def __init__(self, labels: np.ndarray, distances: np.ndarray) -> None:
        self.answer = labels, distances

    def set_ef(self, ef: int) -> None:
        pass

    def knn_query(self, queries: np.ndarray, k: int, num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        return self.answer


def part_wrapper(args: argparse.Namespace) -> tuple[dict[str, Any], Path, np.ndarray]:
    from rectool.retrieval.brute import brute_search_dot
    from rectool.retrieval.hnsw import HnswIndex, hnsw_search, load_index

    xb, xq = make_data(args.peer_n, 10_000, 64, "clustered", 1000, 7, False)
    table = DATA / f"ann_items_{args.peer_n}x64" / "part-0.parquet"
    _write_table(table, xb)
    out = DATA / "ann_peer_index"
    log(f"(2) wrapper vs raw hnswlib: {args.peer_n:,} x 64, M=32, efC=200, ef=100")
    build = _build(table.parent, out, 32, 200, args.threads)
    index = load_index(out, threads=args.threads)
    index.index.set_ef(100)
    raw, wrapped = [], []
    for _ in range(args.repeat):
        _, s, o1 = timed(lambda: index.index.knn_query(xq, k=10, num_threads=args.threads))
        raw.append((s, o1))
        _, s, o2 = timed(lambda: hnsw_search(index, xq, 10, ef=100, threads=args.threads))
        wrapped.append((s, o2))
    raw_s, wrapped_s = min(s for s, _ in raw), min(s for s, _ in wrapped)
    # the wrapper's own work, free of search noise: hnswlib replaced by a replay of its answer
    answer = index.index.knn_query(xq, k=10, num_threads=args.threads)
    replay = HnswIndex(_Replay(*answer), index.ids, index.meta)
    own_s = min(timed(lambda: hnsw_search(replay, xq, 10, ef=100))[1] for _ in range(args.repeat))
    truth = brute_search_dot(xq, xb, 10, progress=False).item_ids  # blocked: never a 10k x 200k matrix
    found = hnsw_search(index, xq, 10, ef=100, threads=args.threads)
    rows = (found.item_ids - 1) // 3
    result = {"items": args.peer_n, "queries": len(xq), "build_s": build["seconds"], "build_other_cpu_s":
              build["other_cpu_s"], "raw_hnswlib_qps": round(len(xq) / raw_s, 1),
              "rectool_qps": round(len(xq) / wrapped_s, 1), "loss": round(1 - raw_s / wrapped_s, 4),
              "wrapper_own_s": round(own_s, 4), "wrapper_own_share": round(own_s / raw_s, 4),
              "recall_at_10": _recall(rows, truth, 10), "all_raw_s": [round(s, 3) for s, _ in raw],
              "all_rectool_s": [round(s, 3) for s, _ in wrapped],
              "other_cpu_s": [o for _, o in raw + wrapped], "target": "loss < 0.10"}
    log(f"    {result}")
    return result, out, xb


def part_nann(args: argparse.Namespace, index_dir: Path, xb: np.ndarray) -> dict[str, Any]:
    from rectool.retrieval.brute import brute_search
    from rectool.retrieval.graph import load_graph
    from rectool.retrieval.nann_reference import nann_search_reference
    from rectool.retrieval.nann_search import dot_scorer, nann_search

    graph_dir = DATA / "ann_peer_graph"
    shutil.rmtree(graph_dir, ignore_errors=True)
    log("(3) hnsw graph + NANN kernels with a dot-product scorer")
    extract = measured(RECTOOL + ["hnsw", "graph", "--index", str(index_dir), "--output", str(graph_dir), "-q"])
    graph = load_graph(graph_dir, mmap=False)
    _, users = make_data(10, args.nann_users, 64, "clustered", 1000, 11, False)
    item_by_node = xb[(np.asarray(graph.ids) - 1) // 3]
    scorer = dot_scorer(users, item_by_node)
    nann_search(graph, 8, scorer, 200, progress=False)  # compile / load the kernels
    fast, fast_s, fast_other = timed(lambda: nann_search(graph, len(users), scorer, 200, progress=False))
    subset = dot_scorer(users[:args.ref_users], item_by_node)
    slow, slow_s, slow_other = timed(lambda: nann_search_reference(graph, args.ref_users, subset, 200))
    same = bool(np.array_equal(slow.item_ids, fast.item_ids[:args.ref_users])
                and np.array_equal(slow.n_scored, fast.n_scored[:args.ref_users]))
    exact, exact_s, exact_other = timed(lambda: brute_search(scorer, len(users), graph.n_nodes, 200,
                                                             item_ids=np.asarray(graph.ids), progress=False))
    result = {
        "items": graph.n_nodes, "users": len(users), "enter_points": len(graph.enter_points()),
        "graph_extract_s": extract["seconds"], "graph_extract_rss_mb": extract["peak_rss_mb"],
        "graph_other_cpu_s": extract["other_cpu_s"],
        "nann_users_per_s": round(len(users) / fast_s, 1), "nann_other_cpu_s": fast_other,
        "reference_users": args.ref_users, "reference_users_per_s": round(args.ref_users / slow_s, 2),
        "reference_other_cpu_s": slow_other,
        "speedup_vs_python": round((len(users) / fast_s) / (args.ref_users / slow_s), 1),
        "identical_to_reference": same, "mean_items_scored": float(fast.n_scored.mean()),
        "share_scored": round(float(fast.n_scored.mean()) / graph.n_nodes, 4),
        "exact_pairwise_users_per_s": round(len(users) / exact_s, 1), "exact_other_cpu_s": exact_other,
        "speedup_vs_exact_pairwise": round(exact_s / fast_s, 1),
        "recall_at_10_vs_exact": _recall(fast.item_ids, exact.item_ids, 10),
        "recall_at_200_vs_exact": _recall(fast.item_ids, exact.item_ids, 200),
    }
    log(f"    {result}")
    return result


def part_eval(args: argparse.Namespace) -> dict[str, Any]:
    from rectool.retrieval.formats import Ragged, UserLists
    from rectool.retrieval.metrics import topk_metrics

    rng = np.random.default_rng(0)
    n, k = args.eval_users, 200
    items = (rng.integers(0, 50, (n, k)) + 50 * np.arange(k)).astype(np.int64)
    recalls = UserLists(np.arange(n, dtype=np.int64), Ragged.from_lengths(np.full(n, k), items.ravel()))
    truth_items = np.sort(rng.integers(0, 10_000, (n, 5)), axis=1)
    truth = UserLists(np.arange(n, dtype=np.int64), Ragged.from_lengths(np.full(n, 5), truth_items.ravel()))
    topk_metrics(recalls, truth, [10], n_items=10_000)  # load the kernels
    _, s, other = timed(lambda: topk_metrics(recalls, truth, [10, 20, 50, 200], brute=recalls, n_items=10_000))
    result = {"users": n, "list_length": k, "seconds_with_brute_comparison": round(s, 2), "other_cpu_s": other}
    log(f"(4) eval-topk {result}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="items for (1)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--nq", type=int, default=10_000, help="query users for (1)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=32, help="HNSW M for (1)")
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="40,80,120,200", help="search ef values for (1)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--peer-n", type=int, default=200_000, help="items for (2) and (3)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--nann-users", type=int, default=2_000)
    ap.add_argument("--ref-users", type=int, default=20, help="users for the plain-Python NANN reference")
    ap.add_argument("--eval-users", type=int, default=100_000)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: scale,wrapper,nann,eval")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    result: dict[str, Any] = {"args": vars(args), "versions": benchlib.versions(["hnswlib", "numba", "numpy"])}
    if "scale" not in skip:
        result["scale"] = part_scale(args)
        _save_partial(result)
    if "wrapper" not in skip or "nann" not in skip:
        wrapper, index_dir, xb = part_wrapper(args)
        result["wrapper"] = wrapper
        _save_partial(result)
        if "nann" not in skip:
            result["nann_kernels"] = part_nann(args, index_dir, xb)
            _save_partial(result)
    if "eval" not in skip:
        result["eval_topk"] = part_eval(args)
    emit("ann", result)


def _save_partial(result: dict[str, Any]) -> None:
    """Keep what is measured so far (a long run that fails late still leaves its figures)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ann.partial.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
