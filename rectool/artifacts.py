"""The artifact layer every command uses: read parquet (or ORC), write outputs atomically.

Reading
    ``open_dataset(path)`` accepts a directory (hive-partitioned or flat), a file,
    a glob, or ``-`` (an Arrow IPC stream on stdin) and returns a
    ``pyarrow.dataset.Dataset``. Files whose names start with ``.`` or ``_``
    (temp siblings, ``_meta.json``) are ignored. ``.orc`` files (RecIS's, Hive's) are read
    as ORC, every other file as parquet; one input holds one format (``table_files``).

Writing
    ``atomic_dir(path, overwrite)`` yields a temp sibling directory; only when the
    block succeeds is it renamed to ``path``. A crash, a ``UserError`` or Ctrl-C
    leaves no output at ``path`` (and no half-written temp: it is removed, and a
    temp left by a killed process is swept the next time). An existing output is
    replaced only with ``overwrite=True``, in one atomic exchange; a second writer
    of the same path fails at once (``output_lock``), and one that appears during
    the work is never replaced. ``atomic_file`` does the same for one file.

Self-description
    ``write_meta(dir, kind=..., ...)`` writes ``_meta.json``: the command line,
    rectool version, inputs, row counts, schema and creation time.
    ``read_meta(path)`` reads it back; ``check_kind`` refuses the wrong artifact.

Example::

    with atomic_dir("events", overwrite=False) as tmp:
        pq.write_table(table, tmp / "part-0.parquet", compression="zstd")
        write_meta(tmp, kind="events", inputs=["user.csv"], rows=table.num_rows, schema=table.schema)
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from rectool import __version__
from rectool.badinput import first_line, unreadable
from rectool.commit import commit, remove, sweep_leftovers
from rectool.errors import UserError
from rectool.tablefile import ORC_SUFFIX, format_name, format_of

META_FILE = "_meta.json"
STDIO = "-"
PARQUET_COMPRESSION = "zstd"
TABLE_SUFFIXES = (".parquet", ORC_SUFFIX)


# ----------------------------------------------------------------------------- reading


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand_paths(spec: str | os.PathLike[str], what: str = "input") -> list[Path]:
    """Files or directories named by a path or a glob; a clear error when nothing is there."""
    text = os.fspath(spec)
    if _has_glob(text):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True))
        if not found:
            raise UserError(f"{what} {text}: the pattern matches no file; check the path")
        return found
    path = Path(text)
    if not path.exists():
        raise UserError(f"{what} {text}: no such file or directory; check the path")
    return [path]


def table_files(paths: Sequence[Path], label: str = "input") -> list[str]:
    """The parquet or ORC files of ``paths``: a directory's ``*.parquet`` / ``*.orc`` files (names
    starting with ``.`` or ``_`` skipped, hive folders included), a file as given. One input holds
    one format (the suffix: ``.orc`` is ORC, anything else parquet); a mix is a one-line error."""
    files: list[str] = []
    for p in paths:
        if p.is_dir():
            files += sorted(
                str(f) for f in p.rglob("*") if f.suffix.lower() in TABLE_SUFFIXES and f.is_file()
                and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
            )
        elif not p.name.startswith((".", "_")):
            files.append(str(p))
    orc = [f for f in files if format_of(f) == "orc"]
    if orc and len(orc) < len(files):
        other = next(f for f in files if format_of(f) != "orc")
        raise UserError(f"{label}: holds both ORC and parquet files ({orc[0]}, {other}); an input is read in "
                        "one format: move the files of the other one out of it")
    return files


parquet_files = table_files  # the name callers used before ORC was read


def open_dataset(spec: str | os.PathLike[str], what: str = "input") -> pads.Dataset:
    """A parquet or ORC dataset from a directory, file, glob or ``-`` (Arrow IPC on stdin)."""
    if os.fspath(spec) == STDIO:
        return pads.dataset(read_ipc_stdin())
    paths = expand_paths(spec, what)
    label = f"{what} {os.fspath(spec)}"
    files = table_files(paths, label)
    if not files:
        raise UserError(f"{label}: holds no parquet or ORC file; give a directory written by rectool, "
                        "a .parquet or .orc file or a glob")
    fmt = format_of(files[0])
    # hive partitions (dt=2014-12-18/) are recovered relative to the directory given
    base = str(paths[0]) if len(paths) == 1 and paths[0].is_dir() else None
    try:
        return pads.dataset(files, format=fmt, partitioning="hive", partition_base_dir=base)
    except (pa.ArrowInvalid, OSError) as exc:
        raise unreadable(exc, [(label, files)]) or UserError(
            f"{label}: not readable as {format_name(files[0])} ({first_line(exc)})") from exc


def read_table(spec: str | os.PathLike[str], columns: Sequence[str] | None = None, what: str = "input") -> pa.Table:
    ds = open_dataset(spec, what)
    if columns is not None:
        require_columns(ds.schema, columns, spec)
    return ds.to_table(columns=list(columns) if columns is not None else None)


def require_columns(schema: pa.Schema, columns: Iterable[str], source: Any, hint: str = "") -> None:
    """Raise a ``UserError`` naming every missing column."""
    missing = [c for c in columns if c not in schema.names]
    if missing:
        tail = f"; {hint}" if hint else f"; it has {', '.join(schema.names)}"
        raise UserError(f"{os.fspath(source)}: missing column(s) {', '.join(missing)}{tail}")


def read_ipc_stdin() -> pa.Table:
    """The table a previous command streamed to us with ``--output -``."""
    try:
        reader = pa.ipc.open_stream(sys.stdin.buffer)
        return reader.read_all()
    except pa.ArrowInvalid as exc:
        raise UserError("stdin: not an Arrow IPC stream; pipe in a command run with --output -") from exc


def write_ipc_stdout(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> int:
    """Stream record batches to stdout as Arrow IPC (for ``--output -``); returns rows."""
    rows = 0
    with pa.ipc.new_stream(sys.stdout.buffer, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    sys.stdout.buffer.flush()
    return rows


# ----------------------------------------------------------------------------- metadata


def read_meta(spec: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``_meta.json`` of an artifact directory, or None (a plain file or foreign data)."""
    path = Path(os.fspath(spec))
    meta = path / META_FILE if path.is_dir() else path.parent / META_FILE
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{meta}: not valid JSON ({exc.msg}); rewrite the artifact") from exc


