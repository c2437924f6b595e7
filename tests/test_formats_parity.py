"""Formats and column names as the user's data has them: ORC/parquet inputs of ``convert`` (columns
by name), MovieLens-1M's ``ratings.dat``, ``embed --id-column``, ``eval-topk --truth-column`` and
``tree init --attr-delimiter``."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
from retrieval_helpers import write_lists, write_pairs

from helpers import retrieval_config, write_toy_sequences
from rectool.retrieval.formats import TopK, write_recalls

# ----------------------------------------------------------------------------- convert: ORC and parquet

N_ROWS = 40
SPEC = """\
kind: events
delimiter: ","
header: true
columns:
  - {name: uid, type: int64}
  - {name: adgroup_id, type: int64}
  - {name: act, type: behavior}
  - {name: cate, type: int64}
  - {name: ts, type: timestamp, format: unix_s}
  - {name: price, type: float64}
rename: {uid: user_id, adgroup_id: item_id, act: behavior, cate: category_id, ts: time}
utc_offset_hours: 8
"""


def _raw(n: int = N_ROWS) -> dict[str, list]:
    rng = np.random.default_rng(3)
    return {
        "uid": rng.integers(1, 9, n).tolist(),
        "adgroup_id": rng.integers(100, 130, n).tolist(),
        "act": [["pv", "fav", "cart", "buy"][i] for i in rng.integers(0, 4, n)],
        "cate": [None if i % 7 == 0 else int(i % 5) for i in range(n)],
        "ts": (1_511_539_200 + rng.integers(0, 4 * 86_400, n)).tolist(),  # 2017-11-25 (UTC) and 3 days on
        "price": np.round(rng.random(n) * 10, 2).tolist(),
    }


def _events(path: Path) -> list[dict]:
    table = pads.dataset(path, partitioning="hive").to_table()
    return sorted(table.to_pylist(), key=lambda r: (r["user_id"], r["item_id"], r["time"], r.get("price")))


@pytest.fixture
def raw_files(tmp_path: Path) -> dict[str, Path]:
    raw = _raw()
    spec = tmp_path / "ads.yaml"
    spec.write_text(SPEC)
    csv_path = tmp_path / "log.csv"
    lines = ["uid,adgroup_id,act,cate,ts,price"] + [
        ",".join("" if v is None else str(v) for v in row) for row in zip(*raw.values())]
    csv_path.write_text("\n".join(lines) + "\n")
    # the columns in another order, an extra one, and two ORC files in a directory as RecIS writes them
    table = pa.table({"junk": ["x"] * N_ROWS, **{k: raw[k] for k in reversed(raw)}})
    (tmp_path / "recis").mkdir()
    orc.write_table(table.slice(0, 25), tmp_path / "recis" / "data_0.orc")
    orc.write_table(table.slice(25), tmp_path / "recis" / "data_1.orc")
    # parquet with other physical types: ids as text, behaviours as codes, times as a zoned timestamp
    codes = {"pv": 1, "fav": 2, "cart": 3, "buy": 4}
    pq.write_table(pa.table({
        "uid": pa.array([str(v) for v in raw["uid"]]),
        "adgroup_id": pa.array(raw["adgroup_id"], pa.int32()),
        "act": pa.array([codes[a] for a in raw["act"]], pa.int8()),
        "cate": pa.array(raw["cate"], pa.int64()).dictionary_encode(),
        "ts": pa.array(raw["ts"], pa.int64()).cast(pa.timestamp("s", tz="UTC")),
        "price": pa.array(raw["price"], pa.float64()),
    }), tmp_path / "ads.parquet", row_group_size=16)
    return {"spec": spec, "csv": csv_path, "orc_dir": tmp_path / "recis", "parquet": tmp_path / "ads.parquet"}


def test_orc_and_parquet_with_foreign_names_equal_the_csv(raw_files, tmp_path, cli, monkeypatch):
    from rectool.ingest import columnar

    monkeypatch.setattr(columnar, "BATCH_ROWS", 7)  # several batches per file
    spec = raw_files["spec"]
    cli("convert", "-f", "generic", "--schema", spec, raw_files["csv"], "-o", tmp_path / "from_csv", "-q")
    cli("convert", "-f", "generic", "--schema", spec, raw_files["orc_dir"], "-o", tmp_path / "from_orc", "-q")
    cli("convert", "-f", "generic", "--schema", spec, raw_files["parquet"], "-o", tmp_path / "from_pq", "-q")
    expected = _events(tmp_path / "from_csv")
    assert len(expected) == N_ROWS and {r["behavior"] for r in expected} == {1, 2, 3, 4}
    assert _events(tmp_path / "from_orc") == expected
    assert _events(tmp_path / "from_pq") == expected
    meta = json.loads((tmp_path / "from_orc" / "_meta.json").read_text())
    assert meta["rows"] == N_ROWS and meta["bad_rows"]["count"] == 0
    assert meta["rows_per_day"] == json.loads((tmp_path / "from_csv" / "_meta.json").read_text())["rows_per_day"]


def test_a_builtin_format_reads_parquet_by_column_name(tmp_path, cli):
    """Columns by name, in any order: a parquet file with userbehavior's columns needs no spec."""
    rows = "1,10,5,pv,1511539200\n2,11,6,buy,1511625600\n"
    (tmp_path / "ub.csv").write_text(rows)
    cli("convert", "-f", "userbehavior", tmp_path / "ub.csv", "-o", tmp_path / "a", "-q")
    pq.write_table(pa.table({"timestamp": [1511539200, 1511625600], "behavior_type": ["pv", "buy"],
                             "item_id": [10, 11], "category_id": [5, 6], "user_id": [1, 2]}), tmp_path / "ub.parquet")
    cli("convert", "-f", "userbehavior", tmp_path / "ub.parquet", "-o", tmp_path / "b", "-q")
    assert pads.dataset(tmp_path / "b", partitioning="hive").to_table().sort_by("user_id").equals(
        pads.dataset(tmp_path / "a", partitioning="hive").to_table().sort_by("user_id"))


