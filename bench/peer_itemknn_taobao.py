"""The taobao peer (implicit's cosine item-kNN) re-measured, with its hits split by segment.

Reproduces the issue's peer figure (train = buy ∪ cart as a binary matrix, the user's buys
excluded, every item scored) and splits its hit rate the way ``bench_retrieval_quality.py``
does: users whose held-out buy is already in their training list (a carted item) and the
others. ``--new-only`` also leaves out the carts, to compare the collaborative part alone.
Needs the peers' environment (``implicit``, ``scipy``); reads ``../shared/data``.

    python bench/peer_itemknn_taobao.py [--split test|valid] [--k 100,200] [--new-only]
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_baselines import _shared_data


def _pairs(path) -> list[tuple[int, int]]:
    return [(int(u), int(i)) for u, i in (line.split() for line in open(path) if line.strip())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("test", "valid"), default="test")
    ap.add_argument("--k", default="200", help="neighbours kept per item (implicit's K)")
    ap.add_argument("--new-only", action="store_true", help="exclude the carts too")
    args = ap.parse_args()
    try:
        import scipy.sparse as sp
        from implicit.nearest_neighbours import CosineRecommender
    except ImportError:
        raise SystemExit("peer_itemknn_taobao: needs implicit and scipy (the peers' environment)") from None
    root = _shared_data()
    if root is None:
        raise SystemExit("peer_itemknn_taobao: ../shared/data not found (set RECTOOL_SHARED_DATA)")
    src = root / "taobao-multibehavior"
    buys, carts = _pairs(src / "buy.txt"), _pairs(src / "cart.txt")
    truth = dict(_pairs(src / f"{args.split}.txt"))
    if args.split == "valid":  # valid.txt rows are in buy.txt: take them out
        held = set(truth.items())
        buys = [p for p in buys if p not in held]
    everything = buys + carts + list(truth.items())
    shape = (1 + max(u for u, _ in everything), 1 + max(i for _, i in everything))

    def binary(pairs):
        users, items = np.array(pairs).T
        m = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=shape)
        m.data[:] = 1
        return m

    bought, seen = binary(buys), binary(buys + carts)
    users = np.array(sorted(truth))
    target = np.array([truth[u] for u in users])
    in_history = np.asarray(seen[users, target]).ravel() > 0
    for k in map(int, args.k.split(",")):
        model = CosineRecommender(K=k)
        model.fit(seen, show_progress=False)
        scores = (seen[users] @ model.similarity.tocsr()).toarray()
        scores[((seen if args.new_only else bought)[users]).toarray() > 0] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :20]
        for cut in (10, 20):
            hit = (top[:, :cut] == target[:, None]).any(axis=1)
            print(f"{args.split} K={k}{' new-only' if args.new_only else ''}: hit@{cut} {hit.mean():.4f}"
                  f"  in-history {hit[in_history].mean():.4f} ({in_history.sum()} users)"
                  f"  new {hit[~in_history].mean():.4f} ({(~in_history).sum()} users)")


if __name__ == "__main__":
    main()
