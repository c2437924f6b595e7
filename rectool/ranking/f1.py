"""``rectool eval-f1``: the competition's F1 over a top-K x threshold x per-user-cap scan.

Definition (Tianchi mobile recommendation): over *deduplicated* (user, item) pairs,
precision = |pred ∩ true| / |pred|, recall = |pred ∩ true| / |true|,
F1 = 2 P R / (P + R). A predicted pair that appears more than once counts once, with
its highest score.

Scan
    Pairs are ordered once by score (descending; ties by user_id, then item_id,
    ascending) and the hits are summed cumulatively; then every combination is O(1):
    a threshold ``t`` keeps the pairs with ``score >= t``, a top-K keeps the first K of
    those, a per-user cap ``m`` (``--max-per-user``) first keeps each user's ``m`` best
    pairs (ties by item_id). ``topk`` empty means all pairs, ``threshold`` empty means none.

Inputs
    ``--pred-path``: predictions (``rectool.ranking.predictions``; dir, file, glob or
    ``-``); ``--label-path``: see ``rectool.ranking.labels``.

Outputs (``--output DIR``, atomic)
    ``scan.csv`` / ``scan.parquet``: ``max_per_user int64, topk int64, threshold float64,
    n_pred int64, n_hit int64, precision float64, recall float64, f1 float64, best bool``
    (nulls = no cap / all / none); ``f1_vs_topk.png``: F1, precision and recall against K;
    ``_meta.json`` (kind ``f1-scan``): the best row, label and prediction counts.

Example::

    rectool eval-f1 --pred-path data/pred/eval --label-path data/samples/eval --output data/eval/cart
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from rectool import console
from rectool.artifacts import atomic_dir, write_meta, write_parquet
from rectool.duck import quiet_duckdb
from rectool.errors import UserError
from rectool.ranking.labels import align_days, read_labels
from rectool.ranking.predictions import days_of, read_predictions

SCAN_SCHEMA = pa.schema([("max_per_user", pa.int64()), ("topk", pa.int64()), ("threshold", pa.float64()),
                         ("n_pred", pa.int64()), ("n_hit", pa.int64()), ("precision", pa.float64()),
                         ("recall", pa.float64()), ("f1", pa.float64()), ("best", pa.bool_())])
AUTO_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 8.0)
MAX_COUNT = np.iinfo(np.int64).max  # counts are scanned as int64: a larger one is a typo (use 'all')


@dataclass
class Ranked:
    """Deduplicated predictions in scan order."""

    score: np.ndarray      # float64, descending
    hit: np.ndarray        # bool
    user_rank: np.ndarray  # int64, 1 = the user's best pair
    n_labels: int
    n_rows: int            # prediction rows read
    n_pairs: int           # after deduplication


def rank_predictions(pred: pa.Table, labels: pa.Table, keys: Sequence[str], per_user: bool = True) -> Ranked:
    """DuckDB: dedup (max score), flag hits, order globally; rank within user only when asked."""
    con = quiet_duckdb()
    con.register("pred", pred)
    con.register("truth", labels)
    k = ", ".join(keys)
    con.execute(f"""CREATE TEMP TABLE p AS
        SELECT q.*, l.user_id IS NOT NULL AS hit
        FROM (SELECT {k}, max(score) AS score FROM pred GROUP BY {k}) AS q
        LEFT JOIN (SELECT DISTINCT {k} FROM truth) AS l USING ({k})""").fetchall()
    partition = ", ".join(c for c in keys if c != "item_id")
    user_rank = (f"row_number() OVER (PARTITION BY {partition} ORDER BY score DESC, item_id)" if per_user
                 else "1::BIGINT")
    res = con.sql(f"SELECT score, hit, {user_rank} AS user_rank FROM p ORDER BY score DESC, {k}").fetchnumpy()
    n_labels = con.sql(f"SELECT count(*) FROM (SELECT DISTINCT {k} FROM truth)").fetchall()[0][0]
    con.close()
    return Ranked(np.asarray(res["score"], np.float64), np.asarray(res["hit"], bool),
                  np.asarray(res["user_rank"], np.int64), int(n_labels), pred.num_rows, len(res["score"]))


def scan(ranked: Ranked, topks: Sequence[int | None], thresholds: Sequence[float | None],
         caps: Sequence[int | None]) -> pa.Table:
    """Every (cap, K, threshold) combination from cumulative hit counts; the best F1 marked."""
    rows: dict[str, list] = {name: [] for name in SCAN_SCHEMA.names}
    k_arr = np.array([np.iinfo(np.int64).max if k is None else k for k in topks], np.int64)
    for cap in caps:
        sel = slice(None) if cap is None else ranked.user_rank <= cap
        s, h = ranked.score[sel], np.cumsum(ranked.hit[sel], dtype=np.int64)
        neg = -s  # ascending: the pairs with score >= t are the first searchsorted(neg, -t, "right")
        for t in thresholds:
            # compared at float32 precision, the precision of the prediction schema: 0.9 keeps a score of 0.9
            n_t = len(s) if t is None else int(np.searchsorted(neg, -float(np.float32(t)), side="right"))
            n = np.minimum(k_arr, n_t)
            hits = np.where(n > 0, h[np.maximum(n - 1, 0)] if len(h) else 0, 0)
            precision = np.divide(hits, n, out=np.zeros(len(n)), where=n > 0)
            recall = hits / ranked.n_labels if ranked.n_labels else np.zeros(len(n))
            denom = precision + recall
            f1 = np.divide(2 * precision * recall, denom, out=np.zeros(len(n)), where=denom > 0)
            for j, k in enumerate(topks):
                for name, value in (("max_per_user", cap), ("topk", k), ("threshold", t), ("n_pred", int(n[j])),
                                    ("n_hit", int(hits[j])), ("precision", float(precision[j])),
                                    ("recall", float(recall[j])), ("f1", float(f1[j]))):
                    rows[name].append(value)
    best = int(np.argmax(rows["f1"])) if rows["f1"] else -1
    rows["best"] = [i == best for i in range(len(rows["f1"]))]
    return pa.table(rows, schema=SCAN_SCHEMA)


def auto_topks(n_labels: int) -> list[int | None]:
    """Multiples of the number of true pairs (F1 usually peaks near 1-1.5x), plus all pairs."""
    base = max(n_labels, 1)
    return sorted({max(1, int(round(m * base))) for m in AUTO_MULTIPLES}) + [None]


def curve(ranked: Ranked, cap: int | None = None,
          points: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(K, precision, recall, F1) at up to ``points`` K values, log-spaced, no threshold."""
    hit = ranked.hit if cap is None else ranked.hit[ranked.user_rank <= cap]
    n = len(hit)
    ks = np.unique(np.geomspace(1, max(n, 1), num=min(points, max(n, 1))).astype(np.int64))
    h = np.cumsum(hit, dtype=np.int64)[ks - 1] if n else np.zeros(len(ks), np.int64)
    p = h / ks
    r = h / ranked.n_labels if ranked.n_labels else np.zeros(len(ks))
    f = np.divide(2 * p * r, p + r, out=np.zeros(len(ks)), where=(p + r) > 0)
    return ks, p, r, f