def test_columnar_bad_rows_name_file_and_row(raw_files, tmp_path, cli):
    spec = raw_files["spec"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"uid": ["1", "x", "3", ""], "adgroup_id": [10.0, 11.0, 12.5, 13.0],
                             "act": ["pv", "pv", "buy", "cart"], "cate": [1, 2, 3, 4],
                             "ts": [1511539200] * 4, "price": [1.0] * 4}), bad)
    res = cli("convert", "-f", "generic", "--schema", spec, bad, "-o", tmp_path / "o", expect=2)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and f"{bad}: row 2: column uid is not a number" in lines[0] and "uid=x" in lines[0]
    assert not (tmp_path / "o").exists()
    cli("convert", "-f", "generic", "--schema", spec, bad, "-o", tmp_path / "o", "--on-bad-rows", "skip", "-q")
    meta = json.loads((tmp_path / "o" / "_meta.json").read_text())
    assert meta["rows"] == 1 and meta["bad_rows"]["count"] == 3
    assert [(e["row"], e["reason"]) for e in meta["bad_rows"]["examples"]] == [
        (2, "column uid is not a number of type int64"), (3, "column adgroup_id is not a number of type int64"),
        (4, "user_id is empty")]


@pytest.mark.parametrize(("make", "needle"), [
    (lambda d: pq.write_table(pa.table({"uid": [1]}), d / "few.parquet") or d / "few.parquet",
     "has no column adgroup_id, act, cate, ts, price"),
    (lambda d: pq.write_table(pa.table({"uid": [[1]], "adgroup_id": [1], "act": [1], "cate": [1], "ts": [1],
                                        "price": [1.0]}), d / "list.parquet") or d / "list.parquet",
     "column uid is list<element: int64>, which --format generic cannot read as int64"),
    (lambda d: (d / "junk.orc").write_bytes(b"not orc at all") and d / "junk.orc", "cannot read it as ORC"),
])
def test_columnar_input_errors_are_one_line(raw_files, tmp_path, cli, make, needle):
    path = make(tmp_path)
    res = cli("convert", "-f", "generic", "--schema", raw_files["spec"], path, "-o", tmp_path / "o", expect=2)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and needle in lines[0], res.stderr
    assert not (tmp_path / "o").exists()


def test_columnar_and_text_inputs_do_not_mix(raw_files, tmp_path, cli):
    res = cli("convert", "-f", "generic", "--schema", raw_files["spec"], raw_files["csv"], raw_files["parquet"],
              "-o", tmp_path / "o", expect=2)
    assert "inputs mix text logs" in res.stderr
    res = cli("convert", "-f", "pairs", raw_files["parquet"], "-o", tmp_path / "o", expect=2)
    assert "--format pairs reads text lines" in res.stderr


# ----------------------------------------------------------------------------- convert: MovieLens-1M

RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::1357::4::978298709\n6040::1::2::956703932\n"


