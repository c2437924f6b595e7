"""Quality of rectool's retrieval models on the shared real datasets, through the CLI end to end.

For each dataset (``../shared/data``): ``convert`` → ``dataset --task next-item --protocol
given`` → ``train`` (two-tower, MIND) → ``export`` → ``embed`` → ``retrieve --method brute``
(every item scored, the user's training items excluded: the full-ranking protocol of issue
5) → ``eval-topk``. Popularity and item-CF run on the same files (``baseline``), so every
figure comes from the same evaluator.

=====================  ============================================  ===================
dataset                split                                         excluded, K
=====================  ============================================  ===================
movielens-100k         ``split_temporal_80_20`` (time-ordered lines)  training items, 20/50
amazon-cds             given train/test (lines are item *sets*:       training items, 20/50
                       ``dataset --targets set``)
taobao-multibehavior   train = buy ∪ cart (``convert --format pairs   the user's buys only,
                       --behavior 4/3``; buys are the targets,        10/20 (hit = recall)
                       ``--target-behaviors 4
                       --no-target-in-history``), test = one
                       held-out buy
=====================  ============================================  ===================

Configurations are chosen on a **validation split carved out of train**, never on test
(``--grid``): per user, the last 20% of a time-ordered line (movielens), a seeded random
20% of an item set (amazon-cds; users with >= 5 items), or the provided ``valid.txt`` buy
removed from the buys (taobao). The best configuration by validation recall at the first K
is then trained on the whole train split and evaluated on test. A grid entry's keys are config
paths (``model.loss.temperature``), ``embedding_dim``, ``user_embedding`` or ``retrieve.OPTION``
(a ``retrieve`` flag; a list of values is tried on one trained model, e.g.
``"retrieve.repeat_bonus": [0.25, 0.5, 1]``).
On taobao each row also splits the hit rate by segment (``in_history_*``: users whose held-out
buy is in their training list, i.e. carted; ``new_*``: the others); ``peer_itemknn_taobao.py``
splits the peer's the same way.

    python bench/bench_retrieval_quality.py [--datasets movielens-100k,amazon-cds,taobao-multibehavior]
        [--epochs 20] [--models two_tower,mind] [--no-baselines] [--grid NAME=JSON ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from bench_baselines import PEERS
from common import DATA, RECTOOL, ROOT, add_grid_option, log, parse_grid, run_shared_datasets

DATASETS: dict[str, dict[str, Any]] = {
    "movielens-100k": {"dir": "movielens-100k/split_temporal_80_20", "layout": "lines", "targets": "all",
                       "k": (20, 50), "exclusion": "the user's training items"},
    "amazon-cds": {"dir": "amazon-cds", "layout": "lines", "targets": "set", "k": (20, 50),
                   "exclusion": "the user's training items"},
    "taobao-multibehavior": {"dir": "taobao-multibehavior", "layout": "taobao", "targets": "set", "k": (10, 20),
                             "exclusion": "the user's buys only (22% of test buys are in the user's cart)",
                             "segments": True},  # a truth item may be in the user's (unexcluded) history
}
VALID_SHARE, VALID_MIN_ITEMS, SEED = 0.2, 5, 7


def rt(*args: object) -> str:
    out = subprocess.run([*RECTOOL, *map(str, args), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"rectool {' '.join(map(str, args))} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return out.stdout.strip()


def config(seq: Path, model_dir: Path, model: str, n_items: int, epochs: int) -> dict:
    buckets = n_items + 1
    feats = [
        {"name": "hist_items", "kind": "sequence", "input": "hist_item_ids", "max_len": 50, "num_buckets": buckets,
         "embedding_dim": 64, "embedding_name": "item", "combiner": "none"},
        {"name": "item_id", "kind": "id", "num_buckets": buckets, "embedding_dim": 64, "embedding_name": "item"},
    ]
    m: dict = {"type": model, "output_dim": 64, "user_tower": {"hidden_units": [128]},
               "item_tower": {"hidden_units": []}, "l2_normalize": True,
               "loss": {"temperature": 0.05, "log_q": True}}
    if model == "two_tower":
        m["history_pooling"] = "attention"
    else:
        m.update(history="hist_items", interests=4)
    return {"data": {"train_input": str(seq / "train"), "batch_size": 512, "label": None},
            "features": feats, "feature_groups": {"user": ["hist_items"], "item": ["item_id"]}, "model": m,
            "optimizer": {"dense": {"type": "adam", "lr": 0.001}, "sparse": {"type": "sparse_adam", "lr": 0.005}},
            "train": {"model_dir": str(model_dir), "epochs": epochs, "log_every": 200, "seed": 7}}


def apply_overrides(cfg: dict, overrides: dict[str, Any], n_users: int = 0) -> dict:
    """``{"model.loss.temperature": 0.1, "embedding_dim": 128, "train.epochs": 10}`` on a config;
    ``embedding_dim`` sets every feature's (and the towers' output) dimension; ``user_embedding:
    true`` adds a ``user_id`` embedding (ids below ``n_users``) to the user tower (given splits:
    test users are training users)."""
    cfg = copy.deepcopy(cfg)
    if overrides.get("user_embedding"):
        dim = cfg["features"][0]["embedding_dim"]
        cfg["features"].append({"name": "user", "kind": "id", "input": "user_id", "num_buckets": n_users,
                                "embedding_dim": dim})
        cfg["feature_groups"]["user"].append("user")
    for key, value in overrides.items():
        if key == "user_embedding" or key.startswith("retrieve."):
            continue
        if key == "embedding_dim":
            for f in cfg["features"]:
                f["embedding_dim"] = value
            cfg["model"]["output_dim"] = value
            continue
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


# --- splits: plain user-lines / pair files in DATA, converted like a user would --------------------

def _read_lines(path: Path) -> dict[int, list[int]]:
    return {int(f[0]): [int(x) for x in f[1:]] for f in (line.split() for line in open(path)) if f}


def _write_lines(path: Path, lines: dict[int, list[int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u} {' '.join(map(str, items))}\n" for u, items in lines.items() if items))
    return path


def _holdout_lines(train: Path, out: Path, ordered: bool) -> tuple[Path, Path]:
    """Validation from train lines: per user with >= VALID_MIN_ITEMS items, the last 20% of a
    time-ordered line or a seeded random 20% of an item set."""
    rng = np.random.default_rng(SEED)
    kept, held = {}, {}
    for user, items in _read_lines(train).items():
        n_out = int(len(items) * VALID_SHARE) if len(items) >= VALID_MIN_ITEMS else 0
        if ordered:
            cut = np.arange(len(items)) >= len(items) - n_out
        else:
            cut = np.zeros(len(items), bool)
            cut[rng.choice(len(items), n_out, replace=False)] = True
        kept[user] = [i for i, c in zip(items, cut) if not c]
        held[user] = [i for i, c in zip(items, cut) if c]
    return _write_lines(out / "train.txt", kept), _write_lines(out / "test.txt", held)


def _convert_split(name: str, spec: dict, src: Path, work: Path, split: str) -> tuple[list[str], str]:
    """Events (train, test) of one split; ``split`` is ``test`` or ``valid``."""
    out = work / f"{split}_raw"
    if spec["layout"] == "lines":
        train, test = src / "train.txt", src / "test.txt"
        if split == "valid":
            train, test = _holdout_lines(train, out, ordered=spec["targets"] != "set")
        return ([rt("convert", "--format", "user-lines", train, "-o", work / f"{split}_train_events")],
                rt("convert", "--format", "user-lines", test, "-o", work / f"{split}_test_events"))
    buys, test = src / "buy.txt", src / "test.txt"
    if split == "valid":  # valid.txt rows are in buy.txt: take them out, they become the truth
        held = {tuple(line.split()) for line in open(src / "valid.txt") if line.strip()}
        out.mkdir(parents=True, exist_ok=True)
        buys = out / "buy.txt"
        buys.write_text("".join(line for line in open(src / "buy.txt") if tuple(line.split()) not in held))
        test = src / "valid.txt"
    return ([rt("convert", "--format", "pairs", "--behavior", "4", buys, "-o", work / f"{split}_buy_events"),
             rt("convert", "--format", "pairs", "--behavior", "3", src / "cart.txt", "-o",
                work / f"{split}_cart_events")],
            rt("convert", "--format", "pairs", "--behavior", "4", test, "-o", work / f"{split}_test_events"))


def build_split(name: str, spec: dict, src: Path, work: Path, split: str) -> Path:
    train_events, test_events = _convert_split(name, spec, src, work, split)
    # taobao: learn buys (targets) from buys and carts (histories), a buy's own cart left out of its history
    # (the towers learn new items; carted ones come back through retrieve --repeat-bonus); leave out only the buys
    extra = ["--target-behaviors", "4", "--no-target-in-history", "--exclude-behaviors", "4"] \
        if spec["layout"] == "taobao" else []
    return Path(rt("dataset", "--task", "next-item", "--protocol", "given",
                   *[a for ev in train_events for a in ("--events", ev)], "--test-events", test_events,
                   "--min-behaviors", "1", "--max-history", "50", "--targets", spec["targets"], *extra,
                   "-o", work / f"{split}_seq"))


# --- runs ---------------------------------------------------------------------------------------------

def evaluate(recalls: Path, seq: Path, out: Path, k: tuple[int, ...], segments: bool = False) -> dict:
    rt("eval-topk", "--recall-path", recalls, "--truth-path", seq / "test" / "truth", "--k-list",
       ",".join(map(str, k)), "--output", out, "--overwrite")
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    scores = {f"{m}@{kk}": round(v[m], 4) for kk, v in metrics.items() for m in ("recall", "ndcg", "hit_rate")}
    return {**scores, **hits_by_segment(recalls, seq, k)} if segments else scores


def hits_by_segment(recalls: Path, seq: Path, k: tuple[int, ...]) -> dict:
    """Hit rate at each K for the users whose truth is already in their training list (taobao: a
    carted item bought later) and for the others: where a model's hits come from."""
    import pyarrow.dataset as pads

    def table(path: Path) -> dict:
        return pads.dataset(path).to_table().to_pydict()

    rec, truth, train = table(recalls), table(seq / "test" / "truth"), table(seq / "train_sequences")
    truth_col = next(c for c in truth if c != "user_id")
    wanted = {u: set(t) for u, t in zip(truth["user_id"], truth[truth_col]) if t}
    seen = {u: set(items) for u, items in zip(train["user_id"], train["item_ids"])}
    hits: dict[str, list[list[bool]]] = {"in_history": [], "new": []}
    for user, items in zip(rec["user_id"], rec["item_ids"]):
        if user in wanted:
            segment = "in_history" if wanted[user] & seen.get(user, set()) else "new"
            hits[segment].append([bool(wanted[user] & set(items[:kk])) for kk in k])
    return {f"{segment}_users": len(rows) for segment, rows in hits.items()} | {
        f"{segment}_hit@{kk}": round(float(np.mean([r[i] for r in rows])), 4) if rows else None
        for segment, rows in hits.items() for i, kk in enumerate(k)}


