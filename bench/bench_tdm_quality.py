"""TDM and NANN quality on the shared real datasets (issues 6, 7), through the CLI end to end.

Datasets (``../shared/data``): movielens-100k (``u.data``; category = the first genre flag
of ``u.item``) and amazon-beauty (``Beauty.txt``, time-ordered lines; category = the first
attribute in ``Beauty_item2attributes.json``). Protocol: the TDM/JTM user split of
``dataset --task next-item`` (disjoint train and test users; a test user's first half of
behaviours is the input, the second half the truth; input items excluded from results).

For each dataset: ``tree init`` → ``train`` (TDM) → ``export`` → ``embed`` → ``tree cluster``
→ ``train`` again on the learnt tree → ``export``; for both trees ``retrieve --method tdm``
(beam search) and ``--method brute`` (every leaf scored by the same model) → ``eval-topk``
with ``--brute-path`` (recall-Δ, coverage); the share of the catalogue scored comes from
the beam search's ``_meta.json``. NANN: ``train`` (``examples/nann_userbehavior.yaml``) →
``export`` → ``embed`` → ``hnsw build`` (l2) → ``retrieve --method brute`` over the index and
``--method nann`` at several widths (best-first expansion) → ``eval-topk --brute-path``. On
the same split: a two-tower model (exact search, and HNSW search of its index compared with
the exact one), item-CF and popularity.

    python bench/bench_tdm_quality.py [--datasets movielens-100k,amazon-beauty] [--epochs 4]
        [--methods baselines,tdm,tdm_attributes,two_tower,nann] [--nann-steps N] [--reuse]

``tdm_attributes``: TDM on the initial tree built with ``--attr-fields category_id,second_attr,last_attr``
(each item's first, second and last attribute id), trained without and with ``model.node_features`` on
them, brute force and the first beam: does reading the attributes move recall?
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml
from bench_baselines import _shared_data
from bench_retrieval_quality import rt as _rt
from common import DATA, ROOT, emit, log

# per dataset: test users, recall K, beams (nodes kept per level; the first is the headline setting)
# NANN: (ef and rounds for levels 2, 1, 0; expand), the paper's rounds last
SETTINGS = {
    "movielens-100k": {"n_test": 200, "k": 10, "beams": [10, 20, 40], "min_behaviors": 20,
                       "nann": [((10, 20, 20), (1, 100, 1000), 1), ((20, 40, 40), (1, 100, 1000), 2),
                                ((40, 80, 80), (1, 100, 1000), 4), ((100, 200, 400), (1, 1, 3), None)]},
    "amazon-beauty": {"n_test": 1000, "k": 20, "beams": [40, 80, 160], "min_behaviors": 5,
                      "nann": [((20, 40, 40), (1, 100, 1000), 1), ((50, 100, 100), (1, 100, 1000), 2),
                               ((100, 200, 200), (1, 100, 1000), 4), ((100, 200, 400), (1, 1, 3), None)]},
}


def rt(*args: object) -> str:
    """A rectool command; outputs are scratch, so a rerun (``--reuse``) replaces them."""
    return _rt(*args) if args[0] == "train" else _rt(*args, "--overwrite")


def convert(name: str, root: Path, work: Path) -> tuple[str, dict[int, list[int]]]:
    """Events dataset and item -> its attribute ids (the first one is the category)."""
    if name == "movielens-100k":
        src = root / "movielens-100k"
        events = rt("convert", "--format", "movielens", src / "u.data", "-o", work / "events")
        attrs = {}
        for line in (src / "u.item").read_text(encoding="latin-1").splitlines():
            parts = line.split("|")
            attrs[int(parts[0])] = [g for g, flag in enumerate(parts[5:]) if flag == "1"]
        return events, attrs
    src = root / "amazon-beauty"
    events = rt("convert", "--format", "user-lines", src / "Beauty.txt", "-o", work / "events")
    return events, {int(k): v for k, v in json.loads((src / "Beauty_item2attributes.json").read_text()).items()}


ATTRIBUTES = ["category_id", "second_attr", "last_attr"]  # node_features of the tdm_attributes rows


def items_with_categories(seq: Path, attrs: dict[int, list[int]], out: Path) -> Path:
    """items/ of the split with category_id (the first attribute, 0 without), second_attr and last_attr (null
    where an item has fewer attributes)."""
    ids = seq_items(seq)
    values = [attrs.get(int(i), []) for i in ids]
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item_id": ids, "category_id": [v[0] if v else 0 for v in values],
                             "second_attr": pa.array([v[1] if len(v) > 1 else None for v in values], pa.int64()),
                             "last_attr": pa.array([v[-1] if len(v) > 2 else None for v in values], pa.int64())}),
                   out / "part-0.parquet")
    return out


def seq_items(seq: Path) -> np.ndarray:
    return pads.dataset(seq / "items").to_table(columns=["item_id"])["item_id"].to_numpy()


def layer_samples(tree: str) -> list[int]:
    sizes = json.loads((Path(tree) / "_meta.json").read_text())["level_sizes"]
    return [0] + [min(1 + level // 2, 8, n - 1) for level, n in enumerate(sizes) if level]


def tdm_config(seq: Path, tree: str, model_dir: Path, epochs: int, node_features: list[str] | None = None) -> dict:
    cfg = yaml.safe_load((ROOT / "examples" / "tdm_userbehavior.yaml").read_text())
    cfg["data"].update(train_input=str(seq / "train"), eval_input=str(seq / "train"))
    cfg["model"].update(tree=tree, layer_num_sample=layer_samples(tree), node_features=node_features or [])
    cfg["train"] = {"model_dir": str(model_dir), "epochs": epochs, "log_every": 200, "seed": 7}
    cfg["eval"] = {"max_rows": 5000}
    return cfg


def two_tower_config(seq: Path, model_dir: Path, n_items: int, epochs: int) -> dict:
    feats = [{"name": "hist_items", "kind": "sequence", "input": "hist_item_ids", "max_len": 50,
              "num_buckets": n_items + 1, "embedding_dim": 64, "embedding_name": "item", "combiner": "none"},
             {"name": "item_id", "kind": "id", "num_buckets": n_items + 1, "embedding_dim": 64,
              "embedding_name": "item"}]
    return {"data": {"train_input": str(seq / "train"), "batch_size": 512, "label": None}, "features": feats,
            "feature_groups": {"user": ["hist_items"], "item": ["item_id"]},
            "model": {"type": "two_tower", "output_dim": 64, "user_tower": {"hidden_units": [128]},
                      "item_tower": {"hidden_units": []}, "l2_normalize": True, "history_pooling": "attention",
                      "loss": {"temperature": 0.05, "log_q": True}},
            "optimizer": {"dense": {"type": "adam", "lr": 0.001}, "sparse": {"type": "sparse_adam", "lr": 0.005}},
            "train": {"model_dir": str(model_dir), "epochs": epochs, "log_every": 200, "seed": 7}}


def nann_config(seq: Path, model_dir: Path, n_items: int, steps: int) -> dict:
    cfg = yaml.safe_load((ROOT / "examples" / "nann_userbehavior.yaml").read_text())
    cfg["data"].update(train_input=str(seq / "train"), eval_input=str(seq / "train"))
    for feature in cfg["features"]:
        feature.pop("hash_bucket_size")
        feature["num_buckets"] = n_items + 1
    cfg["train"] = {"model_dir": str(model_dir), "epochs": 1, "max_steps": steps, "log_every": 200, "seed": 7}
    cfg["eval"] = {"max_rows": 5000}
    return cfg


def search_row(method: str, recalls: str, seq: Path, out: Path, k: int, seconds: float,
               brute: str | None = None) -> dict:
    meta = json.loads((Path(recalls) / "_meta.json").read_text())
    return {"method": method, "search_s": round(seconds, 1), "mean_scored": round(meta["mean_scored_per_user"], 1),
            "catalogue": meta["catalogue"], **evaluate(recalls, seq, out, k, brute)}


def nann_round(seq: Path, work: Path, s: dict, n_items: int, steps: int, reuse: bool) -> list:
    ex, secs = work / "nann_export", None
    if not (reuse and ex.is_dir()):
        m, secs = train(nann_config(seq, work / "nann", n_items, steps), work / "nann.yaml")
        ex = rt("export", "--model-dir", m, "--export-dir", ex)
    emb = rt("embed", "--model", ex, "--items", seq / "items", "-o", work / "nann_emb")
    index = rt("hnsw", "build", "--input", emb, "--space", "l2", "--m", 16, "-o", work / "nann_index")
    users, k = seq / "test" / "inputs", s["k"]
    start = time.perf_counter()
    brute = rt("retrieve", "--method", "brute", "--model", ex, "--index", index, "--users", users, "--topk", k,
               "-o", work / "recalls_nann_brute")
    rows = [{**search_row("nann model, brute force", brute, seq, work / "eval_nann_brute", k,
                          time.perf_counter() - start), "train_seconds": secs}]
    for ef, rounds, expand in s["nann"]:
        tag = "_".join(map(str, ef + rounds + (expand or 0,)))
        start = time.perf_counter()
        r = rt("retrieve", "--method", "nann", "--model", ex, "--index", index, "--users", users, "--topk", k,
               "--ef", ",".join(map(str, ef)), "--rounds", ",".join(map(str, rounds)),
               *(["--expand", expand] if expand else []), "-o", work / f"recalls_nann_{tag}")
        rows.append(search_row(f"nann ef {ef} rounds {rounds} expand {expand or 'all'}", r, seq,
                               work / f"eval_nann_{tag}", k, time.perf_counter() - start, brute))
    return rows


def evaluate(recalls: str, seq: Path, out: Path, k: int, brute: str | None = None) -> dict:
    extra = ["--brute-path", brute] if brute else []
    rt("eval-topk", "--recall-path", recalls, "--truth-path", seq / "test" / "truth", "--k-list", k,
       "--output", out, "--overwrite", *extra)
    row = json.loads((out / "metrics.json").read_text())["metrics"][str(k)]
    return {f"{m}@{k}": round(row[m], 4) for m in ("recall", "ndcg", "hit_rate", "recall_brute", "recall_delta",
                                                    "coverage_brute") if m in row}


def train(cfg: dict, path: Path) -> tuple[str, float]:
    path.write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    return rt("train", "--config", path), round(time.perf_counter() - start, 1)



def tdm_round(tag: str, tree: str, seq: Path, work: Path, s: dict, epochs: int, reuse: bool,
              node_features: list[str] | None = None, beams: list[int] | None = None) -> tuple[list, str]:
    ex = work / f"tdm_{tag}_export"
    secs = None
    if not (reuse and ex.is_dir()):
        m, secs = train(tdm_config(seq, tree, work / f"tdm_{tag}", epochs, node_features), work / f"tdm_{tag}.yaml")
        ex = rt("export", "--model-dir", m, "--export-dir", ex)
    start = time.perf_counter()
    brute = rt("retrieve", "--method", "brute", "--model", ex, "--tree", tree, "--users", seq / "test" / "inputs",
               "--topk", s["k"], "-o", work / f"recalls_tdm_{tag}_brute")
    brute_s = time.perf_counter() - start
    rows = [{"method": f"tdm ({tag} tree), brute force", "train_seconds": secs, "search_s": round(brute_s, 1),
             **evaluate(brute, seq, work / f"eval_tdm_{tag}_brute", s["k"])}]
    for beam_width in beams or s["beams"]:
        start = time.perf_counter()
        beam = rt("retrieve", "--method", "tdm", "--model", ex, "--tree", tree, "--users", seq / "test" / "inputs",
                  "--topk", s["k"], "--beam", beam_width, "-o", work / f"recalls_tdm_{tag}_beam{beam_width}")
        meta = json.loads((Path(beam) / "_meta.json").read_text())
        seconds = round(time.perf_counter() - start, 1)
        rows.append({"method": f"tdm ({tag} tree), beam {beam_width}", "search_s": seconds,
                     "mean_scored": round(meta["mean_scored_per_user"], 1), "catalogue": meta["catalogue"],
                     **evaluate(beam, seq, work / f"eval_tdm_{tag}_beam{beam_width}", s["k"], brute)})
    return rows, str(ex)


def run_dataset(name: str, root: Path, epochs: int, reuse: bool, methods: set[str], nann_steps: int) -> dict:
    """``reuse``: keep the trained models of an earlier run (exports present) and only search and evaluate again."""
    s = SETTINGS[name]
    work = DATA / "tdm_quality" / name
    if not reuse:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    events, attrs = convert(name, root, work)
    seq = Path(rt("dataset", "--task", "next-item", "--protocol", "user-split", "--events", events,
                  "--n-test", s["n_test"], "--n-valid", 0, "--min-behaviors", s["min_behaviors"],
                  "--max-history", 50, "-o", work / "seq"))
    items = items_with_categories(seq, attrs, work / "items_cat")
    n_items = int(seq_items(seq).max())
    rows = []
    for rule in ("popularity", "item-cf") if "baselines" in methods else ():
        r = rt("baseline", "--rule", rule, "--train", seq / "train_sequences", "--history", seq / "test" / "inputs",
               "--users", seq / "test" / "truth", "--k", s["k"], "-o", work / f"recalls_{rule}")
        rows.append({"method": rule, **evaluate(r, seq, work / f"eval_{rule}", s["k"])})
        log(f"{name}: {rows[-1]}")
    if "tdm" in methods:
        rows += tdm_rounds(name, items, seq, work, s, epochs, reuse)
    if "tdm_attributes" in methods:
        rows += tdm_attribute_rounds(name, items, seq, work, s, epochs, reuse)
    if "two_tower" in methods:
        rows += two_tower_rows(name, seq, work, s, n_items, epochs, reuse)
    if "nann" in methods:
        found = nann_round(seq, work, s, n_items, nann_steps, reuse)
        rows += found
        log(f"{name}: {found}")
    return {"settings": s, "epochs": epochs, "nann_steps": nann_steps, "items": n_items,
            "exclusion": "the test user's input items", "runs": rows}


def tdm_rounds(name: str, items: Path, seq: Path, work: Path, s: dict, epochs: int, reuse: bool) -> list:
    tree = rt("tree", "init", "--item-input-path", items, "--item-id-field", "item_id", "--cate-id-field",
              "category_id", "--tree-output-dir", work / "tree_init")
    rows, ex = tdm_round("initial", tree, seq, work, s, epochs, reuse)
    log(f"{name}: {rows}")
    emb = rt("embed", "--model", ex, "--items", seq / "items", "-o", work / "emb_init")
    tree = rt("tree", "cluster", "--item-input-path", emb, "--item-id-field", "item_id", "--embedding-field",
              "item_emb", "--tree-output-dir", work / "tree_learnt")
    found, _ = tdm_round("learnt", tree, seq, work, s, epochs, reuse)
    log(f"{name}: {found}")
    return rows + found


def tdm_attribute_rounds(name: str, items: Path, seq: Path, work: Path, s: dict, epochs: int, reuse: bool) -> list:
    """The initial tree with its nodes' attributes, TDM without and with ``model.node_features`` (issue 19)."""
    tree = rt("tree", "init", "--item-input-path", items, "--item-id-field", "item_id", "--cate-id-field",
              "category_id", "--attr-fields", ",".join(ATTRIBUTES), "--tree-output-dir", work / "tree_attrs")
    rows = []
    for tag, features in (("ids", None), ("attributes", ATTRIBUTES)):
        found, _ = tdm_round(f"initial_{tag}", tree, seq, work, s, epochs, reuse, features, s["beams"][:1])
        rows += [{**row, "node_features": features or []} for row in found]
        log(f"{name}: {found}")
    return rows