def test_movielens_1m_ratings(tmp_path, cli):
    src = tmp_path / "ratings.dat"
    src.write_text(RATINGS)
    cli("convert", "-f", "movielens-1m", src, "-o", tmp_path / "ml", "-q")
    rows = _events(tmp_path / "ml")
    assert [(r["user_id"], r["item_id"], r["rating"], r["behavior"]) for r in rows] == [
        (1, 661, 3.0, 1), (1, 1193, 5.0, 1), (2, 1357, 4.0, 1), (6040, 1, 2.0, 1)]
    assert str(rows[0]["time"]) == "2000-12-31 22:35:09"  # unix seconds, UTC
    gz = tmp_path / "ratings.dat.gz"
    gz.write_bytes(gzip.compress(RATINGS.encode()))
    cli("convert", "-f", "movielens-1m", gz, "--behavior", "4", "-o", tmp_path / "ml_gz", "-q")
    assert [{**r, "behavior": 1} for r in _events(tmp_path / "ml_gz")] == rows


@pytest.mark.parametrize(("line", "reason"), [("7::12::5", "expected 4 fields, got 3"),
                                              ("7::x::5::978300760", "column item_id is not a number")])
def test_movielens_1m_bad_line_names_file_and_line(tmp_path, cli, line, reason):
    src = tmp_path / "ratings.dat"
    src.write_text(RATINGS.replace("2::1357::4::978298709", line))
    res = cli("convert", "-f", "movielens-1m", src, "-o", tmp_path / "ml", expect=2)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and f"{src}:3: {reason}" in lines[0] and repr(line) in lines[0], res.stderr
    assert not (tmp_path / "ml").exists()


def test_delimiter_split_across_reads_is_replaced(monkeypatch):
    from rectool.ingest import delimiters

    monkeypatch.setattr(delimiters, "READ_BYTES", 1)
    for size in range(1, 6):
        for delimiter in ("::", ":::"):
            text = RATINGS.replace("::", delimiter) + "9" + delimiter[:-1]  # a part delimiter at the very end
            stream = delimiters.Replacing(io.BytesIO(text.encode()), delimiter.encode())
            got = b"".join(iter(lambda s=stream, n=size: s.read(n), b""))
            assert got == text.replace(delimiter, "\x1f").encode(), (size, delimiter)


# ----------------------------------------------------------------------------- embed --id-column


@pytest.fixture(scope="module")
def two_tower(tmp_path_factory, cli_module) -> dict[str, Path]:
    from rectool.train.config import Config
    from rectool.train.trainer import train

    root = tmp_path_factory.mktemp("tt")
    seqs = write_toy_sequences(root / "seq", users=40)
    cfg = retrieval_config(seqs, root / "m")
    cfg["train"].update(epochs=1)
    train(Config.model_validate(cfg))
    cli_module("export", "--model-dir", root / "m", "--export-dir", root / "ex", "-q")
    return {"export": root / "ex", "items": seqs / "items", "root": root}


def test_embed_id_column_other_than_item_id(two_tower, tmp_path, cli):
    cli("embed", "--model", two_tower["export"], "--items", two_tower["items"], "-o", tmp_path / "ref", "-q")
    items = pads.dataset(two_tower["items"]).to_table()
    (tmp_path / "ads").mkdir()
    pq.write_table(items.rename_columns(["adgroup_id" if c == "item_id" else c for c in items.column_names]),
                   tmp_path / "ads" / "part-0.parquet")
    res = cli("embed", "--model", two_tower["export"], "--items", tmp_path / "ads", "-o", tmp_path / "e2", expect=2)
    assert "missing column(s) item_id" in res.stderr
    cli("embed", "--model", two_tower["export"], "--items", tmp_path / "ads", "--id-column", "adgroup_id",
        "-o", tmp_path / "emb", "-q")
    ref = pads.dataset(tmp_path / "ref").to_table().sort_by("item_id")
    got = pads.dataset(tmp_path / "emb").to_table().sort_by("adgroup_id")
    assert got.column_names == ["adgroup_id", "item_emb"]
    assert got["adgroup_id"].equals(ref["item_id"]) and got["item_emb"].equals(ref["item_emb"])
    assert json.loads((tmp_path / "emb" / "_meta.json").read_text())["id_column"] == "adgroup_id"


# ----------------------------------------------------------------------------- eval-topk --truth-column


def _metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())["metrics"]


