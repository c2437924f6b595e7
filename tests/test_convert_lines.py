"""Retrieval layouts: one line per user, user-item pairs, MovieLens u.data."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow.compute as pc
import pytest

from helpers import shared_path
from rectool.artifacts import open_dataset, read_meta
from rectool.ingest.convert import convert
from rectool.ingest.lines import tokenize


def _python_tokens(text: bytes):
    values, lines, tokens, bad = [], [], [], []
    for i, line in enumerate(text.split(b"\n")[: text.count(b"\n") + (0 if text.endswith(b"\n") else 1)]):
        parts = line.replace(b"\r", b" ").replace(b"\t", b" ").replace(b",", b" ").split()
        ok = all(p.lstrip(b"-").isdigit() for p in parts)
        bad.append(not ok)
        for j, p in enumerate(parts):
            if p.lstrip(b"-").isdigit():
                values.append(int(p))
                lines.append(i)
                tokens.append(j)
    return values, lines, tokens, bad


@pytest.mark.parametrize("text", [b"7 1 2\r\n8 3\n", b"1\t2\n\n3 4", b"5 x 6\n7 8\n", b"-1 2\n"])
def test_tokenizer_against_python(text):
    values, lines, tokens, bad = tokenize(np.frombuffer(text, dtype=np.uint8))
    want_v, want_l, want_t, want_b = _python_tokens(text)
    assert bad.tolist()[: len(want_b)] == want_b
    good = [i for i, ln in enumerate(want_l) if not want_b[ln]]
    got_good = [i for i, ln in enumerate(lines.tolist()) if not bad[ln]]
    assert [values[i] for i in got_good] == [want_v[i] for i in good]
    assert [tokens[i] for i in got_good] == [want_t[i] for i in good]


def test_tokenizer_empty_block():
    values, lines, tokens, bad = tokenize(np.frombuffer(b"", dtype=np.uint8))
    assert values.size == lines.size == tokens.size == bad.size == 0


def test_user_lines_keep_order_and_crlf(tmp_path, cli):
    src = tmp_path / "train.txt"
    src.write_bytes(b"0 5 3 9\r\n1 4\r\n2 7 7 1\r\n")
    cli("convert", "-f", "user-lines", src, "-o", tmp_path / "ev", "--behavior", "4")
    t = open_dataset(tmp_path / "ev").to_table().sort_by([("user_id", "ascending"), ("seq", "ascending")])
    assert t.column("item_id").to_pylist() == [5, 3, 9, 4, 7, 7, 1]
    assert t.column("seq").to_pylist() == [0, 1, 2, 0, 0, 1, 2]
    assert set(t.column("behavior").to_pylist()) == {4} and "time" not in t.column_names
    assert read_meta(tmp_path / "ev")["ordered_by"] == "seq"


def test_pairs_sequence_positions_across_blocks(tmp_path, monkeypatch):
    import rectool.ingest.lines as lines

    monkeypatch.setattr(lines, "BLOCK_BYTES", 16)
    src = tmp_path / "p.txt"
    src.write_text("".join(f"{u} {i}\n" for i, u in enumerate([1, 2, 1, 1, 3, 2, 1, 1, 2])))
    convert([src], tmp_path / "ev", fmt="pairs")
    t = open_dataset(tmp_path / "ev").to_table().sort_by([("user_id", "ascending"), ("seq", "ascending")])
    assert t.column("user_id").to_pylist() == [1, 1, 1, 1, 1, 2, 2, 2, 3]
    assert t.column("item_id").to_pylist() == [0, 2, 3, 6, 7, 1, 5, 8, 4]
    assert t.column("seq").to_pylist() == [0, 1, 2, 3, 4, 0, 1, 2, 0]


def test_bad_lines_both_modes(tmp_path, cli):
    src = tmp_path / "u.txt"
    src.write_text("1 2 3\n2 x 4\n3\n4 5\n")
    res = cli("convert", "-f", "user-lines", src, "-o", tmp_path / "o", expect=2)
    assert f"{src}:2: expected `user item item ...` of integers: '2 x 4'" in res.stderr
    cli("convert", "-f", "user-lines", src, "-o", tmp_path / "o", "--on-bad-rows", "skip")
    assert open_dataset(tmp_path / "o").count_rows() == 3
    bad = read_meta(tmp_path / "o")["bad_rows"]
    assert bad["count"] == 2 and [e["line"] for e in bad["examples"]] == [2, 3]
    pairs = tmp_path / "p.txt"
    pairs.write_text("1 2\n1 2 3\n")
    res = cli("convert", "-f", "pairs", pairs, "-o", tmp_path / "p", expect=2)
    assert ":2: expected `user item`" in res.stderr
    res = cli("convert", "-f", "tianchi-user", pairs, "-o", tmp_path / "p", "--behavior", "2", expect=2)
    assert "has its own behaviour column" in res.stderr


def test_gzip_user_lines(tmp_path):
    src = tmp_path / "u.txt.gz"
    src.write_bytes(gzip.compress(b"1 2 3\n4 5\n"))
    convert([src], tmp_path / "o", fmt="user-lines")
    assert open_dataset(tmp_path / "o").count_rows() == 3


@pytest.mark.parametrize("parts,fmt,rows,users", [
    (("amazon-beauty", "Beauty.txt"), "user-lines", 198_502, 22_363),
    (("amazon-cds", "train.txt"), "user-lines", 604_475, 43_169),
    (("movielens-100k", "split_temporal_80_20", "test.txt"), "user-lines", 20_381, None),
    (("movielens-100k", "u.data"), "movielens", 100_000, 943),
])
def test_real_retrieval_files(tmp_path, parts, fmt, rows, users):
    src = shared_path(*parts)
    convert([src], tmp_path / "o", fmt=fmt)
    t = open_dataset(tmp_path / "o").to_table()
    assert t.num_rows == rows
    if users is not None:
        assert len(pc.unique(t["user_id"])) == users


def test_real_pairs_file(tmp_path):
    src = shared_path("taobao-multibehavior", "buy.txt")
    n_lines = sum(1 for line in open(src) if line.strip())
    convert([src], tmp_path / "o", fmt="pairs", behavior=4)
    t = open_dataset(tmp_path / "o").to_table()
    assert t.num_rows == n_lines and set(t.column("behavior").to_pylist()) == {4}