def two_tower_rows(name: str, seq: Path, work: Path, s: dict, n_items: int, epochs: int, reuse: bool) -> list:
    ex, secs = work / "two_tower_export", None
    if not (reuse and ex.is_dir()):
        m, secs = train(two_tower_config(seq, work / "two_tower", n_items, epochs), work / "two_tower.yaml")
        ex = rt("export", "--model-dir", m, "--export-dir", ex)
    emb = rt("embed", "--model", ex, "--items", seq / "items", "-o", work / "two_tower_emb")
    users = seq / "test" / "inputs"
    start = time.perf_counter()
    exact = rt("retrieve", "--method", "brute", "--model", ex, "--items", emb, "--users", users,
               "--topk", s["k"], "-o", work / "recalls_two_tower")
    rows = [{**search_row("two-tower (exact)", exact, seq, work / "eval_two_tower", s["k"],
                          time.perf_counter() - start), "train_seconds": secs}]
    index = rt("hnsw", "build", "--input", emb, "--space", "ip", "-o", work / "two_tower_index")
    start = time.perf_counter()
    r = rt("retrieve", "--method", "hnsw", "--model", ex, "--index", index, "--users", users, "--topk", s["k"],
           "--ef", 100, "-o", work / "recalls_two_tower_hnsw")
    rows.append(search_row("two-tower + HNSW (ef 100)", r, seq, work / "eval_two_tower_hnsw", s["k"],
                           time.perf_counter() - start, exact))
    log(f"{name}: {rows}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default=",".join(SETTINGS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep trained models of an earlier run; search and "
                                                          "evaluate again")
    ap.add_argument("--methods", default="baselines,tdm,two_tower,nann")
    ap.add_argument("--nann-steps", type=int, default=1000, help="NANN training steps (batches of 128)")
    args = ap.parse_args()
    root = _shared_data()
    if root is None:
        raise SystemExit("bench_tdm_quality: ../shared/data not found (set RECTOOL_SHARED_DATA)")
    methods = set(args.methods.split(","))
    tag = "tdm_quality" if methods >= {"tdm", "nann"} else "tdm_quality_" + "_".join(sorted(methods))
    emit(tag, {name: run_dataset(name, root, args.epochs, args.reuse, methods, args.nann_steps)
               for name in args.datasets.split(",")})


if __name__ == "__main__":
    main()
