"""One table file, parquet or ORC: its schema, its pieces and their rows, read one piece at a time.

A *piece* is a parquet row group or an ORC stripe: the unit a reader can fetch alone. The
training loader deals pieces (and slices of them) to ranks and workers, the id-range check
and the normaliser statistics read them one by one, so memory stays bounded by one piece
whatever the format. The format is the file's suffix: ``.orc`` is ORC (what RecIS's and
Hive's writers produce), anything else parquet (rectool writes ``.parquet``).

    f = TableFile("fake_data/data_0.orc")
    f.schema                      # label: list<double>, dense1: list<double>, ...
    f.piece_rows                  # [2047]: rows per stripe, from the file's footer
    f.read_piece(0, ["label"])    # that stripe's rows of one column, a pa.Table

ORC stripe row counts come from the footer (``StripeInformation.numberOfRows``, decoded
here from the serialized file tail), so planning reads no rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Literal

import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq

Format = Literal["parquet", "orc"]
ORC_SUFFIX = ".orc"
FORMAT_NAMES = {"parquet": "parquet", "orc": "ORC"}


def format_of(path: str | os.PathLike[str]) -> Format:
    """``"orc"`` for a ``.orc`` file, else ``"parquet"``."""
    return "orc" if os.fspath(path).lower().endswith(ORC_SUFFIX) else "parquet"


def format_name(path: str | os.PathLike[str]) -> str:
    """How messages name a file's format: ``parquet`` or ``ORC``."""
    return FORMAT_NAMES[format_of(path)]


class TableFile:
    """A parquet or ORC file opened for reading (its footer is read here: a broken file raises now)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.format = format_of(self.path)
        self._orc: orc.ORCFile | None = None
        self._parquet: pq.ParquetFile | None = None
        if self.format == "orc":
            self._orc = orc.ORCFile(self.path)
        else:
            self._parquet = pq.ParquetFile(self.path)

    @property
    def schema(self) -> pa.Schema:
        return self._orc.schema if self._orc is not None else self._parquet.schema_arrow

    @property
    def num_rows(self) -> int:
        return self._orc.nrows if self._orc is not None else self._parquet.metadata.num_rows

    @property
    def piece_rows(self) -> list[int]:
        """Rows of each row group (parquet) or stripe (ORC), from the footer."""
        if self._orc is not None:
            return _stripe_rows(self._orc)
        meta = self._parquet.metadata
        return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]

    def read_piece(self, index: int, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of row group / stripe ``index`` (only ``columns`` when given)."""
        cols = list(columns) if columns is not None else None
        if self._orc is not None:
            return pa.Table.from_batches([self._orc.read_stripe(index, columns=cols)])
        return self._parquet.read_row_group(index, columns=cols)

    def iter_batches(self, columns: Sequence[str] | None = None,
                     batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_size`` rows, one piece in memory at a time."""
        cols = list(columns) if columns is not None else None
        if self._parquet is not None:
            yield from self._parquet.iter_batches(batch_size=batch_size, columns=cols)
            return
        for i in range(self._orc.nstripes):
            yield from self.read_piece(i, cols).to_batches(max_chunksize=batch_size)


def read_schema(path: str | os.PathLike[str]) -> pa.Schema:
    """The Arrow schema of a parquet or ORC file (footer only)."""
    if format_of(path) == "orc":
        return TableFile(path).schema
    return pq.read_schema(os.fspath(path))


# ----------------------------------------------------------------------------- ORC footer


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as ints, the rest as bytes."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value
        elif wire == 2:
            n, i = _varint(buf, i)
            yield number, buf[i:i + n]
            i += n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            yield number, buf[i:i + n]
            i += n
        else:
            raise ValueError(f"protobuf wire type {wire}")


def _stripe_rows(f: orc.ORCFile) -> list[int]:
    """Rows per stripe: FileTail.footer(2).stripes(3).numberOfRows(5); counted by reading the
    stripes (one column each) should the tail not decode to the file's row count."""
    try:
        tail = bytes(f.reader.serialized_file_tail())
        footer = next(v for n, v in _fields(tail) if n == 2)
        rows = [next((v for n, v in _fields(s) if n == 5), 0) for n, s in _fields(footer) if n == 3]  # type: ignore[arg-type]
        if len(rows) == f.nstripes and sum(rows) == f.nrows:  # type: ignore[arg-type]
            return [int(r) for r in rows]  # type: ignore[arg-type]
    except (AttributeError, StopIteration, ValueError, IndexError, TypeError):
        pass
    first = f.schema.names[:1]
    return [f.read_stripe(i, columns=first).num_rows for i in range(f.nstripes)]