def test_eval_topk_truth_column_equals_the_renamed_table(tmp_path, cli):
    ids = np.array([[10, 11, 12], [12, 13, -1], [14, 15, 16]], np.int64)
    write_recalls(tmp_path / "rec", np.array([1, 2, 3]), TopK(ids, np.ones((3, 3), np.float32),
                                                              np.array([3, 2, 3], np.int64)))
    lists = [[10, 12], [11], [16, 30]]
    write_lists(tmp_path / "truth" / "part-0.parquet", [1, 2, 3], lists)
    write_lists(tmp_path / "clicked" / "part-0.parquet", [1, 2, 3], lists, column="clicked")
    pairs = [(u, i) for u, items in zip([1, 2, 3], lists) for i in items]
    write_pairs(tmp_path / "pairs.parquet", pairs)
    pq.write_table(pa.table({"user_id": [u for u, _ in pairs], "adgroup_id": [i for _, i in pairs]}),
                   tmp_path / "ad_pairs.parquet")
    common = ("--recall-path", tmp_path / "rec", "--k-list", "1,2,3", "-q")
    cli("eval-topk", *common, "--truth-path", tmp_path / "truth", "-o", tmp_path / "m_ref")
    cli("eval-topk", *common, "--truth-path", tmp_path / "clicked", "--truth-column", "clicked", "-o", tmp_path / "m1")
    cli("eval-topk", *common, "--truth-path", tmp_path / "pairs.parquet", "-o", tmp_path / "m2")
    cli("eval-topk", *common, "--truth-path", tmp_path / "ad_pairs.parquet", "--truth-column", "adgroup_id",
        "-o", tmp_path / "m3")
    ref = _metrics(tmp_path / "m_ref")
    assert ref["3"]["recall"] > 0
    assert _metrics(tmp_path / "m1") == ref and _metrics(tmp_path / "m2") == ref and _metrics(tmp_path / "m3") == ref
    res = cli("eval-topk", *common, "--truth-path", tmp_path / "clicked", "-o", tmp_path / "m4", expect=2)
    assert "missing column item_ids" in res.stderr
    res = cli("eval-topk", *common, "--truth-path", tmp_path / "clicked", "--truth-column", "clicks",
              "-o", tmp_path / "m4", expect=2)
    assert "--truth-column clicks: no such item column; it has user_id, clicked" in res.stderr
    assert not (tmp_path / "m4").exists()


# ----------------------------------------------------------------------------- tree init --attr-delimiter


@pytest.fixture
def ad_items(tmp_path: Path) -> Path:
    path = tmp_path / "ads.parquet"
    pq.write_table(pa.table({"adgroup_id": [11, 12, 13, 14], "cate_id": [1, 1, 2, 2],
                             "brand": ["b1", "b1", "b2", None], "customer": [5, 6, 7, 7],
                             "price": [1.0, 2.0, 3.0, 5.0]}), path)
    return path


def _node_rows(directory: Path) -> list[list[str]]:
    return [line.split("\t") for line in (directory / "node_table.txt").read_text().splitlines()[1:]]


def test_tree_init_attr_delimiter(ad_items, tmp_path, cli):
    args = ("tree", "init", "--item-input-path", ad_items, "--item-id-field", "adgroup_id", "--cate-id-field",
            "cate_id", "--attr-fields", "brand,customer", "--raw-attr-fields", "price", "-q")
    cli(*args, "--tree-output-dir", tmp_path / "comma")
    cli(*args, "--tree-output-dir", tmp_path / "colon", "--attr-delimiter", ":")
    comma, colon = _node_rows(tmp_path / "comma"), _node_rows(tmp_path / "colon")
    assert [r[:2] for r in colon] == [r[:2] for r in comma]
    for a, b in zip(comma, colon):
        level, node, brand, customer, price = a[2].split(",")
        assert b[2] == f"{level},{node},{brand}:{customer},{price}"
    leaf = next(r for r in colon if r[0] == "14")
    assert leaf[2].endswith(",:7,5.0")  # a null string attribute is "", as before
    assert (tmp_path / "comma" / "serving_tree").read_bytes() == (tmp_path / "colon" / "serving_tree").read_bytes()
    assert json.loads((tmp_path / "colon" / "_meta.json").read_text())["attr_delimiter"] == ":"


def test_tree_init_attr_delimiter_errors(ad_items, tmp_path, cli):
    args = ("tree", "init", "--item-input-path", ad_items, "--item-id-field", "adgroup_id", "--cate-id-field",
            "cate_id", "--attr-fields", "brand", "--tree-output-dir", tmp_path / "t")
    res = cli(*args, "--attr-delimiter", "b", expect=2)
    assert "--attr-delimiter 'b'" in res.stderr
    res = cli(*args, "--attr-delimiter", "1", expect=2)
    assert "--attr-delimiter '1'" in res.stderr
    pq.write_table(pa.table({"adgroup_id": [1, 2], "cate_id": [1, 1], "brand": ["a:b", "c"]}), ad_items)
    res = cli(*args, "--attr-delimiter", ":", expect=2)
    assert "holds 'a:b', which contains the --attr-delimiter ':'" in res.stderr
    assert not (tmp_path / "t").exists()
    cli(*args, "-q")  # with the default delimiter the value is written as it is
