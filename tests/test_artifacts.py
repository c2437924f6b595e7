"""The artifact layer: atomic outputs, overwrite protection, reading dirs/files/globs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rectool.artifacts import atomic_dir, atomic_file, check_kind, open_dataset, read_meta, write_meta
from rectool.errors import UserError


def _write_part(directory, n=3):
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"a": list(range(n))}), directory / "part-0.parquet")


def test_atomic_dir_success_writes_meta_and_renames(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        assert tmp.name.startswith(".out.tmp-") and not out.exists()
        _write_part(tmp)
        write_meta(tmp, kind="thing", inputs=["x"], rows=3, schema=pa.schema([("a", pa.int64())]))
    assert out.is_dir()
    meta = read_meta(out)
    assert meta["kind"] == "thing" and meta["rows"] == 3 and meta["schema"] == {"a": "int64"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_dir_failure_leaves_nothing(tmp_path, exc):
    out = tmp_path / "out"
    with pytest.raises(type(exc)), atomic_dir(out) as tmp:
        _write_part(tmp)
        raise exc
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    _write_part(out, 5)
    with pytest.raises(UserError, match="--overwrite"), atomic_dir(out):
        pass
    with atomic_dir(out, overwrite=True) as tmp:
        _write_part(tmp, 2)
    assert open_dataset(out).count_rows() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_overwrite_keeps_the_old_output(tmp_path):
    out = tmp_path / "out"
    _write_part(out, 5)
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        _write_part(tmp, 2)
        raise RuntimeError("crash")
    assert open_dataset(out).count_rows() == 5


def test_temp_of_a_killed_process_is_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp-{dead.stdout.strip()}-abcd1234"
    _write_part(stale)
    with atomic_dir(tmp_path / "out") as tmp:
        _write_part(tmp)
    assert not stale.exists()


def test_atomic_file(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("hello")
    assert target.read_text() == "hello"
    with pytest.raises(ValueError), atomic_file(target, overwrite=True) as tmp:
        tmp.write_text("half")
        raise ValueError
    assert target.read_text() == "hello" and len(list(target.parent.iterdir())) == 1


def test_open_dataset_dir_file_glob_and_errors(tmp_path):
    _write_part(tmp_path / "d" / "dt=2014-12-01", 2)
    _write_part(tmp_path / "d" / "dt=2014-12-02", 3)
    (tmp_path / "d" / "_meta.json").write_text(json.dumps({"kind": "events"}))
    ds = open_dataset(tmp_path / "d")
    assert ds.count_rows() == 5 and "dt" in ds.schema.names
    assert open_dataset(tmp_path / "d" / "dt=2014-12-01" / "part-0.parquet").count_rows() == 2
    assert open_dataset(os.fspath(tmp_path / "d" / "dt=*" / "*.parquet")).count_rows() == 5
    with pytest.raises(UserError, match="no such file"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(UserError, match="matches no file"):
        open_dataset(os.fspath(tmp_path / "nothing*.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no parquet"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(UserError, match="'events' artifact, expected 'items'"):
        check_kind(tmp_path / "d", "items", "--items")
