"""``rectool baseline``: score the candidates of a ranking dataset with a named rule.

Inputs
    A split of ``rectool dataset`` (``OUT/predict``, ``OUT/eval``, ``OUT/train``), or the
    dataset folder itself with ``--split``. Rules read a few ``ui_*`` feature columns.

Outputs
    Predictions in the shared schema (``rectool.ranking.predictions``)::

        user_id int64, item_id int64, score float32, label_day date32

    as a directory (``_meta.json`` kind ``predictions`` with the rule) or ``-`` (Arrow
    IPC on stdout).

Rules (``RULES``; add one with the ``@rule(...)`` decorator)
    ``cart-last-day``     pairs carted on the last day and not bought since; score =
                          (hour of that cart + 1) / 24, the latest carts first. Only
                          those pairs are written.
    ``weighted-recency``  every candidate; score = sum over behaviours b of
                          w_b * (n_b,1d + 0.4 (n_b,3d - n_b,1d) + 0.1 (n_b,7d - n_b,3d))
                          + 5 * cart_not_bought_1d, with w = browse 1, collect 2,
                          cart 4, buy -4 (a recent buy makes another one less likely).

Example::

    rectool baseline --samples data/samples/predict --rule cart-last-day --output data/pred/cart
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import pyarrow as pa

from rectool.artifacts import check_kind, open_dataset, require_columns
from rectool.badinput import read_batches
from rectool.errors import UserError
from rectool.ranking.predictions import PRED_SCHEMA, write_predictions
from rectool.ranking.samples import SplitName

ScoreFn = Callable[[pa.Table], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    columns: tuple[str, ...]
    score: ScoreFn  # table -> (score float32 per row, keep mask)


RULES: dict[str, Rule] = {}


def rule(name: str, description: str, columns: tuple[str, ...]) -> Callable[[ScoreFn], ScoreFn]:
    """Register a scoring rule under ``name``."""

    def register(fn: ScoreFn) -> ScoreFn:
        RULES[name] = Rule(name, description, columns, fn)
        return fn

    return register


def _col(t: pa.Table, name: str) -> np.ndarray:
    return t.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


@rule("cart-last-day", "carted on the last day and not bought since; latest carts first",
      ("ui_cart_not_bought_1d", "ui_cart_hour_1d"))
def _cart_last_day(t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    keep = _col(t, "ui_cart_not_bought_1d") > 0
    return ((_col(t, "ui_cart_hour_1d") + 1.0) / 24.0).astype(np.float32), keep


WEIGHTS = {"browse": 1.0, "collect": 2.0, "cart": 4.0, "buy": -4.0}


@rule("weighted-recency", "behaviour-weighted counts, recent days weigh more; every candidate",
      tuple(f"ui_{b}_{w}" for b in WEIGHTS for w in ("1d", "3d", "7d")) + ("ui_cart_not_bought_1d",))
def _weighted_recency(t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    score = 5.0 * _col(t, "ui_cart_not_bought_1d")
    for b, w in WEIGHTS.items():
        d1, d3, d7 = (_col(t, f"ui_{b}_{s}") for s in ("1d", "3d", "7d"))
        score += w * (d1 + 0.4 * (d3 - d1) + 0.1 * (d7 - d3))
    return score.astype(np.float32), np.ones(t.num_rows, dtype=bool)


def resolve_samples(samples: str | os.PathLike[str], split: SplitName | None) -> str:
    """A dataset folder plus ``--split`` -> the split folder; a split folder or file as it is."""
    path = Path(os.fspath(samples))
    if path.is_dir() and any((path / s).is_dir() for s in get_args(SplitName)):
        name = split or "predict"
        if not (path / name).is_dir():
            raise UserError(f"--samples {samples}: has no {name}/ split; choose --split train, eval or predict")
        return os.fspath(path / name)
    if split:
        raise UserError(f"--split {split}: --samples {samples} is already one split; drop --split")
    return os.fspath(path)


def score_batches(samples: str, chosen: Rule) -> Iterator[pa.Table]:
    ds = open_dataset(samples, "--samples")
    require_columns(ds.schema, ("user_id", "item_id", "label_day", *chosen.columns), samples,
                    f"rule {chosen.name} needs them: build the dataset from features with --windows including "
                    "1,3,7 (the defaults)")
    for batch in read_batches(ds, f"--samples {samples}", columns=["user_id", "item_id", "label_day", *chosen.columns],
                              batch_size=262_144):
        t = pa.Table.from_batches([batch])
        score, keep = chosen.score(t)
        kept = pa.array(keep)
        yield pa.table({"user_id": t["user_id"].filter(kept), "item_id": t["item_id"].filter(kept),
                        "score": pa.array(score[keep], pa.float32()),
                        "label_day": t["label_day"].filter(kept).cast(pa.date32())}, schema=PRED_SCHEMA)


def run_baseline(samples: str | os.PathLike[str], output: str | os.PathLike[str], rule_name: str = "cart-last-day",
                 split: SplitName | None = None, overwrite: bool = False) -> dict:
    """Score a dataset split with a rule and write predictions; returns the summary figures."""
    if rule_name not in RULES:
        raise UserError(f"--rule {rule_name}: unknown; choose one of {', '.join(RULES)}")
    chosen = RULES[rule_name]
    source = resolve_samples(samples, split)
    meta = check_kind(source, "samples", "--samples")
    if meta is not None and meta.get("task", "ranking") != "ranking":
        raise UserError(f"--samples {source}: a {meta.get('task')} dataset; baseline rules score ranking datasets")
    days = sorted(d for d in (meta or {}).get("label_days", []) if d)
    rows = write_predictions(score_batches(source, chosen), output, overwrite, inputs=[source], rule=chosen.name,
                             description=chosen.description, label_days=days,
                             split=(meta or {}).get("split_name"))
    return {"rule": chosen.name, "samples": source, "predictions": rows, "label days": ", ".join(days) or "-",
            "output": os.fspath(output)}
