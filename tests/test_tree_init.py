"""``tree init``: TorchEasyRec files byte for byte on hand-worked trees, a plain-Python cross-check, the CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tree_reference

from rectool.tree.build import init_tree
from rectool.tree.files import read_serving_tree
from rectool.tree.structure import load_tree

TEXT_FILES = ("node_table.txt", "edge_table.txt", "predict_edge_table.txt", "serving_tree")


def _write(path, **cols):
    pq.write_table(pa.table(cols), path)
    return path


def _texts(directory):
    return {name: (directory / name).read_text() for name in TEXT_FILES}


# ----------------------------------------------------------------------------- 5 items, binary
#
# Items (id, category, brand, price): 10 (2,a,1.0) 11 (1,b,2.0) 12 (1,b,4.0) 13 (2,null,null) 14 (1,a,8.0).
# Sorted by (category as text, id): 11 12 14 10 13. Codes (first part -> rightmost child):
# [0,5) code 0 -> [0,2) code 2, [2,5) code 1; [0,2) -> 11:6 12:5; [2,5) -> 14:4, [3,5) code 3 -> 10:8 13:7.
# 5 items need L = 3 levels below the root (first code 7): 6 -> 13, 5 -> 11, 4 -> 9 are pulled down.
# Leaves in level order: 7:13 8:10 9:14 11:12 13:11. Non-leaf ids: 14 + code + 1.
# Attributes: node 18 (code 3) has leaves 10, 13: brand a/null tie -> a (10 comes first in sorted order);
# price mean(1.0) = 1.0. Root: brand b,b,a,a,null -> b (first in sorted order); price (2+4+8+1)/4 = 3.75.
FIVE = {
    "node_table.txt": """id:int64\tweight:float\tfeature:string
-1\t1.0\t-1,15,1,b,3.75
15\t1.0\t0,15,1,b,3.75
16\t1.0\t1,16,2,a,4.5
17\t1.0\t1,17,1,b,3.0
18\t1.0\t2,18,2,a,1.0
19\t1.0\t2,19,1,a,8.0
20\t1.0\t2,20,1,b,4.0
21\t1.0\t2,21,1,b,2.0
13\t1.0\t3,13,2,,0
10\t1.0\t3,10,2,a,1.0
14\t1.0\t3,14,1,a,8.0
12\t1.0\t3,12,1,b,4.0
11\t1.0\t3,11,1,b,2.0
""",
    "edge_table.txt": """src_id:int64\tdst_id:int64\tweight:float
13\t18\t1.0
13\t16\t1.0
10\t18\t1.0
10\t16\t1.0
14\t19\t1.0
14\t16\t1.0
12\t20\t1.0
12\t17\t1.0
11\t21\t1.0
11\t17\t1.0
""",
    "predict_edge_table.txt": """src_id:int64\tdst_id:int64\tweight:float
-1\t15\t1.0
15\t16\t1.0
15\t17\t1.0
16\t18\t1.0
16\t19\t1.0
17\t20\t1.0
17\t21\t1.0
18\t13\t1.0
18\t10\t1.0
19\t14\t1.0
20\t12\t1.0
21\t11\t1.0
""",
    "serving_tree": "4 2\n0 15\n1 16\n2 17\n3 18\n4 19\n5 20\n6 21\n7 13\n8 10\n9 14\n11 12\n13 11\n",
}


def test_five_items_byte_for_byte(tmp_path):
    src = _write(tmp_path / "items.parquet", item_id=pa.array([10, 11, 12, 13, 14], pa.int64()),
                 cate=pa.array([2, 1, 1, 2, 1], pa.int64()), brand=pa.array(["a", "b", "b", None, "a"]),
                 price=pa.array([1.0, 2.0, 4.0, None, 8.0]))
    init_tree(str(src), "item_id", "cate", tmp_path / "tree", attr_fields=["cate", "brand"],
              raw_attr_fields=["price"])
    assert _texts(tmp_path / "tree") == FIVE
    feat = pq.read_table(tmp_path / "tree" / "node_feature" / "part-0.parquet")
    assert feat.column_names == ["item_id", "cate", "brand", "price"]
    assert feat["item_id"].to_pylist() == [15, 16, 17, 18, 19, 20, 21, 13, 10, 14, 12, 11]
    assert feat["brand"].to_pylist()[:4] == ["b", "a", "b", "a"] and feat["brand"][7].as_py() is None
    assert feat["price"].to_pylist()[:2] == [3.75, 4.5] and feat["price"][7].as_py() is None


# ----------------------------------------------------------------------------- 13 items, binary
#
# Categories 10, 9, 2 sort as text: "10" < "2" < "9", so the sorted order is
# 101 103 105 109 112 | 107 108 111 | 102 104 106 110 113  (s0 .. s12).
# [0,13) -> [0,6) code 2, [6,13) code 1.  [0,6) -> [0,3) code 6, [3,6) code 5.  [6,13) -> [6,9) code 4, [9,13) code 3.
# [0,3) -> s0:14, [1,3) code 13 -> s1:28 s2:27.  [3,6) -> s3:12, [4,6) code 11 -> s4:24 s5:23.
# [6,9) -> s6:10, [7,9) code 9 -> s7:20 s8:19.
# [9,13) -> [9,11) code 8 -> s9:18 s10:17, [11,13) code 7 -> s11:16 s12:15.
# 13 items: L = 4, first code 15: s0 14 -> 29, s3 12 -> 25, s6 10 -> 21 are pulled down.
# Non-leaf ids: 113 + code + 1. Attribute ties: category (int) -> smallest value; brand (string) -> the value
# met first, in sorted order, among the node's leaves.
# Root: category 9 x5, 10 x5, 2 x3 -> 9; brand x5 y5 z3 -> x (s0 = 101 is x); price 80 / 12 (111 has none).
# Code 5 (119): leaves 107 112 109, brand z x y -> y (109 = s3 comes first); price 28 / 3.
THIRTEEN = {
    "node_table.txt": """id:int64\tweight:float\tfeature:string
