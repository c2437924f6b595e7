"""Benchmark the tree package: beam-search kernels and ``tree cluster``, each against references in the same run.

(a) beam search: a binary tree of 2^20 leaves, beam 400, recall 200, batches of 256 users, a
    fixed dot-product scorer (dim 32, node vectors indexed by node id): rectool.tree.beam.beam_search
    vs the plain-NumPy search bench/ref_beam.py (same results checked), (1) both calling one
    numba scorer (the search's own work isolated), (2) each scoring in its own idiom: the
    NumPy search with NumPy (gather + einsum), rectool with the numba scorer. Reported:
    users/s end to end, and the seconds spent outside the scorer.   target: >= 10x users/s
(b) balanced recursive 2-means on make_data(n, 64) of ../shared/bench/peers (1,000
    Gaussian clusters), down to leaves of <= 32 items and down to single items, rectool
    with 1 and 2 worker processes, vs scikit-learn KMeans doing the same recursive splits
    and faiss k-means (bench_kmeans_peers.py, run in the peer venv), with leaf MSE.
                                       target: >= 5x faster than sklearn, no slower than faiss
(c) the commands end to end on 1M items (read parquet, build, write every file):
    ``rectool tree init`` and ``rectool tree cluster --parallel 2``.

    VENV=/work/peer-venv bash ../shared/bench/peers/setup_peer_venv.sh    # once, for (b)
    python bench/bench_tree.py [--sizes 200000,1000000] [--peer-python /work/peer-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common import DATA, PY, RECTOOL, ROOT, emit, log, run_measured

# ../shared/bench/peers beside the checkout (or beside the worktrees' folder)
_CANDIDATES = [ROOT.parent / "shared" / "bench" / "peers", ROOT.parents[1] / "shared" / "bench" / "peers"]
PEERS = Path(os.environ.get("RECTOOL_PEERS") or next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0]))
if not (PEERS / "bench_kmeans_peers.py").is_file():
    sys.exit(f"bench_tree needs the peer benchmarks (make_data, benchlib) in {PEERS}; set RECTOOL_PEERS")
sys.path.insert(0, str(PEERS))
import benchlib  # noqa: E402  (contention probes of the peer benchmarks)

# ----------------------------------------------------------------------------- (a) beam search


def _beam(args: argparse.Namespace) -> dict:
    import numba
    import numpy as np
    from ref_beam import beam_search_numpy

    from rectool.tree.beam import beam_search
    from rectool.tree.kernels import init_codes
    from rectool.tree.structure import tree_from_codes

    @numba.njit(cache=True, fastmath=True, parallel=True)
    def dot(users, nodes, u, n, out):  # noqa: ANN001, ANN202
        for i in numba.prange(u.size):
            acc = np.float32(0.0)
            for j in range(users.shape[1]):
                acc += users[u[i], j] * nodes[n[i], j]
            out[i] = acc

    leaves = 1 << args.log2_leaves
    tree = tree_from_codes(np.arange(leaves, dtype=np.int64), init_codes(leaves, 2), 2)
    assert tree.node_ids.max() == tree.num_nodes - 1  # ids 0..nodes-1: a node's id is its row
    rng = np.random.default_rng(0)
    node_vec = rng.standard_normal((tree.num_nodes, args.dim), dtype=np.float32)
    spent = {"scorer_s": 0.0}

    def make_scorer(users):  # noqa: ANN001, ANN202
        def scorer(u, n):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            out = np.empty(u.size, dtype=np.float32)
            dot(users, node_vec, u, n, out)
            spent["scorer_s"] += time.perf_counter() - t
            return out
        return scorer

    def make_numpy_scorer(users):  # noqa: ANN001, ANN202
        def scorer(u, n):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            out = np.einsum("ij,ij->i", users[u], node_vec[n])
            spent["scorer_s"] += time.perf_counter() - t
            return out
        return scorer

    batches = [rng.standard_normal((args.users, args.dim), dtype=np.float32) for _ in range(args.batches)]
    warm = make_scorer(batches[0][:2])
    beam_search(tree, warm, 2, args.recall, args.beam)
    out = {"leaves": leaves, "beam": args.beam, "recall": args.recall, "users_per_batch": args.users,
           "dim": args.dim}
    methods = {"rectool": beam_search, "numpy": beam_search_numpy, "numpy_own_scorer": beam_search_numpy}
    scorers = {"rectool": make_scorer, "numpy": make_scorer, "numpy_own_scorer": make_numpy_scorer}
    results, times, scorer_times = {}, {m: [] for m in methods}, {m: [] for m in methods}
    benchlib.wait_for_quiet(args.wait_quiet)
    with benchlib.Contention() as ct:
        for i, users in enumerate(batches):  # interleaved, rotating order: all see the same load
            names = list(methods)
            for name in names[i % 3:] + names[:i % 3]:
                spent["scorer_s"] = 0.0
                t = time.perf_counter()
                res = methods[name](tree, scorers[name](users), users.shape[0], args.recall, args.beam)
                times[name].append(time.perf_counter() - t)
                scorer_times[name].append(spent["scorer_s"])
                if i == 0:
                    results[name] = res
    out["other_cpu_s"], out["steal_s"] = ct.other_cpu_s, ct.steal_s
    for name in methods:
        best = int(np.argmin(times[name]))
        out[name] = {"seconds_per_batch": [round(x, 4) for x in times[name]],
                     "users_per_s": round(args.users / times[name][best], 1),
                     "scorer_s": round(scorer_times[name][best], 4),
                     "search_s": round(times[name][best] - scorer_times[name][best], 4),
                     "nodes_scored_per_user": int(results[name].nodes_scored[0])}
        log(f"beam {name}: {out[name]}")
    same = bool(np.array_equal(results["rectool"].item_ids, results["numpy"].item_ids)
                and np.array_equal(results["rectool"].scores, results["numpy"].scores))
    out["same_results"] = same
    # einsum sums in another order: scores may differ in the last bits, so compare items
    out["same_items_own_scorer"] = float(np.mean(results["rectool"].item_ids == results["numpy_own_scorer"].item_ids))
    out["speedup_users_per_s"] = round(out["rectool"]["users_per_s"] / out["numpy"]["users_per_s"], 2)
    out["speedup_users_per_s_own_scorers"] = round(out["rectool"]["users_per_s"]
                                                   / out["numpy_own_scorer"]["users_per_s"], 2)
    # the median batch too: the best batch of each flatters neither side, but says less of a typical one
    out["speedup_median_batch_own_scorers"] = round(float(np.median(times["numpy_own_scorer"]))
                                                    / float(np.median(times["rectool"])), 2)
    out["speedup_median_batch"] = round(float(np.median(times["numpy"])) / float(np.median(times["rectool"])), 2)
    out["speedup_search_only"] = round(out["numpy"]["search_s"] / max(out["rectool"]["search_s"], 1e-9), 1)
    return out


# ----------------------------------------------------------------------------- (b) clustering


def _worker(spec: dict) -> None:
    """Run in a fresh process: time balanced_kmeans_codes on make_data; print one JSON line."""
    import numpy as np
    from bench_kmeans_peers import leaf_mse, make_data

    from rectool.tree.kmeans import balanced_kmeans_codes

    x = make_data(spec["n"], spec["dim"], 1000, spec["seed"])
    balanced_kmeans_codes(x[:256], 2, leaf_size=spec["leaf_size"])  # load the compiled kernels
    t = time.perf_counter()
    codes = balanced_kmeans_codes(x, 2, seed=0, parallel=spec["parallel"], leaf_size=spec["leaf_size"])
    seconds = time.perf_counter() - t
    order = np.argsort(codes, kind="stable")
    sizes = np.unique(codes, return_counts=True)[1]
    res = {**spec, "seconds": round(seconds, 3), "leaves": int(sizes.size), "leaf_min": int(sizes.min()),
           "leaf_max": int(sizes.max())}
    if spec["leaf_size"] > 1:
        res["leaf_mse"] = round(leaf_mse(x, np.split(order, np.cumsum(sizes)[:-1])), 4)
    print(json.dumps(res))


def _cluster(args: argparse.Namespace) -> dict:
    out: dict = {"rectool": [], "peers": []}
    for n in args.sizes:
        for leaf in (32, 1):
            for par in (1, 2):
                spec = {"n": n, "dim": 64, "seed": 11, "leaf_size": leaf, "parallel": par}
                benchlib.wait_for_quiet(args.wait_quiet)
                with benchlib.Contention() as ct:
                    r = run_measured([PY, __file__, "--worker", json.dumps(spec)])
                res = {**json.loads(r["stdout"].strip().splitlines()[-1]), "peak_rss_mb": r["peak_rss_mb"],
                       "other_cpu_s": ct.other_cpu_s}
                log(f"cluster rectool {res}")
                out["rectool"].append(res)
        if args.peer_python and Path(args.peer_python).exists():
            cmd = [args.peer_python, str(PEERS / "bench_kmeans_peers.py"), "--n", str(n), "--methods",
                   args.peer_methods, "--flat-k", "0", "--leaf-size", "32", "--wait-quiet", str(args.wait_quiet),
                   "--threads", str(args.peer_threads)]
            r = run_measured(cmd)
            res = json.loads(r["stdout"].strip().splitlines()[-1])
            for row in res["results"]:
                row["n"] = n
                log(f"cluster peer {row}")
                out["peers"].append(row)
        else:
            log(f"peer venv {args.peer_python} not found: peers skipped")
    table = {}
    for n in args.sizes:
        rt = {(r["leaf_size"], r["parallel"]): r for r in out["rectool"] if r["n"] == n}
        peers = {r["method"]: r for r in out["peers"] if r["n"] == n}
        row = {"rectool_leaf32_s": {p: rt[(32, p)]["seconds"] for p in (1, 2)},
               "rectool_full_tree_s": {p: rt[(1, p)]["seconds"] for p in (1, 2)},
               "rectool_leaf32_mse": rt[(32, 1)].get("leaf_mse")}
        best = min(rt[(32, 1)]["seconds"], rt[(32, 2)]["seconds"])
        for m, r in peers.items():
            row[f"{m}_leaf32_s"], row[f"{m}_leaf32_mse"] = r["seconds"], r["leaf_mse"]
            row[f"speedup_vs_{m}"] = round(r["seconds"] / best, 2)
        table[str(n)] = row
    out["summary"] = table
    return out


# ----------------------------------------------------------------------------- (c) commands


def _commands(args: argparse.Namespace) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bench_kmeans_peers import make_data

    n = max(args.sizes)
    work = DATA / "tree_bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = make_data(n, 64, 1000, 11)
    pq.write_table(pa.table({"item_id": rng.permutation(4 * n)[:n].astype(np.int64),
                             "category_id": rng.integers(0, 5000, n), "brand": rng.integers(0, 20000, n),
                             "item_emb": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 64)}),
                   work / "items.parquet")
    base = ["--item-input-path", str(work / "items.parquet"), "--item-id-field", "item_id",
            "--attr-fields", "category_id,brand", "-q", "--overwrite"]
    out = {"items": n}
    out["init"] = run_measured(RECTOOL + ["tree", "init", *base, "--cate-id-field", "category_id",
                                          "--tree-output-dir", str(work / "init")])
    out["cluster"] = run_measured(RECTOOL + ["tree", "cluster", *base, "--embedding-field", "item_emb",
                                             "--parallel", "2", "--tree-output-dir", str(work / "learnt")])
    for k in ("init", "cluster"):
        out[k].pop("stdout", None)
        log(f"command tree {k}: {out[k]}")
    out["edge_table_mb"] = round((work / "learnt" / "edge_table.txt").stat().st_size / 1e6, 1)
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--log2-leaves", type=int, default=20)
    ap.add_argument("--beam", type=int, default=400)
    ap.add_argument("--recall", type=int, default=200)
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--wait-quiet", type=float, default=0,
                    help="before each timed task wait up to this many s for other processes to go idle")
    ap.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[200_000, 1_000_000])
    ap.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON", "/work/peer-venv/bin/python"))
    ap.add_argument("--peer-methods", default="sklearn,faiss")
    ap.add_argument("--peer-threads", type=int, default=os.cpu_count(), help="OpenMP/BLAS threads of the peers")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: beam, cluster, commands")
    args = ap.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
        return
    skip = set(args.skip.split(","))
    result = {}
    # subprocess parts first: a child forked from a big parent inherits its peak RSS
    if "cluster" not in skip:
        log("(b) balanced recursive k-means")
        result["cluster"] = _cluster(args)
    if "commands" not in skip:
        log("(c) tree init / tree cluster end to end")
        result["commands"] = _commands(args)
    if "beam" not in skip:
        log("(a) beam search")
        result["beam"] = _beam(args)
    emit("tree", result)


if __name__ == "__main__":
    main()
