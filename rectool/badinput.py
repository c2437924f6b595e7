"""One-line messages about bad input data, made in one place for every command.

Quoting input text
    ``quote(text)`` is how a message shows text read from a user's file: at most 80
    characters ("..." marks a cut) with non-printable characters escaped, repr-style, so a
    binary file given as CSV never pours control characters onto the terminal.
    ``printable(text)`` does the same without the quotes (for a library's own error text).

Unreadable parquet or ORC
    A parquet (or ORC) file can be zero bytes, truncated or hold a corrupt page. pyarrow notices
    the first two when a dataset is opened (``artifacts.open_dataset``), a corrupt page
    only when its rows are read, and DuckDB in the middle of a query; their messages may
    not name the file and may hold control characters. ``reading(inputs)`` wraps the
    place where rows are read and turns such an error into a ``UserError`` naming the
    file: the one the error names, else one whose column types differ from the others'
    (footers only), else the first one a probe (one read of every input file, done only
    on this error path) finds unreadable. When no input file is at fault the error is a
    bug and keeps its traceback. ``read_table`` / ``read_batches`` / ``count_rows`` read a
    ``pyarrow.dataset.Dataset`` under that guard, ``guarded`` any other reader's batches (a
    fragment, a ``rectool.tablefile.TableFile``). The message names the file's format (its
    suffix): "not readable as parquet" or "not readable as ORC".

    ``inputs`` are ``(label, files)`` pairs, the label naming the flag and the path the
    user gave (``"--input out/pred"``).

Example::

    with reading(("--events out/events", files)):
        con.execute("SELECT count(*) FROM read_parquet($files)", {"files": files})
    # error: --events out/events: out/events/dt=2014-12-18/part-00000.parquet: not readable as parquet
    #        (Invalid Input Error: No magic bytes found at end of file); rewrite it with the command that made
    #        it, or remove it from the input
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.dataset as pads

from rectool.errors import UserError
from rectool.tablefile import TableFile, format_name, read_schema

T = TypeVar("T")
_END = object()
QUOTE_LIMIT = 80
REASON_LIMIT = 200
Inputs = Sequence[tuple[str, Sequence[str]]]

# DuckDB's errors about a file it reads: cannot open it, not parquet, and the bare base class it
# raises for a page it cannot decode (thrift); anything else from DuckDB is not about the input
_DUCKDB_READ_ERRORS = ("IOException", "InvalidInputException", "Error")


def printable(text: str, limit: int = REASON_LIMIT) -> str:
    """``text`` cut to ``limit`` characters with non-printable characters escaped: ``"a\\x00b"``."""
    cut = text[:limit]
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in cut)
    return shown + ("..." if len(text) > limit else "")


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Input text as a message shows it: repr-quoted, at most ``limit`` characters: ``'1,2,\\x00'...``."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (pyarrow and DuckDB add context lines)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return printable(lines[0].strip()) if lines else type(exc).__name__


# what pyarrow raises when the files of one input disagree on a column's type
_MIXED_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _is_read_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
        return False  # permissions, a missing path: the CLI names exc.filename in one line
    if isinstance(exc, (*_MIXED_ERRORS, OSError)):
        return True
    kind = type(exc)
    return kind.__module__.lstrip("_").startswith("duckdb") and kind.__name__ in _DUCKDB_READ_ERRORS


def _named(exc: BaseException, files: Sequence[str]) -> str | None:
    text = str(exc)
    return next((f for f in files if f in text or os.path.abspath(f) in text), None)


def mismatch(files: Sequence[str]) -> str | None:
    """A file whose column types differ from the first file's, described; None when they agree (footers only)."""
    if len(files) < 2:
        return None
    try:
        first = read_schema(files[0])
        for f in files[1:]:
            schema = read_schema(f)
            for name in (n for n in schema.names if n in first.names):
                if schema.field(name).type != first.field(name).type:
                    return (f"{f} has column {name} as {schema.field(name).type} but {files[0]} as "
                            f"{first.field(name).type}")
    except (pa.ArrowException, OSError):
        return None  # a broken footer: the probe names that file
    return None


def probe(files: Sequence[str]) -> tuple[str, BaseException] | None:
    """The first file pyarrow cannot read to the end, with its error (reads every page: error path only)."""
    for f in files:
        try:
            for _ in TableFile(f).iter_batches(batch_size=65_536):
                pass
        except (pa.ArrowException, OSError) as exc:
            return f, exc
    return None


def unreadable(exc: BaseException, inputs: Inputs) -> UserError | None:
    """The one-line error for ``exc`` raised while reading ``inputs``, or None when no input file is at fault."""
    if not _is_read_error(exc):
        return None
    for label, files in inputs:
        found = _named(exc, files)
        if found is not None:
            return _message(label, found, exc)
    if isinstance(exc, _MIXED_ERRORS):
        for label, files in inputs:
            odd = mismatch(files)
            if odd is not None:
                return UserError(f"{label}: {odd}; its files must hold one table: rewrite them with one command")
    for label, files in inputs:
        hit = probe(files)
        if hit is not None:
            return _message(label, hit[0], hit[1])
    return None


def _message(label: str, file: str, exc: BaseException) -> UserError:
    where = label if label.endswith(file) else f"{label}: {file}"
    reason = first_line(exc)
    for named in {file, os.path.abspath(file)}:  # the message names the file already
        reason = reason.replace(f" '{named}'", "").replace(f" {named}", "")
    return UserError(f"{where}: not readable as {format_name(file)} ({reason}); rewrite it with the command that made "
                     "it, or remove it from the input")


@contextlib.contextmanager
def reading(*inputs: tuple[str, Sequence[str]]) -> Iterator[None]:
    """Turn a read error of one of ``inputs`` (pyarrow, OS or DuckDB) into a one-line ``UserError``."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 (classified by unreadable(); the rest is re-raised as it is)
        error = unreadable(exc, inputs)
        if error is None:
            raise
        raise error from exc


def dataset_files(dataset: pads.Dataset) -> list[str]:
    """The files of a file-backed dataset ([] for a table from stdin)."""
    return list(getattr(dataset, "files", []) or [])


def read_table(dataset: pads.Dataset, label: str, **kwargs: Any) -> pa.Table:
    """``dataset.to_table(**kwargs)``; an unreadable file is a one-line error naming it."""
    with reading((label, dataset_files(dataset))):
        return dataset.to_table(**kwargs)


def count_rows(dataset: pads.Dataset, label: str) -> int:
    """``dataset.count_rows()`` (it reads every footer); an unreadable file is a one-line error naming it."""
    with reading((label, dataset_files(dataset))):
        return dataset.count_rows()


def guarded(make: Callable[[], Iterable[T]], *inputs: tuple[str, Sequence[str]]) -> Iterator[T]:
    """The items of ``make()`` (batches a reader yields), its creation and every step under
    ``reading(*inputs)``; the caller's work on each item is not guarded."""
    with reading(*inputs):
        items = iter(make())
    while True:
        with reading(*inputs):
            item = next(items, _END)
        if item is _END:
            return
        yield item  # type: ignore[misc]


def read_batches(dataset: pads.Dataset, label: str, **kwargs: Any) -> Iterator[pa.RecordBatch]:
    """``dataset.to_batches(**kwargs)``; an unreadable file is a one-line error naming it."""
    return guarded(lambda: dataset.to_batches(**kwargs), (label, dataset_files(dataset)))
