"""``rectool eval-topk``: top-K metrics of a recall file against a truth table.

Definitions (per user u with truth set T_u, |T_u| >= 1, and ranked list L_u; at cut-off K)
    hits       |L_u[:K] ∩ T_u|
    precision  hits / K                      recall  hits / |T_u|
    F-measure  2 P R / (P + R) (0 without hits), per user, then averaged (as TDM/JTM)
    hit rate   1 if hits > 0
    NDCG       DCG / IDCG, binary relevance, DCG = Σ_{hit at rank r} 1 / log2(r + 1) (r from 1),
               IDCG = the DCG of min(|T_u|, K) hits at the top
    MRR        1 / rank of the first hit within K (0 without one)
    all averaged over the truth users with >= 1 item. A truth user missing from the recall
    file is an error (``missing_users="zero"`` counts it with an empty list). The truth table's
    item column may have another name (``truth_column``, ``--truth-column``).
    coverage   distinct items in the evaluated users' top-K / catalogue size (the catalogue:
               ``n_items``, else the distinct items of ``items`` table, else the distinct items
               in recalls ∪ truth, as stated in the output)
With a second recall file for the same users (``brute``, exact search with the same model;
the NANN paper's measures)
    recall_delta  (recall_brute - recall) / recall_brute
    coverage_brute  mean over users of |L_u[:K] ∩ B_u[:K]| / min(K, |B_u|)

Outputs (``--output DIR``, atomic)
    ``metrics.json``  {"k_list", "users", "metrics": {"<K>": {"precision", ...}}, ...}
    ``metrics.csv``   one row per K: k, precision, recall, f_measure, hit_rate, ndcg, mrr,
                      coverage, distinct_items [, recall_brute, recall_delta, coverage_brute]
    ``recall_at_k.png`` (``--plot``) recall@K against K
    ``_meta.json``    kind ``topk_metrics``

Example::

    rectool eval-topk --recall-path out/recalls --truth-path out/test_truth --k-list 10,20,50,200 \\
        --output out/eval --plot
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rectool import console
from rectool.artifacts import atomic_dir, open_dataset, require_columns, write_meta
from rectool.badinput import read_table
from rectool.errors import UserError
from rectool.retrieval import kernels
from rectool.retrieval.choices import MissingUsers
from rectool.retrieval.formats import ITEM_ID, METRICS_KIND, UserLists, int_column, read_recalls, read_truth

BASE_COLUMNS = ["precision", "recall", "f_measure", "hit_rate", "ndcg", "mrr", "coverage", "distinct_items"]
BRUTE_COLUMNS = ["recall_brute", "recall_delta", "coverage_brute"]


def check_k_list(k_list: Sequence[int]) -> list[int]:
    """The cut-offs, sorted and distinct; a one-line error unless there is one or more, each >= 1."""
    ks = [int(k) for k in k_list]
    if not ks or min(ks) < 1 or max(ks) > np.iinfo(np.int64).max:  # cut-offs are int64 arrays
        raise UserError(f"--k-list {','.join(map(str, ks))}: give one or more cut-offs >= 1 (and below 2^63), "
                        "e.g. 10,20,50,200")
    return sorted(set(ks))


def _example(ids: np.ndarray) -> str:
    return ", ".join(str(x) for x in ids[:3]) + (" ..." if len(ids) > 3 else "")


def _per_user(recalls: UserLists, truth: UserLists, rows: np.ndarray, ks: np.ndarray) -> dict[str, np.ndarray]:
    """(users x K) arrays of every per-user measure."""
    hits, dcg, rr = kernels.rank_metrics(recalls.lists.offsets, recalls.lists.values, rows, truth.lists.offsets,
                                         truth.lists.values, ks)
    n_truth = truth.lists.lengths().astype(np.float64)[:, None]
    precision = hits / ks[None, :].astype(np.float64)
    recall = hits / n_truth
    denominator = precision + recall
    f_measure = np.divide(2 * precision * recall, denominator, out=np.zeros_like(precision), where=denominator > 0)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, ks[-1] + 2)))
    idcg = ideal[np.minimum(n_truth.astype(np.int64), ks[None, :]) - 1]
    return {"precision": precision, "recall": recall, "f_measure": f_measure, "hit_rate": (hits > 0) * 1.0,
            "ndcg": dcg / idcg, "mrr": rr}


def _distinct_at_k(recalls: UserLists, rows: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Distinct items in the top-K lists of the evaluated users, for each K."""
    lists = recalls.lists.take(rows[rows >= 0])
    ranks = np.arange(len(lists.values)) - np.repeat(lists.offsets[:-1], lists.lengths())
    first = np.cumsum(kernels.first_rank_counts(lists.values, ranks, int(ks[-1])))
    return first[ks - 1]