-1\t1.0\t-1,114,9,x,6.666666666666667
114\t1.0\t0,114,9,x,6.666666666666667
115\t1.0\t1,115,9,y,7.166666666666667
116\t1.0\t1,116,10,x,6.166666666666667
117\t1.0\t2,117,9,x,8.25
118\t1.0\t2,118,2,y,5.0
119\t1.0\t2,119,10,y,9.333333333333334
120\t1.0\t2,120,10,x,3.0
121\t1.0\t3,121,9,x,11.5
122\t1.0\t3,122,9,x,5.0
123\t1.0\t3,123,2,y,2.0
124\t1.0\t3,124,2,z,8.0
125\t1.0\t3,125,2,x,9.5
126\t1.0\t3,126,10,y,9.0
127\t1.0\t3,127,10,x,4.0
128\t1.0\t3,128,10,x,1.0
113\t1.0\t4,113,9,y,13.0
110\t1.0\t4,110,9,x,10.0
106\t1.0\t4,106,9,y,6.0
104\t1.0\t4,104,9,x,4.0
102\t1.0\t4,102,9,y,2.0
111\t1.0\t4,111,2,y,0
108\t1.0\t4,108,2,z,8.0
107\t1.0\t4,107,2,z,7.0
112\t1.0\t4,112,10,x,12.0
109\t1.0\t4,109,10,y,9.0
105\t1.0\t4,105,10,z,5.0
103\t1.0\t4,103,10,x,3.0
101\t1.0\t4,101,10,x,1.0
""",
    "edge_table.txt": "src_id:int64\tdst_id:int64\tweight:float\n" + "".join(
        f"{leaf}\t{p}\t1.0\n{leaf}\t{g}\t1.0\n{leaf}\t{a}\t1.0\n" for leaf, p, g, a in [
            (113, 121, 117, 115), (110, 121, 117, 115), (106, 122, 117, 115), (104, 122, 117, 115),
            (102, 123, 118, 115), (111, 123, 118, 115), (108, 124, 118, 115), (107, 125, 119, 116),
            (112, 125, 119, 116), (109, 126, 119, 116), (105, 127, 120, 116), (103, 127, 120, 116),
            (101, 128, 120, 116)]),
    "predict_edge_table.txt": "src_id:int64\tdst_id:int64\tweight:float\n-1\t114\t1.0\n" + "".join(
        f"{p}\t{c}\t1.0\n" for p, c in [
            (114, 115), (114, 116), (115, 117), (115, 118), (116, 119), (116, 120), (117, 121), (117, 122),
            (118, 123), (118, 124), (119, 125), (119, 126), (120, 127), (120, 128), (121, 113), (121, 110),
            (122, 106), (122, 104), (123, 102), (123, 111), (124, 108), (125, 107), (125, 112), (126, 109),
            (127, 105), (127, 103), (128, 101)]),
    "serving_tree": "5 2\n" + "".join(f"{c} {114 + c}\n" for c in range(15)) + "".join(
        f"{c} {i}\n" for c, i in [(15, 113), (16, 110), (17, 106), (18, 104), (19, 102), (20, 111), (21, 108),
                                  (23, 107), (24, 112), (25, 109), (27, 105), (28, 103), (29, 101)]),
}


def test_thirteen_items_byte_for_byte(tmp_path):
    ids = list(range(101, 114))
    cate = [10, 9, 10, 9, 10, 9, 2, 2, 10, 9, 2, 10, 9]
    brand = ["x", "y", "x", "x", "z", "y", "z", "z", "y", "x", "y", "x", "y"]
    price = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, None, 12.0, 13.0]
    src = _write(tmp_path / "items.parquet", item_id=pa.array(ids, pa.int64()), cate=pa.array(cate, pa.int64()),
                 brand=pa.array(brand), price=pa.array(price))
    init_tree(str(src), "item_id", "cate", tmp_path / "tree", attr_fields=["cate", "brand"],
              raw_attr_fields=["price"])
    got = _texts(tmp_path / "tree")
    for name in TEXT_FILES:
        assert got[name] == THIRTEEN[name], name
    tree = load_tree(tmp_path / "tree")
    assert tree.level_sizes.tolist() == [1, 2, 4, 8, 13]
    assert tree.leaf_item_ids.tolist() == [113, 110, 106, 104, 102, 111, 108, 107, 112, 109, 105, 103, 101]


def test_ternary_tree_keeps_all_leaves_on_the_last_level(tmp_path):
    # 7 items, n=3: L=2, first code 4; [0,7) -> [0,2) code 3, [2,4) code 2, [4,7) code 1, empty parts skipped:
    # 1:11 2:10 3:8 4:7 5:6 6:5 7:4. TorchEasyRec's min_code n**L - 1 = 8 would push codes 4..7 one level
    # deeper than 8, 10, 11; rectool pulls to the level's first code, (n**L - 1) / (n - 1) = 4: nothing moves.
    src = _write(tmp_path / "items.parquet", item_id=pa.array(range(1, 8), pa.int64()), cate=pa.array([0] * 7))
    init_tree(str(src), "item_id", "cate", tmp_path / "tree", n_cluster=3)
    assert (tmp_path / "tree" / "serving_tree").read_text() == (
        "3 3\n0 8\n1 9\n2 10\n3 11\n4 7\n5 6\n6 5\n7 4\n8 3\n10 2\n11 1\n")
    assert (tmp_path / "tree" / "node_table.txt").read_text().splitlines()[1] == "-1\t1.0\t-1,8"


@pytest.mark.parametrize("n_items,n_cluster", [(2, 2), (3, 2), (9, 3), (16, 2), (17, 4), (50, 3), (101, 2)])
def test_matches_plain_python_reference(tmp_path, n_items, n_cluster):
    rnd = random.Random(n_items * 10 + n_cluster)
    ids = rnd.sample(range(-50, 1000), n_items)
    rows = [{"item_id": i, "cate": rnd.choice([3, 12, 7, None]), "shop": rnd.choice([5, 1, 9, None]),
             "tag": rnd.choice(["p", "q", "", None]), "price": rnd.choice([0.25, 1.5, 3.0, None]),
             "w": rnd.choice([0.5, 2.0, None])} for i in ids]
    src = _write(tmp_path / "items.parquet", **{k: pa.array([r[k] for r in rows]) for k in rows[0] if k != "w"},
                 w=pa.array([r["w"] for r in rows], pa.float32()))
    init_tree(str(src), "item_id", "cate", tmp_path / "tree", attr_fields=["shop", "tag"],
              raw_attr_fields=["price", "w"], n_cluster=n_cluster)
    ordered = sorted(rows, key=lambda r: ("" if r["cate"] is None else str(r["cate"]), r["item_id"]))
    want = tree_reference.build_files(ordered, "item_id", tree_reference.gen_codes(n_items, n_cluster), n_cluster,
                                      ["shop", "tag"], ["price", "w"], float32_fields=("w",))
    got = _texts(tmp_path / "tree")
    for name in TEXT_FILES:
        assert got[name] == want[name], name
    tree = read_serving_tree(tmp_path / "tree")
    assert np.array_equal(tree.codes, load_tree(tmp_path / "tree").codes)


def test_cli_init_with_string_ids_and_separate_table_dir(tmp_path, cli):
    src = _write(tmp_path / "items.parquet", item_id=pa.array(["a", "b", "c", "d"]), cate=pa.array(["x"] * 4))
    res = cli("tree", "init", "--item-input-path", src, "--item-id-field", "item_id", "--cate-id-field", "cate",
              "--tree-output-dir", tmp_path / "tree", "--node-edge-output-file", tmp_path / "tables", "--hash-ids",
              "--n-cluster", "2", "-q")
    assert res.stdout.strip() == str(tmp_path / "tree")
    assert sorted(p.name for p in (tmp_path / "tree").iterdir()) == ["_meta.json", "compact", "serving_tree"]
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "_meta.json", "edge_table.txt", "node_feature", "node_table.txt", "predict_edge_table.txt"]
    meta = json.loads((tmp_path / "tree" / "_meta.json").read_text())
    assert meta["kind"] == "tree" and meta["rows"] == {"items": 4, "nodes": 7} and meta["level_sizes"] == [1, 2, 4]
    from rectool.hashing import hash_strings

    assert sorted(load_tree(tmp_path / "tree").leaf_item_ids) == sorted(hash_strings(["a", "b", "c", "d"]))


@pytest.mark.parametrize("cols,args,message", [
    (dict(item_id=[1, 2, 3], cate=[1, 1, 1]), ["--cate-id-field", "category"], "missing column(s) category"),
    (dict(item_id=[1, 2, 2], cate=[1, 1, 1]), [], "item id 2 appears more than once"),
    (dict(item_id=["a", "b", "c"], cate=[1, 1, 1]), [], "pass --hash-ids"),
    (dict(item_id=[1, None, 3], cate=[1, 1, 1]), [], "is null in row 1"),
    (dict(item_id=[1], cate=[1]), [], "at least 2 items"),
    (dict(item_id=[1, 2, 3], cate=[1, 1, 1], p=["a", "b", "c"]), ["--raw-attr-fields", "p"],
     "must be integer or float"),
    (dict(item_id=[1, 2, 3], cate=[1, 1, 1], t=["a", 'b"', "c"]), ["--attr-fields", "t"], "double quote"),
    (dict(item_id=[1, 2, 3], cate=[1, 1, 1]), ["--n-cluster", "1"], "'--n-cluster'"),  # the option's range
])
def test_bad_input_is_one_line_error(tmp_path, cli, cols, args, message):
    src = _write(tmp_path / "items.parquet", **{k: pa.array(v) for k, v in cols.items()})
    base = ["--item-input-path", src, "--item-id-field", "item_id", "--tree-output-dir", tmp_path / "tree", "-q"]
    if "--cate-id-field" not in args:
        base += ["--cate-id-field", "cate"]
    res = cli("tree", "init", *base, *args, expect=2)
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "tree").exists()


def test_existing_output_needs_overwrite(tmp_path, cli):
    src = _write(tmp_path / "items.parquet", item_id=pa.array([1, 2, 3]), cate=pa.array([1, 1, 2]))
    args = ["tree", "init", "--item-input-path", src, "--item-id-field", "item_id", "--cate-id-field", "cate",
            "--tree-output-dir", tmp_path / "tree", "-q"]
    cli(*args)
    assert "--overwrite" in cli(*args, expect=2).stderr
    cli(*args, "--overwrite")


def test_float_text_is_python_repr():
    from rectool.tree.attrs import format_values

    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(3000) * 10.0 ** rng.integers(-12, 25, 3000), rng.integers(-10**6, 10**6, 500) * 1.0,
        [0.0, -0.0, 1e16, 1e-4, 9.999999999999999e15, 0.00009999, np.nan, np.inf, -np.inf, 1e15, 2.0**60],
        rng.random(500).astype(np.float32).astype(np.float64)])
    assert format_values(pa.array(values), "0").to_pylist() == [repr(float(v)) for v in values]
    assert format_values(pa.array([0.1, None], pa.float32()), "0").to_pylist() == ["0.10000000149011612", "0"]
    assert format_values(pa.array([True, None]), "").to_pylist() == ["True", ""]


def test_init_on_converted_tianchi_items(tiny_tianchi, tmp_path, cli):
    """The pipeline's own item table (``convert --format tianchi-item``) feeds ``tree init``."""
    items = cli("convert", "-f", "tianchi-item", tiny_tianchi / "offline/tianchi_fresh_comp_train_item.csv",
                "-o", tmp_path / "items", "-q").stdout.strip()
    out = cli("tree", "init", "--item-input-path", items, "--item-id-field", "item_id", "--cate-id-field",
              "category_id", "--attr-fields", "category_id", "--tree-output-dir", tmp_path / "tree", "-q")
    tree = load_tree(out.stdout.strip())
    table = pq.read_table(tmp_path / "items").sort_by("item_id")
    assert np.array_equal(np.sort(tree.leaf_item_ids), table["item_id"].to_numpy())
    # leaves in level order are the items sorted by (category as text, id), reversed
    want = sorted(zip(table["category_id"].to_pylist(), table["item_id"].to_pylist(), strict=True),
                  key=lambda r: (str(r[0]), r[1]))
    assert tree.leaf_item_ids.tolist() == [i for _, i in reversed(want)]
    feat = pq.read_table(tmp_path / "tree" / "node_feature")
    assert feat.num_rows == tree.num_nodes and feat["category_id"].null_count == 0
