"""Sequence encoders for the user tower: mean pooling vs GRU4Rec vs SASRec, through the CLI end to end.

The same two-tower (shared item table, linear item tower, L2-normalised, sampled softmax with
log-Q) with three user encoders (``model.user_encoder``): ``mean`` (the history mean-pooled and
linearly mapped: today's tower), ``gru4rec`` and ``sasrec`` (``rectool.train.models.encoders``).
Each is trained → exported → ``embed`` → ``retrieve --method brute`` (every item scored, the
user's training items excluded) → ``eval-topk``, with the helpers and evaluator of
``bench_retrieval_quality.py``, so the figures compare with its rows.

=================  =================================================  ==========================
dataset            split                                              validation (from train)
=================  =================================================  ==========================
movielens-100k     ``split_temporal_80_20`` (per user, the last 20%   the last 20% of each
                   of the time-ordered ratings is the test)            train line
amazon-beauty      leave-one-out: each user's last item is the test   each user's last train item
                   (``Beauty.txt``, chronological lines)
=================  =================================================  ==========================

Configurations are chosen on the validation split, never on test (``--grid``, as in
``bench_retrieval_quality.py``: a grid entry's keys are config paths, e.g.
``model.loss.temperature``); the best by validation recall at the first K is trained on the whole
train split and evaluated on test. Without ``--grid`` each encoder runs its fixed configuration.

    python bench/bench_sequence_encoders.py [--datasets movielens-100k,amazon-beauty]
        [--encoders mean,gru4rec,sasrec] [--epochs 20] [--grid NAME=JSON ...] [--fixed JSON]

``--fixed`` applies settings chosen in advance (e.g. on another dataset's validation split) to every
run, with no validation run: a recipe fixed before the dataset is seen.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from bench_retrieval_quality import _n_items, _read_lines, _write_lines, apply_overrides, build_split, config, run_model
from common import DATA, add_grid_option, log, parse_grid, run_shared_datasets

DATASETS: dict[str, dict[str, Any]] = {
    "movielens-100k": {"dir": "movielens-100k/split_temporal_80_20", "layout": "lines", "targets": "all",
                       "k": (20, 50), "exclusion": "the user's training items", "split": "temporal 80/20"},
    "amazon-beauty": {"dir": "amazon-beauty", "layout": "lines", "targets": "all", "k": (10, 20),
                      "exclusion": "the user's training items", "split": "leave-one-out"},
}
ENCODERS: dict[str, dict[str, Any]] = {
    "mean": {"type": "pooling"},
    "gru4rec": {"type": "gru4rec", "history": "hist_items", "dropout": 0.1},
    "sasrec": {"type": "sasrec", "history": "hist_items", "blocks": 2, "heads": 1, "dropout": 0.2},
}


def encoder_config(seq: Path, work: Path, encoder: str, n_items: int, epochs: int) -> dict:
    """bench_retrieval_quality's two-tower config with this user encoder and a linear user tower."""
    cfg = config(seq, work / encoder, "two_tower", n_items, epochs)
    m = cfg["model"]
    m["user_tower"] = {"hidden_units": []}
    if encoder == "mean":
        m["history_pooling"] = "mean"
    else:
        m["user_encoder"] = dict(ENCODERS[encoder])
    return cfg


def leave_one_out(lines: dict[int, list[int]], out: Path) -> Path:
    """train.txt (all but each user's last item) and test.txt (the last item) in ``out``."""
    _write_lines(out / "train.txt", {u: items[:-1] for u, items in lines.items() if len(items) > 1})
    _write_lines(out / "test.txt", {u: items[-1:] for u, items in lines.items() if len(items) > 1})
    return out


def splits(name: str, spec: dict, src: Path, work: Path, validate: bool) -> tuple[Path, Path | None]:
    """(test split, validation split or None) as next-item datasets."""
    if name == "amazon-beauty":  # leave-one-out, then the last train item of each user for validation
        whole = _read_lines(src / "Beauty.txt")
        test_src = leave_one_out(whole, work / "loo_test")
        test = build_split(name, spec, test_src, work / "test", "test")
        if not validate:
            return test, None
        valid_src = leave_one_out(_read_lines(test_src / "train.txt"), work / "loo_valid")
        return test, build_split(name, spec, valid_src, work / "valid", "test")
    test = build_split(name, spec, src, work, "test")
    return test, build_split(name, spec, src, work, "valid") if validate else None


def run_dataset(name: str, src: Path, epochs: int, encoders: list[str], grid: dict[str, dict[str, Any]],
                fixed: dict[str, Any] | None = None) -> dict:
    spec = DATASETS[name]
    work = DATA / "sequence_encoders" / name
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("test", "valid"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    seq, valid_seq = splits(name, spec, src, work, bool(grid))
    n_items = max(_n_items(seq), _n_items(valid_seq) if valid_seq else 0)
    key = f"recall@{spec['k'][0]}"
    rows, validation = [], []
    for encoder in encoders:
        base = apply_overrides(encoder_config(seq, work, encoder, n_items, epochs), fixed or {})
        chosen: dict[str, Any] = {}
        if grid:
            scores = {}
            for label, overrides in grid.items():
                result = run_model(apply_overrides(base, overrides), valid_seq, work, f"valid_{encoder}_{label}",
                                   spec["k"])[0]
                scores[label] = result[key]
                validation.append({"encoder": encoder, "config": label, **overrides, **result})
                log(f"{name} validation: {validation[-1]}")
            best = max(scores, key=scores.get)
            chosen = {"config": best, **grid[best]}
        final = apply_overrides(base, {k: v for k, v in chosen.items() if k != "config"})
        result = run_model(final, seq, work, encoder, spec["k"])[0]
        rows.append({"encoder": encoder, "epochs": epochs, **chosen, **result})
        log(f"{name}: {rows[-1]}")
    return {"split": spec["split"], "exclusion": spec["exclusion"], "items": n_items,
            "chosen_by": f"validation {key} (a split of train)" if grid else "fixed configuration",
            "fixed": fixed or {},
            "validation": validation, "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--encoders", default=",".join(ENCODERS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--fixed", default="{}", help='settings fixed in advance for every run, e.g. '
                                                  '\'{"model.loss.temperature": 0.1}\' (no validation run)')
    add_grid_option(ap)
    args = ap.parse_args()
    grid = parse_grid(args.grid)
    fixed = json.loads(args.fixed)
    run_shared_datasets("sequence_encoders", DATASETS, args.datasets, lambda name, src: run_dataset(
        name, src, args.epochs, args.encoders.split(","), grid, fixed))


if __name__ == "__main__":
    main()