def catalogue_size(recalls: UserLists, truth: UserLists, n_items: int | None = None,
                   items: str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """The catalogue size for coverage and where it comes from."""
    if n_items is not None:
        if n_items < 1:
            raise UserError(f"--n-items {n_items}: give the number of items in the catalogue (>= 1)")
        return n_items, "--n-items"
    if items is not None:
        ds = open_dataset(items, "--items")
        require_columns(ds.schema, [ITEM_ID], f"--items {os.fspath(items)}")
        label = f"--items {os.fspath(items)}"
        ids = int_column(read_table(ds, label, columns=[ITEM_ID])[ITEM_ID], label, ITEM_ID)
        return int(len(np.unique(ids))), f"--items {os.fspath(items)}"
    both = np.unique(np.concatenate([recalls.lists.values, truth.lists.values]))
    return int(len(both)), "distinct items in recalls and truth"


def topk_metrics(recalls: UserLists, truth: UserLists, k_list: Sequence[int], *, brute: UserLists | None = None,
                 n_items: int | None = None, items: str | os.PathLike[str] | None = None,
                 missing_users: MissingUsers = "error") -> dict[str, Any]:
    """Every measure at every K (see the module docstring), as a JSON-ready dict."""
    ks = np.asarray(check_k_list(k_list), dtype=np.int64)
    keep = truth.lists.lengths() > 0
    truth = UserLists(truth.user_ids[keep], truth.lists.take(np.flatnonzero(keep)))
    if len(truth) == 0:
        raise UserError("--truth-path: no user has a truth item; check the truth table")
    rows = recalls.rows_of(truth.user_ids)
    missing = truth.user_ids[rows < 0]
    if len(missing) and missing_users == "error":
        raise UserError(f"--truth-path: {len(missing)} of {len(truth)} truth users have no row in --recall-path "
                        f"(e.g. {_example(missing)}); retrieve for every test user, or pass --missing-users zero")
    per_user = _per_user(recalls, truth, rows, ks)
    n_cat, cat_source = catalogue_size(recalls, truth, n_items, items)
    distinct = _distinct_at_k(recalls, rows, ks)
    table: dict[str, dict[str, float]] = {}
    for j, k in enumerate(ks):
        row = {name: float(values[:, j].mean()) for name, values in per_user.items()}
        row["coverage"] = float(distinct[j] / n_cat)
        row["distinct_items"] = int(distinct[j])
        table[str(int(k))] = row
    result: dict[str, Any] = {
        "k_list": [int(k) for k in ks], "users": int(len(truth)), "missing_users": int(len(missing)),
        "recall_users": int(len(recalls)), "catalog_items": n_cat, "catalog_source": cat_source,
        "mean_truth_items": float(truth.lists.lengths().mean()),
    }
    if recalls.n_scored is not None:
        scored = recalls.n_scored[rows[rows >= 0]]
        result["mean_items_scored"] = float(scored.mean()) if len(scored) else 0.0
        result["share_scored"] = result["mean_items_scored"] / n_cat
    if brute is not None:
        _compare_brute(recalls, brute, truth, rows, ks, table)
    result["metrics"] = table
    return result


def _compare_brute(recalls: UserLists, brute: UserLists, truth: UserLists, rows: np.ndarray, ks: np.ndarray,
                   table: dict[str, dict[str, float]]) -> None:
    if len(brute) != len(recalls) or not np.array_equal(brute.user_ids, recalls.user_ids):
        only_r = np.setdiff1d(recalls.user_ids, brute.user_ids)
        only_b = np.setdiff1d(brute.user_ids, recalls.user_ids)
        raise UserError(f"--brute-path: the users differ from --recall-path ({len(only_r)} only in --recall-path, "
                        f"e.g. {_example(only_r)}; {len(only_b)} only in --brute-path, e.g. {_example(only_b)}); "
                        "retrieve for the same users with both methods")
    brute_recall = _per_user(brute, truth, rows, ks)["recall"].mean(axis=0)
    overlap = kernels.overlap_at_k(recalls.lists.offsets, recalls.lists.values, rows, brute.lists.offsets,
                                   brute.lists.values, rows, ks)
    b_len = np.where(rows >= 0, brute.lists.lengths()[np.maximum(rows, 0)], 0)
    for j, k in enumerate(ks):
        denominator = np.minimum(b_len, k)
        valid = denominator > 0
        row = table[str(int(k))]
        row["recall_brute"] = float(brute_recall[j])
        # rounded: equal recalls summed in another order differ by 1e-16, which should read as 0
        row["recall_delta"] = round(float((brute_recall[j] - row["recall"]) / brute_recall[j]), 12) + 0.0 \
            if brute_recall[j] > 0 else 0.0
        row["coverage_brute"] = float((overlap[valid, j] / denominator[valid]).mean()) if valid.any() else 0.0


# ----------------------------------------------------------------------------- files


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = result["k_list"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [result["metrics"][str(k)]["recall"] for k in ks], marker="o", label="recall")
    if "recall_brute" in result["metrics"][str(ks[0])]:
        ax.plot(ks, [result["metrics"][str(k)]["recall_brute"] for k in ks], marker="s", linestyle="--",
                label="recall (brute force)")
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.set_title(f"recall@K over {result['users']:,} users")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_topk(recall_path: str | os.PathLike[str], truth_path: str | os.PathLike[str],
                  output: str | os.PathLike[str], *, k_list: Sequence[int] = (10, 20, 50, 200),
                  brute_path: str | os.PathLike[str] | None = None, n_items: int | None = None,
                  items: str | os.PathLike[str] | None = None, missing_users: MissingUsers = "error",
                  truth_column: str | None = None, plot: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """``rectool eval-topk``: read, measure, write ``metrics.json``/``.csv`` (+ PNG); print the table.

    ``truth_column`` names the truth table's item column (list or long form) when it is not
    ``item_ids``/``item_id``."""
    ks = check_k_list(k_list)
    recalls = read_recalls(recall_path, "--recall-path")
    truth = read_truth(truth_path, "--truth-path", truth_column)
    brute = read_recalls(brute_path, "--brute-path") if brute_path is not None else None
    result = topk_metrics(recalls, truth, ks, brute=brute, n_items=n_items, items=items, missing_users=missing_users)
    columns = BASE_COLUMNS + (BRUTE_COLUMNS if brute is not None else [])
    with atomic_dir(output, overwrite) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        with open(tmp / "metrics.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["k", *columns])
            for k in result["k_list"]:
                writer.writerow([k, *(result["metrics"][str(k)][c] for c in columns)])
        if plot:
            _plot(result, tmp / "recall_at_k.png")
        inputs = [recall_path, truth_path] + ([brute_path] if brute_path is not None else [])
        write_meta(tmp, kind=METRICS_KIND, inputs=inputs, rows=len(result["k_list"]), k_list=result["k_list"],
                   users=result["users"], files=["metrics.json", "metrics.csv"] + (["recall_at_k.png"] if plot else []))
    console.table(f"eval-topk: {result['users']:,} users, catalogue {result['catalog_items']:,}",
                  ["measure", *(f"@{k}" for k in result["k_list"])],
                  [[c, *(result["metrics"][str(k)][c] for k in result["k_list"])] for c in columns])
    return result