def plot(ranked: Ranked, table: pa.Table, caps: Sequence[int | None], path: Path) -> None:
    """F1, precision, recall against K without a cap (solid), F1 of every per-user cap (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks, p, r, f = curve(ranked)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot(ks, f, label="F1", color="tab:red", linewidth=2)
    ax.plot(ks, p, label="precision", color="tab:blue")
    ax.plot(ks, r, label="recall", color="tab:green")
    top = max([0.05, *p, *r, *f])
    for cap in caps:
        if cap is not None:
            ck, _, _, cf = curve(ranked, cap)
            ax.plot(ck, cf, linestyle="--", linewidth=1.2, label=f"F1, at most {cap} per user")
    best = table.filter(table["best"]).to_pylist()
    if best and best[0]["f1"] > 0:
        b = best[0]
        cap_note = "" if b["max_per_user"] is None else f", {b['max_per_user']} per user"
        ax.axvline(b["n_pred"], color="gray", linestyle=":",
                   label=f"best F1 {b['f1']:.4f} at {b['n_pred']:,} pairs{cap_note}")
    if ranked.n_labels:
        ax.axvline(ranked.n_labels, color="black", linestyle="--", linewidth=0.8,
                   label=f"{ranked.n_labels:,} true pairs")
    ax.set_xscale("log")
    ax.set_xlabel("top-K pairs by score (no threshold)")
    ax.set_ylim(0, min(1.0, top * 1.15))
    ax.set_title("eval-f1: F1, precision and recall against K")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt_row(row: dict) -> list:
    return ["-" if row["max_per_user"] is None else row["max_per_user"],
            "all" if row["topk"] is None else row["topk"],
            "-" if row["threshold"] is None else f"{row['threshold']:.4g}",
            row["n_pred"], row["n_hit"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}"]


def eval_f1(pred_path: str | os.PathLike[str], label_path: str | os.PathLike[str],
            topks: Sequence[int | None] | None = None, thresholds: Sequence[float | None] = (None,),
            caps: Sequence[int | None] = (), output: str | os.PathLike[str] | None = None,
            overwrite: bool = False, max_table_rows: int = 30) -> dict:
    """Score predictions against true pairs; returns the best row and counts. ``topks`` None: chosen
    from the number of true pairs (``auto_topks``)."""
    if topks is not None and not list(topks):
        raise UserError("--topk-list: give counts such as 500,1000,all or auto")
    if output is not None and Path(os.fspath(output)).exists() and not overwrite:  # fail before the work
        raise UserError(f"output {output} already exists; pass --overwrite to replace it or choose another path")
    pred, pred_meta = read_predictions(pred_path)
    labels = read_labels(label_path)
    pred_days = days_of(pred, pred_meta)
    labels, keys = align_days(pred_days, labels, "label_day" in pred.column_names)
    if labels.table.num_rows == 0:
        console.warn(f"{labels.source}: no true pairs for the predicted day(s); F1 is 0")
    ranked = rank_predictions(pred.select(list(dict.fromkeys([*keys, "score"]))), labels.table, keys,
                              per_user=any(c is not None for c in caps))
    ks = list(topks) if topks else auto_topks(ranked.n_labels)
    all_caps = [None, *[c for c in caps if c is not None]]
    table = scan(ranked, ks, list(thresholds) or [None], all_caps)
    rows = table.to_pylist()
    best = next(r for r in rows if r["best"])
    shown = rows if len(rows) <= max_table_rows else sorted(rows, key=lambda r: -r["f1"])[:max_table_rows]
    console.table(f"eval-f1: {ranked.n_pairs:,} predicted pairs, {ranked.n_labels:,} true pairs"
                  + ("" if len(shown) == len(rows) else f" (best {len(shown)} of {len(rows)} rows)"),
                  ["max/user", "top-K", "threshold", "#pred", "#hit", "precision", "recall", "F1"],
                  [_fmt_row(r) for r in shown], highlight_row=next(i for i, r in enumerate(shown) if r["best"]))
    summary = {"best f1": round(best["f1"], 5), "best precision": round(best["precision"], 5),
               "best recall": round(best["recall"], 5), "best #pred": best["n_pred"], "best #hit": best["n_hit"],
               "best top-K": "all" if best["topk"] is None else best["topk"],
               "best threshold": "-" if best["threshold"] is None else best["threshold"],
               "best max/user": "-" if best["max_per_user"] is None else best["max_per_user"],
               "prediction rows": ranked.n_rows, "duplicate rows dropped": ranked.n_rows - ranked.n_pairs,
               "true pairs": ranked.n_labels, "days": ", ".join(sorted(str(d) for d in pred_days or ())) or "-",
               "labels": labels.source}
    if output is not None:
        with atomic_dir(output, overwrite) as tmp:
            write_parquet(table, tmp / "scan.parquet")
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp / "scan.csv")
            plot(ranked, table, all_caps, tmp / "f1_vs_topk.png")
            write_meta(tmp, kind="f1-scan", inputs=[os.fspath(pred_path), os.fspath(label_path)], rows=len(rows),
                       schema=SCAN_SCHEMA, best=best, true_pairs=ranked.n_labels, predicted_pairs=ranked.n_pairs,
                       prediction_rows=ranked.n_rows, label_days=sorted(str(d) for d in pred_days or ()),
                       labels=labels.source)
        summary["output"] = os.fspath(output)
    return summary


def best_settings(scan_dir: str | os.PathLike[str]) -> dict:
    """top-K, threshold and per-user cap of the best row of an ``eval-f1`` output (its ``_meta.json``)."""
    from rectool.artifacts import check_kind, read_meta

    check_kind(scan_dir, "f1-scan", "--settings-from")
    meta = read_meta(scan_dir)
    if meta is None or not isinstance(meta.get("best"), dict):
        raise UserError(f"--settings-from {scan_dir}: not an eval-f1 output directory (no best row in _meta.json)")
    best = meta["best"]
    return {"topk": best.get("topk"), "threshold": best.get("threshold"),
            "max_entries_per_user": best.get("max_per_user")}


# items of the list options (``rectool.cli.options.parse_list`` splits them and names the flag when an
# item raises ``ValueError``; a number out of range is a one-line error here)
TOPK_EXPECTED = f"a positive count (at most {MAX_COUNT}), 'all' or 'auto'"
THRESHOLD_EXPECTED = "a number or 'none'"
CAP_EXPECTED = f"a positive count (at most {MAX_COUNT})"


def topk(text: str) -> int | None:
    """One item of ``--topk-list``: ``"500"`` -> 500, ``"all"`` (or ``"none"``) -> None, no cut."""
    part = text.strip().lower()
    if part in ("all", "none"):
        return None
    if not part.isdigit():
        raise ValueError(text)
    if not 0 < int(part) <= MAX_COUNT:
        raise UserError(f"--topk-list {text!r}: not {TOPK_EXPECTED}")
    return int(part)


def threshold(text: str, flag: str = "--threshold-list") -> float | None:
    """One item of ``--threshold-list``: ``"0.5"`` -> 0.5, ``"none"`` -> None, no threshold."""
    part = text.strip().lower()
    if part == "none":
        return None
    value = float(part)
    if not math.isfinite(value):
        raise UserError(f"{flag} {text!r}: not a finite threshold; give numbers or 'none'")
    return value


def cap(text: str) -> int:
    """One item of ``--max-per-user``: ``"2"`` -> at most 2 pairs per user."""
    part = text.strip()
    if not part.isdigit():
        raise ValueError(text)
    if not 0 < int(part) <= MAX_COUNT:
        raise UserError(f"--max-per-user {text!r}: not {CAP_EXPECTED}")
    return int(part)


# the whole options as text, for Python callers (``ValueError`` for an item the item parser refuses)


def parse_topks(text: str) -> list[int | None] | None:
    """``"auto"`` -> None (chosen from the label count); ``"500,1000,all"`` -> [500, 1000, None]."""
    if text.strip().lower() == "auto":
        return None
    return [topk(part) for part in text.split(",") if part.strip()]


def parse_floats(text: str, flag: str) -> list[float | None]:
    """``"none,0.5,0.7"`` -> [None, 0.5, 0.7]."""
    return [threshold(part, flag) for part in text.split(",") if part.strip()] or [None]