def run_baselines(spec: dict, seq: Path, work: Path) -> list[dict]:
    rows = []
    # taobao: item-CF reads the whole train list (buy ∪ cart) and leaves out only the buys
    scope = (["--history", seq / "train_sequences", "--exclude", seq / "test" / "inputs"]
             if spec["layout"] == "taobao" else ["--history", seq / "test" / "inputs"])
    for rule in ("popularity", "item-cf"):
        start = time.perf_counter()
        r = rt("baseline", "--rule", rule, "--train", seq / "train_sequences", *scope,
               "--users", seq / "test" / "truth", "--k", max(spec["k"]), "-o", work / f"recalls_{rule}")
        rows.append({"method": rule, "seconds": round(time.perf_counter() - start, 1),
                     **evaluate(Path(r), seq, work / f"eval_{rule}", spec["k"], spec.get("segments", False))})
    return rows


def retrieve_variants(overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """``{"retrieve.repeat_bonus": [0.5, 1]}`` -> ``[{"repeat_bonus": 0.5}, {"repeat_bonus": 1}]``: retrieve
    options tried on one trained model (no retraining per value)."""
    variants: list[dict[str, Any]] = [{}]
    for key, value in overrides.items():
        if key.startswith("retrieve."):
            name = key.split(".", 1)[1]
            variants = [{**v, name: x} for v in variants for x in (value if isinstance(value, list) else [value])]
    return variants


def run_model(cfg: dict, seq: Path, work: Path, tag: str, k: tuple[int, ...],
              variants: list[dict[str, Any]] | None = None, segments: bool = False) -> list[dict]:
    """Train, export, embed, then retrieve and evaluate once per retrieve-option variant."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["train_input"] = str(seq / "train")
    cfg["train"]["model_dir"] = str(work / tag)
    cfg_path = work / f"{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    m = rt("train", "--config", cfg_path)
    train_s = time.perf_counter() - start
    ex = rt("export", "--model-dir", m, "--export-dir", work / f"{tag}_export")
    emb = rt("embed", "--model", ex, "--items", seq / "items", "-o", work / f"{tag}_emb")
    results = []
    for i, options in enumerate(variants or [{}]):
        flags = [x for name, value in options.items() if value is not None  # None: the flag left out
                 for x in (f"--{name.replace('_', '-')}", value)]
        r = rt("retrieve", "--method", "brute", "--model", ex, "--items", emb, "--users", seq / "test" / "inputs",
               "--topk", max(k), *flags, "--overwrite", "-o", work / f"recalls_{tag}_{i}")
        results.append({"train_seconds": round(train_s, 1), **{f"retrieve.{n}": v for n, v in options.items()},
                        **evaluate(Path(r), seq, work / f"eval_{tag}_{i}", k, segments)})
    return results


def _largest(table: Path, column: str) -> int:
    import pyarrow.dataset as pads

    return int(pads.dataset(table).to_table(columns=[column])[column].to_numpy().max())


def _n_items(seq: Path) -> int:
    return _largest(seq / "items", "item_id")


def _n_users(seq: Path) -> int:
    return max(_largest(seq / "train", "user_id"), _largest(seq / "test" / "inputs", "user_id")) + 1


def run_dataset(name: str, src: Path, epochs: int, models: list[str], baselines: bool,
                grid: dict[str, dict[str, Any]]) -> dict:
    spec = DATASETS[name]
    work = DATA / "quality" / name
    shutil.rmtree(work, ignore_errors=True)
    seq = build_split(name, spec, src, work, "test")
    n_items, n_users = _n_items(seq), _n_users(seq)  # ids are dense and shared by both splits: one vocabulary
    key = f"recall@{spec['k'][0]}"
    segments = spec.get("segments", False)
    rows = run_baselines(spec, seq, work) if baselines else []
    for row in rows:
        log(f"{name}: {row}")
    validation: list[dict] = []
    if grid:
        valid_seq = build_split(name, spec, src, work, "valid")
        n_items, n_users = max(n_items, _n_items(valid_seq)), max(n_users, _n_users(valid_seq))
    for model in models:
        base = config(seq, work / model, model, n_items, epochs)
        chosen: dict[str, Any] = {}
        if grid:
            scores = {}
            for label, overrides in grid.items():
                results = run_model(apply_overrides(base, overrides, n_users), valid_seq, work,
                                    f"valid_{model}_{label}", spec["k"], retrieve_variants(overrides), segments)
                for result in results:
                    options = {k: v for k, v in result.items() if k.startswith("retrieve.")}
                    scores[(label, json.dumps(options))] = result[key]
                    validation.append({"method": model, "config": label, **overrides, **result})
                    log(f"{name} validation: {validation[-1]}")
            best, options = max(scores, key=scores.get)
            chosen = {"config": best, **grid[best], **json.loads(options)}
        final = apply_overrides(base, {k: v for k, v in chosen.items() if k != "config"}, n_users)
        result = run_model(final, seq, work, model, spec["k"], retrieve_variants(chosen), segments)[0]
        rows.append({"method": model, "epochs": epochs, **chosen, **result})
        log(f"{name}: {rows[-1]}")
    return {"exclusion": spec["exclusion"], "targets": spec["targets"], "items": n_items, "peers": PEERS[name],
            "chosen_by": f"validation {key} (a split of train)" if grid else "fixed configuration",
            "validation": validation, "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--models", default="two_tower,mind")
    ap.add_argument("--no-baselines", action="store_true")
    add_grid_option(ap)
    args = ap.parse_args()
    grid = parse_grid(args.grid)
    run_shared_datasets("retrieval_quality", DATASETS, args.datasets, lambda name, src: run_dataset(
        name, src, args.epochs, args.models.split(","), not args.no_baselines, grid))


if __name__ == "__main__":
    main()
