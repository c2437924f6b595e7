"""Delimiters of several characters (MovieLens-1M's ``::``) for Arrow's one-character CSV reader.

``Replacing`` wraps a binary stream and hands the reader the same bytes with each
delimiter replaced by one stand-in character (``\\x1f``, the ASCII unit separator, which
logs do not hold); lines, and so line numbers, are unchanged::

    Replacing(io.BytesIO(b"1::1193::5::978300760\\n"), b"::").read()  # b"1\\x1f1193\\x1f5\\x1f978300760\\n"

A delimiter cut in two by a read is joined with the next read, so none is missed.
"""

from __future__ import annotations

import io
from typing import BinaryIO

STAND_IN = "\x1f"
READ_BYTES = 1 << 20


def reader_delimiter(delimiter: str) -> str:
    """The one character Arrow's reader splits on for ``delimiter``."""
    return delimiter if len(delimiter) == 1 else STAND_IN


class Replacing(io.RawIOBase):
    """A read-only stream: ``source`` with every ``delimiter`` replaced by ``STAND_IN``."""

    def __init__(self, source: BinaryIO, delimiter: bytes) -> None:
        super().__init__()
        self._source = source
        self._delimiter = delimiter
        self._stand_in = STAND_IN.encode()
        self._pending = b""  # replaced bytes not handed out yet
        self._tail = b""     # raw bytes that may start a delimiter completed by the next read
        self._done = False

    def readable(self) -> bool:
        return True

    def _fill(self, want: int) -> None:
        while len(self._pending) < want and not self._done:
            chunk = self._source.read(max(want, READ_BYTES))
            if not chunk:
                self._done = True
                self._pending += self._tail.replace(self._delimiter, self._stand_in)
                self._tail = b""
                break
            replaced = (self._tail + chunk).replace(self._delimiter, self._stand_in)
            # hold back raw bytes at the end that may start a delimiter the next read completes
            cut = len(replaced)
            for k in range(len(self._delimiter) - 1, 0, -1):
                if replaced.endswith(self._delimiter[:k]):
                    cut -= k
                    break
            self._pending += replaced[:cut]
            self._tail = replaced[cut:]

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            self._fill(1 << 62)
            out, self._pending = self._pending, b""
            return out
        self._fill(size)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def readinto(self, buffer) -> int:  # noqa: ANN001
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
