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