def check_kind(spec: str | os.PathLike[str], expected: str | Sequence[str], flag: str) -> dict[str, Any] | None:
    """Refuse an artifact whose ``_meta.json`` says it is another kind."""
    meta = read_meta(spec) if os.fspath(spec) != STDIO and not _has_glob(os.fspath(spec)) else None
    wanted = [expected] if isinstance(expected, str) else list(expected)
    if meta is not None and meta.get("kind") not in wanted:
        raise UserError(f"{flag} {os.fspath(spec)}: this is a '{meta.get('kind')}' artifact, expected "
                        f"{' or '.join(repr(w) for w in wanted)}")
    return meta


def schema_summary(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def write_meta(directory: Path, kind: str, inputs: Sequence[Any] = (), rows: int | dict[str, int] | None = None,
               schema: pa.Schema | None = None, **extra: Any) -> None:
    meta: dict[str, Any] = {
        "kind": kind,
        "command": sys.argv,
        "rectool_version": __version__,
        "inputs": [os.fspath(i) if isinstance(i, (str, os.PathLike)) else i for i in inputs],
        "rows": rows,
        "schema": schema_summary(schema) if schema is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta.update(extra)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------- atomic writes
#
# One output path, one writer: a writer holds ``.NAME.lock`` (flock) from its first check to its
# commit, so a second run fails at once in one line instead of replacing the first one's output.
# The commit is a rename that never replaces what the user did not ask to replace
# (RENAME_NOREPLACE), and ``--overwrite`` swaps old and new in one step (RENAME_EXCHANGE): a
# reader finds the complete old output or the complete new one at every instant. Where the
# filesystem cannot exchange, the old output is first renamed to ``.NAME.old-PID-*`` and a crash
# between the two renames is repaired by the next writer: it restores that backup, never deletes it.
# The renames and that repair are ``rectool.commit``.

@contextlib.contextmanager
def output_lock(final: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``final``; a second holder fails at once with a one-line error."""
    lock = final.parent / f".{final.name}.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"output {final}: cannot write in {final.parent} ({exc.strerror}); "
                            "choose a writable place") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise UserError(f"output {final}: another rectool process{who} is writing it now; wait for it to "
                            "finish or choose another path") from None
        try:  # the previous holder may have unlinked the file we opened: lock the current one
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def refuse_existing(final: Path, overwrite: bool) -> None:
    """An existing output is refused unless ``overwrite`` (checked again when the output is committed)."""
    if os.path.lexists(final) and not overwrite:
        raise UserError(f"output {final} already exists; pass --overwrite to replace it or choose another path")


@contextlib.contextmanager
def _atomic(path: str | os.PathLike[str], overwrite: bool, make_dir: bool) -> Iterator[Path]:
    final = Path(os.fspath(path))
    refuse_existing(final, overwrite)  # before any work
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"output {final}: cannot create its parent directory ({exc.strerror})") from exc
    with output_lock(final):
        sweep_leftovers(final)
        refuse_existing(final, overwrite)  # again, now that no other writer can get in between
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if make_dir:
            tmp.mkdir()
        try:
            yield tmp
            if not os.path.lexists(tmp):
                raise RuntimeError(f"nothing was written to {tmp}")
        except BaseException:
            remove(tmp)
            raise
        commit(tmp, final, overwrite)


def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> contextlib.AbstractContextManager[Path]:
    """Yield a temp directory that becomes ``path`` only if the block succeeds."""
    return _atomic(path, overwrite, make_dir=True)


def atomic_file(path: str | os.PathLike[str], overwrite: bool = False) -> contextlib.AbstractContextManager[Path]:
    """Yield a temp file path that becomes ``path`` only if the block succeeds."""
    return _atomic(path, overwrite, make_dir=False)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding: strings. Trying it on high-cardinality ids costs
    time before parquet falls back to plain encoding, and buys little size (zstd does that)."""
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            or pa.types.is_dictionary(f.type)]


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, schema, compression=PARQUET_COMPRESSION, use_dictionary=dictionary_columns(schema))


def write_parquet(table: pa.Table, path: Path, row_group_size: int = 1 << 20) -> None:
    pq.write_table(table, path, compression=PARQUET_COMPRESSION, row_group_size=row_group_size,
                   use_dictionary=dictionary_columns(table.schema))


class PartWriter:
    """Writes a stream of batches into ``dir/part-00000.parquet, part-00001...``.

    A new part starts every ``rows_per_part`` rows so that later stages can read
    the parts in parallel and shuffle across files.
    """

    def __init__(self, directory: Path, schema: pa.Schema, rows_per_part: int = 4_000_000,
                 row_group_size: int = 256 * 1024) -> None:
        self.directory, self.schema = directory, schema
        self.rows_per_part, self.row_group_size = rows_per_part, row_group_size
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._part_rows = 0
        self._parts = 0

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                name = self.directory / f"part-{self._parts:05d}.parquet"
                self._writer = parquet_writer(name, self.schema)
                self._parts += 1
                self._part_rows = 0
            take = min(table.num_rows - offset, self.rows_per_part - self._part_rows)
            self._writer.write_table(table.slice(offset, take).cast(self.schema),
                                     row_group_size=self.row_group_size)
            offset += take
            self._part_rows += take
            self.rows += take
            if self._part_rows >= self.rows_per_part:
                self._writer.close()
                self._writer = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._parts == 0:  # an empty result is still a readable dataset
            pq.write_table(self.schema.empty_table(), self.directory / "part-00000.parquet",
                           compression=PARQUET_COMPRESSION)
            self._parts = 1

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PartitionedWriter:
    """Hive-partitioned parquet written from the caller's thread: ``dir/<key>=<value>/part-00000.parquet``.

    Rows are buffered per partition until a row group is full, then handed to one
    background writer thread (parquet encoding releases the GIL, so parsing and
    writing overlap); at most ``max_pending`` row groups wait, which bounds memory.
    Unlike ``pyarrow.dataset.write_dataset`` pulling from a Python generator, the
    caller's thread stays in Python, so Ctrl-C stops it at once.

        with PartitionedWriter(tmp, schema, "dt") as w:
            w.write(table, day_labels)     # day_labels: dictionary array, one per row
        w.rows_per_partition                # {"2014-12-18": 812345, ...}
    """

    def __init__(self, directory: Path, schema: pa.Schema, key: str, rows_per_group: int = 256 * 1024,
                 rows_per_file: int = 8 << 20, max_pending: int = 8) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.directory, self.schema, self.key = directory, schema, key
        self.rows_per_group, self.rows_per_file, self.max_pending = rows_per_group, rows_per_file, max_pending
        self.rows_per_partition: dict[str, int] = {}
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered: dict[str, int] = {}
        self._files: dict[str, list] = {}  # value -> [writer, rows in file, part number]
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._pending: list = []

    def write(self, table: pa.Table, labels: pa.DictionaryArray) -> None:
        import numpy as np

        codes = labels.indices.to_numpy(zero_copy_only=False)
        names = labels.dictionary.to_pylist()
        counts = np.bincount(codes, minlength=len(names))
        present = np.flatnonzero(counts)
        if present.size == 1:  # the common case for day-sorted input: no reordering needed
            self._append(names[present[0]], table)
            return
        ordered = table.take(pa.array(np.argsort(codes, kind="stable")))
        offset = 0
        for code in present:
            n = int(counts[code])
            self._append(names[code], ordered.slice(offset, n))
            offset += n

    def _append(self, value: str, table: pa.Table) -> None:
        self._buffers.setdefault(value, []).append(table)
        self._buffered[value] = self._buffered.get(value, 0) + table.num_rows
        self.rows_per_partition[value] = self.rows_per_partition.get(value, 0) + table.num_rows
        if self._buffered[value] >= self.rows_per_group:
            self._flush(value)

    def _flush(self, value: str) -> None:
        parts = self._buffers.pop(value, [])
        self._buffered.pop(value, None)
        if not parts:
            return
        data = pa.concat_tables(parts).combine_chunks()
        while len(self._pending) >= self.max_pending:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._write_group, value, data))

    def _write_group(self, value: str, data: pa.Table) -> None:
        state = self._files.get(value)
        if state is None or state[1] >= self.rows_per_file:
            if state is not None:
                state[0].close()
            part = 0 if state is None else state[2] + 1
            folder = self.directory / f"{self.key}={value}"
            folder.mkdir(parents=True, exist_ok=True)
            writer = parquet_writer(folder / f"part-{part:05d}.parquet", self.schema)
            state = self._files[value] = [writer, 0, part]
        state[0].write_table(data.cast(self.schema), row_group_size=self.rows_per_group)
        state[1] += data.num_rows

    def close(self) -> None:
        for value in list(self._buffers):
            self._flush(value)
        try:
            for fut in self._pending:
                fut.result()
        finally:
            self._pending.clear()
            self._pool.shutdown(wait=True)
            for state in self._files.values():
                state[0].close()

    def __enter__(self) -> PartitionedWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
            return
        # failing: let the writer thread finish what it holds, so the caller can delete the temp dir
        self._pool.shutdown(wait=True, cancel_futures=True)
        for state in self._files.values():
            with contextlib.suppress(Exception):
                state[0].close()
