"""Reference for ``bench_features.py``: the ranking features + dataset, the straightforward pandas way.

What competition notebooks do: load the whole log into a DataFrame, then per cut-off
day filter, ``groupby().size().unstack()`` per window, ``nunique`` for distinct counts,
merge everything onto the candidates. It computes a *subset* of what ``rectool
features`` writes (so the comparison favours pandas):

  user x item   counts per behaviour x window (1, 3, 7 days, all), active days, hours since
                each behaviour, cart-not-bought on the last day and its hour
  user          counts per behaviour x window, active days, hours since, distinct items
  item          counts per behaviour x window, distinct users       (items of P)
  category      counts per behaviour x window
  user x cat.   counts per behaviour x window

and the dataset: candidates (pairs active in the 3 days before the day, item in P),
labels (bought on the day), features merged, written as parquet train/eval/predict.

    python bench/ref_features.py EVENTS_DIR ITEMS_DIR OUT_DIR 2014-12-17,2014-12-18 2014-12-19
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

NAMES = {1: "browse", 2: "collect", 3: "cart", 4: "buy"}
WINDOWS = (1, 3, 7, None)
K = 3


def _suffix(w):
    return "all" if w is None else f"{w}d"


def window_counts(df: pd.DataFrame, keys: list[str], cut: pd.Timestamp, days: bool) -> pd.DataFrame:
    parts = []
    for w in WINDOWS:
        sub = df if w is None else df[df["day"] >= cut - pd.Timedelta(days=w)]
        cnt = sub.groupby(keys + ["behavior"]).size().unstack("behavior", fill_value=0)
        cnt = cnt.reindex(columns=list(NAMES), fill_value=0)
        cnt.columns = [f"{NAMES[b]}_{_suffix(w)}" for b in cnt.columns]
        parts.append(cnt)
        if days:
            parts.append(sub.groupby(keys)["day"].nunique().rename(f"active_days_{_suffix(w)}"))
    return pd.concat(parts, axis=1).fillna(0)


def hours_since(df: pd.DataFrame, keys: list[str], cut: pd.Timestamp) -> pd.DataFrame:
    last = df.groupby(keys + ["behavior"])["time"].max().unstack("behavior")
    last = last.reindex(columns=list(NAMES))
    out = pd.DataFrame({f"hours_since_{NAMES[b]}": (cut - last[b]) / pd.Timedelta(hours=1) for b in NAMES},
                       index=last.index)
    out["hours_since_any"] = out.min(axis=1)
    return out.fillna(9999.0)


def features(ev: pd.DataFrame, p_items: np.ndarray, cut: pd.Timestamp) -> dict[str, pd.DataFrame]:
    df = ev[ev["time"] < cut]
    ui = window_counts(df, ["user_id", "item_id"], cut, True).join(hours_since(df, ["user_id", "item_id"], cut))
    last_day = df[df["day"] == cut - pd.Timedelta(days=1)]
    carts = last_day[last_day["behavior"] == 3].groupby(["user_id", "item_id"])["time"].max().rename("t_cart")
    buys = df[df["behavior"] == 4].groupby(["user_id", "item_id"])["time"].max().rename("t_buy")
    cnb = pd.concat([carts, buys], axis=1).dropna(subset=["t_cart"])
    cnb["cart_not_bought_1d"] = (cnb["t_buy"].isna() | (cnb["t_buy"] < cnb["t_cart"])).astype(np.int8)
    cnb["cart_hour_1d"] = cnb["t_cart"].dt.hour
    ui = ui.join(cnb[["cart_not_bought_1d", "cart_hour_1d"]])
    ui["cart_not_bought_1d"] = ui["cart_not_bought_1d"].fillna(0)
    ui["cart_hour_1d"] = ui["cart_hour_1d"].fillna(-1)
    user = window_counts(df, ["user_id"], cut, True).join(hours_since(df, ["user_id"], cut))
    for w in WINDOWS:
        sub = df if w is None else df[df["day"] >= cut - pd.Timedelta(days=w)]
        user[f"items_{_suffix(w)}"] = sub.groupby("user_id")["item_id"].nunique()
    dfp = df[df["item_id"].isin(p_items)]
    item = window_counts(dfp, ["item_id"], cut, False)
    for w in WINDOWS:
        sub = dfp if w is None else dfp[dfp["day"] >= cut - pd.Timedelta(days=w)]
        item[f"users_{_suffix(w)}"] = sub.groupby("item_id")["user_id"].nunique()
    return {"ui": ui.fillna(0), "u": user.fillna(0), "i": item.fillna(0),
            "c": window_counts(df, ["category_id"], cut, False),
            "uc": window_counts(df, ["user_id", "category_id"], cut, False)}


def samples(ev: pd.DataFrame, p_items: np.ndarray, day: pd.Timestamp, labelled: bool) -> pd.DataFrame:
    recent = ev[(ev["day"] >= day - pd.Timedelta(days=K)) & (ev["day"] < day) & ev["item_id"].isin(p_items)]
    cand = recent.drop_duplicates(["user_id", "item_id"])[["user_id", "item_id", "category_id"]]
    if labelled:
        bought = ev[(ev["day"] == day) & (ev["behavior"] == 4) & ev["item_id"].isin(p_items)]
        bought = bought.drop_duplicates(["user_id", "item_id"])[["user_id", "item_id"]].assign(label=1)
        cand = cand.merge(bought, on=["user_id", "item_id"], how="left")
        cand["label"] = cand["label"].fillna(0).astype(np.int8)
    f = features(ev, p_items, day)
    for name, table, keys in (("ui", f["ui"], ["user_id", "item_id"]), ("u", f["u"], ["user_id"]),
                              ("i", f["i"], ["item_id"]), ("c", f["c"], ["category_id"]),
                              ("uc", f["uc"], ["user_id", "category_id"])):
        table = table.add_prefix(f"{name}_").reset_index()
        cand = cand.merge(table, on=keys, how="left")
    cand["label_day"] = day
    num = cand.columns.difference(["user_id", "item_id", "category_id", "label", "label_day"])
    cand[num] = cand[num].fillna(0).astype(np.float32)
    return cand


def main() -> None:
    events, items, out, label_days, predict_day = sys.argv[1:6]
    cols = ["user_id", "item_id", "category_id", "behavior", "time"]
    ev = pads.dataset(events, partitioning="hive").to_table(columns=cols).to_pandas()
    ev["day"] = ev["time"].dt.floor("D")
    p_items = pads.dataset(items).to_table(columns=["item_id"]).column("item_id").to_numpy()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    days = [pd.Timestamp(d) for d in label_days.split(",")]
    train = pd.concat([samples(ev, p_items, d, True) for d in days[:-1]])
    train.to_parquet(folder / "train.parquet", index=False)
    samples(ev, p_items, days[-1], True).to_parquet(folder / "eval.parquet", index=False)
    samples(ev, p_items, pd.Timestamp(predict_day), False).to_parquet(folder / "predict.parquet", index=False)


if __name__ == "__main__":
    main()
