"""Reference for ``bench_features.py``: ``rectool features`` + ``dataset``, the straightforward pandas way.

What competition notebooks do: load the whole log into a DataFrame, then per cut-off day
filter it, ``groupby().size().unstack()`` per window, ``nunique`` for distinct counts,
``rank`` for ranks, merge everything onto the candidates. It computes the same columns as
rectool's samples (all 226 features of the five groups and the last-N lists; a test checks
that they agree) and writes train/eval/predict parquet files.

    python bench/ref_features.py EVENTS_DIR ITEMS_DIR OUT_DIR 2014-12-17,2014-12-18 2014-12-19
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

NAMES = {1: "browse", 2: "collect", 3: "cart", 4: "buy"}
RATIOS = (("buy", "browse"), ("buy", "cart"), ("cart", "browse"))
WINDOWS = (1, 3, 7, None)
K, PAIR_DAYS, LAST_N, NEVER = 3, 7, 50, 9999.0
DAY = pd.Timedelta(days=1)


def _suffix(w):
    return "all" if w is None else f"{w}d"


def _window(df: pd.DataFrame, cut: pd.Timestamp, w) -> pd.DataFrame:
    return df if w is None else df[df["day"] >= cut - w * DAY]


def group_features(df: pd.DataFrame, keys: list[str], cut: pd.Timestamp, distinct: dict[str, str]) -> pd.DataFrame:
    """Counts, active days, ratios per window; hours since each behaviour; distinct counts."""
    parts = []
    for w in WINDOWS:
        sub, s = _window(df, cut, w), _suffix(w)
        cnt = sub.groupby(keys + ["behavior"]).size().unstack("behavior", fill_value=0)
        cnt = cnt.reindex(columns=list(NAMES), fill_value=0)
        cnt.columns = [f"{NAMES[b]}_{s}" for b in cnt.columns]
        parts.append(cnt)
        parts.append(sub.groupby(keys)["day"].nunique().rename(f"active_days_{s}"))
        for name, col in distinct.items():
            parts.append(sub.groupby(keys)[col].nunique().rename(f"{name}_{s}"))
    out = pd.concat(parts, axis=1).fillna(0)
    for w in WINDOWS:
        s = _suffix(w)
        for n, d in RATIOS:
            out[f"{n}_per_{d}_{s}"] = np.where(out[f"{d}_{s}"] > 0, out[f"{n}_{s}"] / out[f"{d}_{s}"].clip(lower=1), 0)
    last = df.groupby(keys + ["behavior"])["time"].max().unstack("behavior").reindex(columns=list(NAMES))
    for b, name in NAMES.items():
        out[f"hours_since_{name}"] = ((cut - last[b]) / pd.Timedelta(hours=1)).reindex(out.index)
    out["hours_since_any"] = ((cut - df.groupby(keys)["time"].max()) / pd.Timedelta(hours=1)).reindex(out.index)
    hours = [c for c in out.columns if c.startswith("hours_since_")]
    out[hours] = out[hours].fillna(NEVER)
    return out


def features(ev: pd.DataFrame, p_items: np.ndarray, cut: pd.Timestamp) -> dict[str, pd.DataFrame]:
    df = ev[ev["time"] < cut]
    in_p = df["item_id"].isin(p_items)
    # user x item, for the pairs acted on in the last PAIR_DAYS days
    pair_last = df.groupby(["user_id", "item_id"])["day"].max()
    recent = pair_last[pair_last >= cut - PAIR_DAYS * DAY].index
    pairs = df.set_index(["user_id", "item_id"])
    rdf = pairs[pairs.index.isin(recent)].reset_index()
    ui = group_features(rdf, ["user_id", "item_id"], cut, {})
    ui["category_id"] = rdf.groupby(["user_id", "item_id"])["category_id"].first()
    carts = rdf[(rdf["behavior"] == 3) & (rdf["day"] == cut - DAY)].groupby(["user_id", "item_id"])["time"].max()
    buys = rdf[rdf["behavior"] == 4].groupby(["user_id", "item_id"])["time"].max().reindex(ui.index)
    t_cart = carts.reindex(ui.index)
    ui["cart_not_bought_1d"] = (t_cart.notna() & (buys.isna() | (buys < t_cart))).astype(np.int8)
    ui["cart_hour_1d"] = t_cart.dt.hour.fillna(-1)
    ui["actions"] = sum(ui[f"{b}_all"] for b in NAMES.values())
    ui["t_any"] = rdf.groupby(["user_id", "item_id"])["time"].max()
    ui["rank_in_user"] = ui.groupby(level="user_id")["actions"].rank(method="min", ascending=False)
    ui["recency_rank_in_user"] = ui.groupby(level="user_id")["t_any"].rank(method="min", ascending=False)
    cnb = ui.reset_index()
    # user
    user = group_features(df, ["user_id"], cut, {"items": "item_id", "categories": "category_id",
                                                  "geohashes": "geohash"})
    user["carts_not_bought_1d"] = cnb.groupby("user_id")["cart_not_bought_1d"].sum()
    last = df.groupby(["user_id", "item_id"]).agg(t=("time", "max"), c=("category_id", "first")).reset_index()
    last["t"] = last["t"].dt.floor("min")
    last = last.sort_values(["user_id", "t", "item_id"], ascending=[True, False, False])
    top = last.groupby("user_id").head(LAST_N).iloc[::-1]
    user["last_items"] = top.groupby("user_id")["item_id"].agg(list)
    user["last_categories"] = top.groupby("user_id")["c"].agg(list)
    # item (items of P; rank among all items of the category)
    item = group_features(df[in_p], ["item_id"], cut, {"users": "user_id", "geohashes": "geohash"})
    item["carts_not_bought_1d"] = cnb.groupby("item_id")["cart_not_bought_1d"].sum()
    every = df.groupby("item_id").agg(category_id=("category_id", "first"), actions=("behavior", "size"))
    every["rank"] = every.groupby("category_id")["actions"].rank(method="min", ascending=False)
    item["rank_in_category"] = every["rank"]
    # category and user x category
    category = group_features(df, ["category_id"], cut, {"users": "user_id", "items": "item_id"})
    category["carts_not_bought_1d"] = cnb.groupby("category_id")["cart_not_bought_1d"].sum()
    uc_last = df.groupby(["user_id", "category_id"])["day"].max()
    uc_recent = uc_last[uc_last >= cut - PAIR_DAYS * DAY].index
    ucs = df.set_index(["user_id", "category_id"])
    ucdf = ucs[ucs.index.isin(uc_recent)].reset_index()
    uc = group_features(ucdf, ["user_id", "category_id"], cut, {"items": "item_id"})
    uc["carts_not_bought_1d"] = cnb.groupby(["user_id", "category_id"])["cart_not_bought_1d"].sum()
    ui = ui[ui.index.get_level_values("item_id").isin(p_items)].drop(columns=["category_id", "actions", "t_any"])
    return {name: t.copy() for name, t in (("ui", ui), ("u", user), ("i", item), ("c", category), ("uc", uc))}


def _fill(column: str) -> float:
    return NEVER if "hours_since_" in column else (-1.0 if column.endswith("cart_hour_1d") else 0.0)


def samples(ev: pd.DataFrame, p_items: np.ndarray, day: pd.Timestamp, labelled: bool) -> pd.DataFrame:
    recent = ev[(ev["day"] >= day - K * DAY) & (ev["day"] < day) & ev["item_id"].isin(p_items)]
    cand = recent.drop_duplicates(["user_id", "item_id"])[["user_id", "item_id", "category_id"]]
    if labelled:
        bought = ev[(ev["day"] == day) & (ev["behavior"] == 4) & ev["item_id"].isin(p_items)]
        bought = bought.drop_duplicates(["user_id", "item_id"])[["user_id", "item_id"]].assign(label=1)
        cand = cand.merge(bought, on=["user_id", "item_id"], how="left")
        cand["label"] = cand["label"].fillna(0).astype(np.int8)
    f = features(ev, p_items, day)
    for name, keys in (("ui", ["user_id", "item_id"]), ("u", ["user_id"]), ("i", ["item_id"]),
                       ("c", ["category_id"]), ("uc", ["user_id", "category_id"])):
        cand = cand.merge(f[name].add_prefix(f"{name}_").reset_index(), on=keys, how="left")
    lists = ["u_last_items", "u_last_categories"]
    num = cand.columns.difference(["user_id", "item_id", "category_id", "label", *lists])
    filled = cand[num].fillna({c: _fill(c) for c in num}).astype(np.float32)
    return pd.concat([cand.drop(columns=num), filled], axis=1).copy().assign(label_day=day)


def main() -> None:
    events, items, out, label_days, predict_day = sys.argv[1:6]
    cols = ["user_id", "item_id", "category_id", "behavior", "time", "geohash"]
    ev = pads.dataset(events, partitioning="hive").to_table(columns=cols).to_pandas()
    ev["day"] = ev["time"].dt.floor("D")
    p_items = pads.dataset(items).to_table(columns=["item_id"]).column("item_id").to_numpy()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    days = [pd.Timestamp(d) for d in label_days.split(",")]
    pd.concat([samples(ev, p_items, d, True) for d in days[:-1]]).to_parquet(folder / "train.parquet", index=False)
    samples(ev, p_items, days[-1], True).to_parquet(folder / "eval.parquet", index=False)
    samples(ev, p_items, pd.Timestamp(predict_day), False).to_parquet(folder / "predict.parquet", index=False)


if __name__ == "__main__":
    main()
