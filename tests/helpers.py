"""Helpers shared by test modules (import as ``from helpers import ...``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECTOOL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A real sample from ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample {path} is not here (../shared/data ships with CI, not with a fresh clone)")
    return path


def write_toy_ctr(directory: Path, rows: int = 6000, seed: int = 0, files: int = 2, row_group: int = 1000) -> Path:
    """A learnable CTR table: ids, a string id, dense values, a history list and a binary label.

    The label follows a known logistic model (user and item effects, a dense term, and
    whether the item's category appears in the history), so a model's loss must fall.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users = rng.integers(0, 100, rows)
    items = rng.integers(0, 200, rows)
    cats = items % 20
    hist_len = rng.integers(0, 8, rows)
    hist = [list(rng.integers(0, 500, n)) for n in hist_len]
    in_hist = np.array([(items[i] % 20) in {h % 20 for h in hist[i]} for i in range(rows)])
    price = rng.lognormal(2.0, 1.0, rows)
    u_eff = np.sin(users * 1.7) * 1.2
    i_eff = np.cos(items * 0.9) * 1.2
    logit = -0.5 + u_eff + i_eff + 0.8 * np.log1p(price) - 1.6 + 1.5 * in_hist
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    table = pa.table({
        "user_id": users.astype(np.int64), "item_id": items.astype(np.int64), "category_id": cats.astype(np.int64),
        "city": pa.array([f"city-{u % 7}" if u % 11 else None for u in users]),
        "price": price.astype(np.float32),
        "hist_items": pa.array([[int(x) for x in h] for h in hist], pa.list_(pa.int64())),
        "label": label,
    })
    directory.mkdir(parents=True, exist_ok=True)
    step = (rows + files - 1) // files
    for i in range(files):
        pq.write_table(table.slice(i * step, step), directory / f"part-{i}.parquet", row_group_size=row_group)
    return directory


def toy_config(train: Path, model_dir: Path, model: str = "deepfm", eval_input: Path | None = None,
               **overrides) -> dict:
    """A config dict for ``write_toy_ctr`` data (every feature kind)."""
    feats = [
        {"name": "user_id", "kind": "id", "hash_bucket_size": 400, "embedding_dim": 8},
        {"name": "item_id", "kind": "id", "num_buckets": 500, "embedding_dim": 8, "embedding_name": "item"},
        {"name": "city", "kind": "id", "hash_bucket_size": 50, "embedding_dim": 8},
        {"name": "price_log", "kind": "raw", "input": "price", "normalizer": "log1p"},
        {"name": "price_z", "kind": "raw", "input": "price", "normalizer": "zscore"},
        {"name": "price_bucket", "kind": "raw", "input": "price", "boundaries": [2.0, 5.0, 10.0, 30.0],
         "embedding_dim": 8},
        {"name": "user_x_cat", "kind": "cross", "inputs": ["user_id", "category_id"], "hash_bucket_size": 1000,
         "embedding_dim": 8},
        {"name": "hist_mean", "kind": "sequence", "input": "hist_items", "max_len": 5, "num_buckets": 500,
         "embedding_dim": 8, "embedding_name": "item", "combiner": "mean"},
    ]
    deep = ["user_id", "item_id", "city", "price_log", "price_z", "price_bucket", "user_x_cat", "hist_mean"]
    groups = {"deep": deep}
    model_cfg: dict = {"type": model, "deep": {"hidden_units": [32, 16]}}
    if model == "wide_and_deep":
        groups["wide"] = ["user_id", "item_id", "city", "price_log"]
    if model == "din":
        feats.append({"name": "hist_seq", "kind": "sequence", "input": "hist_items", "max_len": 5, "num_buckets": 500,
                      "embedding_dim": 8, "embedding_name": "item", "combiner": "none"})
        model_cfg["query"] = {"hist_seq": "item_id"}
        model_cfg["attention_units"] = [16]
    if model == "dcn_v2":
        model_cfg["cross_layers"] = 2
    cfg = {
        "data": {"train_input": str(train), "label": "label", "batch_size": 256, "num_workers": 0,
                 "shuffle_buffer": 2000},
        "features": feats,
        "feature_groups": groups,
        "model": model_cfg,
        "optimizer": {"dense": {"type": "adam", "lr": 0.01}, "sparse": {"type": "sparse_adam", "lr": 0.02}},
        "train": {"model_dir": str(model_dir), "epochs": 3, "log_every": 5, "seed": 1},
        "eval": {"metrics": ["auc", "gauc", "logloss"], "gauc_key": "user_id"},
    }
    if eval_input is not None:
        cfg["data"]["eval_input"] = str(eval_input)
    for key, value in overrides.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def write_toy_sequences(directory: Path, users: int = 400, items: int = 300, clusters: int = 10, length: int = 12,
                        seed: int = 0, repeat: float = 0.0) -> Path:
    """A next-item dataset (train/ and items/) where each user browses inside one item cluster;
    with ``repeat`` > 0, each next item is, with that probability, one of the last 5 again."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    rows = {"user_id": [], "hist_item_ids": [], "hist_category_ids": [], "item_id": [], "category_id": []}
    per = items // clusters
    for u in range(users):
        c = rng.integers(0, clusters)
        seq = (c * per + rng.integers(0, per, length)).tolist()
        for t in range(1, length if repeat > 0 else 0):
            if rng.random() < repeat:
                seq[t] = seq[max(0, t - 5) + int(rng.integers(0, min(t, 5)))]
        for t in range(1, length):
            rows["user_id"].append(u)
            rows["hist_item_ids"].append(seq[max(0, t - 5):t])
            rows["hist_category_ids"].append([i // per for i in seq[max(0, t - 5):t]])
            rows["item_id"].append(seq[t])
            rows["category_id"].append(seq[t] // per)
    (directory / "train").mkdir(parents=True, exist_ok=True)
    (directory / "items").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), directory / "train" / "part-0.parquet", row_group_size=2000)
    ids = np.arange(items)
    pq.write_table(pa.table({"item_id": ids, "category_id": ids // per}), directory / "items" / "part-0.parquet")
    return directory


def retrieval_config(data: Path, model_dir: Path, model: str = "two_tower", **model_over) -> dict:
    feats = [
        {"name": "hist", "kind": "sequence", "input": "hist_item_ids", "max_len": 5, "num_buckets": 300,
         "embedding_dim": 16, "embedding_name": "item", "combiner": "none"},
        {"name": "hist_cat", "kind": "sequence", "input": "hist_category_ids", "max_len": 5, "num_buckets": 10,
         "embedding_dim": 8, "embedding_name": "cat", "combiner": "mean"},
        {"name": "item_id", "kind": "id", "num_buckets": 300, "embedding_dim": 16, "embedding_name": "item"},
        {"name": "category_id", "kind": "id", "num_buckets": 10, "embedding_dim": 8, "embedding_name": "cat"},
    ]
    m = {"type": model, "output_dim": 16, "user_tower": {"hidden_units": [32]},
         "loss": {"temperature": 0.1}}
    if model == "mind":
        m.update(history="hist", interests=2)
    m.update(model_over)
    return {"data": {"train_input": str(data / "train"), "eval_input": str(data / "train"), "batch_size": 128,
                     "num_workers": 0, "label": None},
            "features": feats, "feature_groups": {"user": ["hist", "hist_cat"], "item": ["item_id", "category_id"]},
            "model": m, "optimizer": {"dense": {"lr": 0.005}, "sparse": {"type": "sparse_adam", "lr": 0.02}},
            "train": {"model_dir": str(model_dir), "epochs": 3, "log_every": 10, "seed": 3}}


def candidate_config(data: Path, model_dir: Path, model: str, **model_over) -> dict:
    """A TDM / NANN config on ``write_toy_sequences`` data: history and candidate share one table."""
    cfg = retrieval_config(data, model_dir)
    cfg["features"] = [
        {"name": "hist", "kind": "sequence", "input": "hist_item_ids", "max_len": 5, "hash_bucket_size": 5000,
         "embedding_dim": 8, "embedding_name": "node", "combiner": "none"},
        {"name": "item_id", "kind": "id", "hash_bucket_size": 5000, "embedding_dim": 8, "embedding_name": "node"},
    ]
    cfg["feature_groups"] = {}
    cfg["model"] = {"type": model, "candidate": "item_id", "history": "hist", "attention_units": [8],
                    "deep": {"hidden_units": [16], "batch_norm": False}, **model_over}
    cfg["train"]["epochs"] = 1
    return cfg


# A hand-checked Tianchi log: user, item, behaviour (1 browse 2 collect 3 cart 4 buy), geohash, category, time
HAND_ROWS = [
    "1,10,1,abc,100,2014-12-01 10",
    "1,10,1,abd,100,2014-12-16 09",
    "1,10,3,,100,2014-12-17 20",     # carted on the last day before 12-18, never bought: cart-not-bought
    "1,11,1,,100,2014-12-17 08",
    "1,11,4,,100,2014-12-17 09",
    "1,12,2,abc,200,2014-12-12 05",
    "1,10,4,,100,2014-12-18 03",     # on cut-off day 12-18: unseen by its features; its label
    "2,10,1,,100,2014-12-15 12",
    "2,10,3,,100,2014-12-17 10",
    "2,10,4,,100,2014-12-17 11",     # carted and bought the same day: not cart-not-bought
    "2,13,3,,200,2014-12-17 22",
    "2,14,1,,300,2014-11-20 01",     # an old pair: outside --pair-days
    "2,15,4,,300,2014-12-18 05",     # bought without any earlier action: a label no candidate covers
]

TIANCHI_HEADER = "user_id,item_id,behavior_type,user_geohash,item_category,time"


def tianchi_events(folder: Path, rows: list[str], items: list[str] | None = None) -> tuple[Path, Path | None]:
    """Convert hand-written Tianchi rows (``user,item,behavior,geohash,category,YYYY-MM-DD HH``) into an
    events dataset (and ``items`` rows ``item_id,geohash,category`` into an items dataset)."""
    from rectool.ingest.convert import convert

    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "user.csv"
    raw.write_text("\n".join([TIANCHI_HEADER, *rows]) + "\n")
    convert([raw], folder / "events")
    if items is None:
        return folder / "events", None
    raw_items = folder / "item.csv"
    raw_items.write_text("\n".join(["item_id,item_geohash,item_category", *items]) + "\n")
    convert([raw_items], folder / "items", fmt="tianchi-item")
    return folder / "events", folder / "items"
