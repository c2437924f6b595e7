"""``rectool submit``: predictions -> the competition's submission file.

Inputs
    ``--pred-path``: predictions of one day (``rectool.ranking.predictions``; dir, file,
    glob or ``-``); ``--item-subset-path``: the item subset P (the items dataset from
    ``convert`` or the raw item file).

``--settings-from DIR`` takes the top-K, threshold and per-user cap of the best row of an
``eval-f1`` scan (the eval day's, say); explicit flags win.

Steps, in order: keep items in P; deduplicate pairs (highest score); keep ``score >=
--threshold``; keep each user's ``--max-entries-per-user`` best pairs (ties by item_id);
keep the global ``--topk`` best pairs (ties by user_id, item_id); sort by score.

Output (one file, written atomically)
    ``--format tsv`` (default): ``user_id<TAB>item_id`` lines, no header;
    ``--format csv``: header ``user_id,item_id`` then ``user_id,item_id`` lines (the
    offline version's format).

Example::

    rectool submit --pred-path data/pred/predict --item-subset-path data/items \\
        --topk 700 --output out/submission.tsv
"""

from __future__ import annotations

import math
import os
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rectool.artifacts import atomic_file
from rectool.duck import bound, quiet_duckdb
from rectool.errors import UserError
from rectool.ranking.common import read_item_subset
from rectool.ranking.f1 import best_settings
from rectool.ranking.predictions import days_of, read_predictions

Format = Literal["tsv", "csv"]


def submit(pred_path: str | os.PathLike[str], item_subset_path: str | os.PathLike[str],
           output: str | os.PathLike[str], threshold: float | None = None, topk: int | None = None,
           max_entries_per_user: int | None = None, fmt: Format = "tsv", overwrite: bool = False,
           settings_from: str | os.PathLike[str] | None = None) -> dict:
    """Write the submission file; returns the counts of every step.

    ``settings_from``: an ``eval-f1`` output whose best row gives the top-K, threshold and per-user
    cap (e.g. the scan of the eval day); explicit arguments take precedence.
    """
    if settings_from is not None:
        best = best_settings(settings_from)
        topk = topk if topk is not None else best["topk"]
        threshold = threshold if threshold is not None else best["threshold"]
        max_entries_per_user = max_entries_per_user if max_entries_per_user is not None \
            else best["max_entries_per_user"]
    if fmt not in get_args(Format):
        raise UserError(f"--format {fmt}: choose tsv or csv")
    if topk is not None and topk < 1:
        raise UserError(f"--topk {topk}: give at least 1, or leave it out to keep every pair")
    if max_entries_per_user is not None and max_entries_per_user < 1:
        raise UserError(f"--max-entries-per-user {max_entries_per_user}: give at least 1")
    if threshold is not None and not math.isfinite(threshold):
        raise UserError(f"--threshold {threshold}: give a finite score (pairs with score >= it are kept), or leave "
                        "it out to keep every score")
    if os.fspath(output) == "-":
        raise UserError("--output -: the submission is a file; give its path")
    pred, meta = read_predictions(pred_path)
    days = days_of(pred, meta)
    if days and len(days) > 1:
        raise UserError(f"--pred-path {pred_path}: predictions for {len(days)} days "
                        f"({', '.join(sorted(map(str, days)))}); a submission is for one day (use the predict split)")
    p_items = read_item_subset(item_subset_path, "--item-subset-path")
    con = quiet_duckdb()
    con.register("pred", pred.select(["user_id", "item_id", "score"]))
    con.register("p_items", pa.table({"item_id": p_items}))
    # the values are bound parameters, never SQL text; the threshold at float32 precision, the
    # precision of the prediction schema (0.9 keeps a score of 0.9)
    values = {"threshold": None if threshold is None else float(np.float32(threshold)),
              "cap": max_entries_per_user, "topk": topk}
    t_cond = "TRUE" if threshold is None else "score >= $threshold"
    cap = "TRUE" if max_entries_per_user is None else "user_rank <= $cap"
    limit = "" if topk is None else "LIMIT $topk"
    con.execute("CREATE TEMP TABLE in_p AS SELECT * FROM pred SEMI JOIN p_items USING (item_id)").fetchall()
    con.execute("CREATE TEMP TABLE pairs AS SELECT user_id, item_id, max(score) AS score FROM in_p "
                "GROUP BY user_id, item_id").fetchall()
    kept = f"""CREATE TEMP TABLE kept AS SELECT *,
                 row_number() OVER (PARTITION BY user_id ORDER BY score DESC, item_id) AS user_rank
               FROM pairs WHERE {t_cond}"""
    con.execute(kept, bound(kept, **values)).fetchall()
    counts = f"""SELECT (SELECT count(*) FROM in_p), (SELECT count(*) FROM pairs), (SELECT count(*) FROM kept),
                        (SELECT count(*) FROM kept WHERE {cap})"""
    n_in_p, n_pairs, n_kept, n_capped = con.execute(counts, bound(counts, **values)).fetchall()[0]
    select = f"SELECT user_id, item_id FROM kept WHERE {cap} ORDER BY score DESC, user_id, item_id {limit}"
    final = con.sql(select, params=bound(select, **values)).to_arrow_table()
    con.close()
    with atomic_file(output, overwrite) as tmp, open(tmp, "wb") as fh:
        if fmt == "csv":  # written by hand: pyarrow would quote the header
            fh.write(b"user_id,item_id\n")
        opts = pacsv.WriteOptions(include_header=False, delimiter="\t" if fmt == "tsv" else ",",
                                  quoting_style="none")
        pacsv.write_csv(final, fh, write_options=opts)
    return {"top-K": topk if topk is not None else "all",
            "prediction rows": pred.num_rows, "rows with item in P": n_in_p, "distinct pairs": n_pairs,
            "score >= threshold": n_kept, "after per-user cap": n_capped, "written": final.num_rows,
            "users": len(set(final["user_id"].to_pylist())),
            "day": ", ".join(sorted(map(str, days or ()))) or "-", "format": fmt, "output": os.fspath(output)}
