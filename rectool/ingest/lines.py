"""Line-oriented retrieval layouts that ``rectool convert`` reads with a numba tokenizer.

``user-lines``  one line per user, ``uid item item ...`` (items in time order; Amazon and
                MovieLens split files, Beauty.txt); spaces or tabs; CRLF, blank lines and a
                leading UTF-8 byte order mark tolerated.
``pairs``       one ``user item`` pair per line (Taobao multi-behaviour files).

Both become events without times: ``user_id, item_id, category_id (null), behavior
(--behavior, default 1), time (null), geohash (null), seq int64`` where ``seq`` is the
position of the interaction in the user's line (``user-lines``) or among that user's
pairs in file order (``pairs``) — so the order of a sequence survives.

Files are read in blocks cut at line ends; memory stays flat. A line with a token
that is not an integer (or, for ``pairs``, not exactly two tokens) is a bad row,
handled by ``--on-bad-rows`` like every other format.

    rectool convert --format user-lines ../shared/data/amazon-beauty/Beauty.txt -o data/beauty
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

import numba
import numpy as np
import pyarrow as pa

BLOCK_BYTES = 8 << 20
UTF8_BOM = b"\xef\xbb\xbf"
LineFormat = Literal["user-lines", "pairs"]
LINE_FORMATS = get_args(LineFormat)


@numba.njit(cache=True)
def tokenize(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integers of a block of whole lines: (values, line index of each value, token index in
    its line, bad line flags). ``b"7 1 2\\r\\n8 x\\n"`` -> values [7, 1, 2, 8], lines [0, 0, 0, 1],
    tokens [0, 1, 2, 0], bad [False, True]."""
    n = buf.size
    n_lines = 0
    for i in range(n):
        if buf[i] == 10:
            n_lines += 1
    if n > 0 and buf[n - 1] != 10:
        n_lines += 1
    values = np.empty(n // 2 + 1, dtype=np.int64)
    lines = np.empty(n // 2 + 1, dtype=np.int64)
    tokens = np.empty(n // 2 + 1, dtype=np.int64)
    bad = np.zeros(n_lines, dtype=np.bool_)
    count = 0
    line = 0
    token = 0
    in_num = False
    neg = False
    acc = 0
    for i in range(n + 1):
        c = buf[i] if i < n else 10
        if 48 <= c <= 57:
            acc = acc * 10 + (c - 48)
            in_num = True
            continue
        if c == 45 and not in_num and not neg:  # a leading minus sign
            neg = True
            continue
        if in_num:
            values[count] = -acc if neg else acc
            lines[count] = line
            tokens[count] = token
            count += 1
            token += 1
        elif neg:
            bad[line] = True
        in_num = False
        neg = False
        acc = 0
        if c == 10:
            if i < n or (n > 0 and buf[n - 1] != 10):
                line += 1
            token = 0
        elif c != 32 and c != 9 and c != 13 and c != 44:  # space, tab, CR, comma separate tokens
            bad[min(line, n_lines - 1)] = True
    return values[:count], lines[:count], tokens[:count], bad


def _blocks(path: Path, opener) -> Iterator[tuple[bytes, int]]:  # noqa: ANN001
    """Blocks of whole lines and the 0-based number of the block's first line."""
    first_line = 0
    carry = b""
    with opener(path, "rb") as fh:
        while True:
            chunk = fh.read(BLOCK_BYTES)
            if not chunk:
                break
            if first_line == 0 and not carry:  # a UTF-8 byte order mark before the first line is not a token
                chunk = chunk.removeprefix(UTF8_BOM)
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            block, carry = data[: cut + 1], data[cut + 1:]
            yield block, first_line
            first_line += block.count(b"\n")
    if carry.strip():
        yield carry, first_line


def read_line_format(path: Path, fmt: LineFormat, opener, behavior: int,  # noqa: ANN001
                     on_bad) -> Iterator[pa.Table]:  # noqa: ANN001
    """Tables of (user_id, item_id, behavior, seq) from one file; ``on_bad(line_no, reason, text)``
    is called for each bad line (it raises in error mode)."""
    next_seq: dict[int, int] = {}
    for block, first_line in _blocks(path, opener):
        values, lines, tokens, bad = tokenize(np.frombuffer(block, dtype=np.uint8))
        per_line = np.bincount(lines, minlength=bad.size)
        if fmt == "pairs":
            bad = bad | ((per_line != 2) & (per_line != 0))
        else:
            bad = bad | (per_line == 1)  # a user with no items
        if bad.any():
            texts = block.split(b"\n")
            for ln in np.flatnonzero(bad):
                reason = "expected `user item`" if fmt == "pairs" else "expected `user item item ...` of integers"
                on_bad(first_line + int(ln) + 1, reason, texts[ln].decode("utf-8", "replace").rstrip("\r"))
        keep = ~bad[lines]
        values, lines, tokens = values[keep], lines[keep], tokens[keep]
        is_user = tokens == 0
        line_user = np.zeros(bad.size, dtype=np.int64)
        line_user[lines[is_user]] = values[is_user]
        items = ~is_user
        users = line_user[lines[items]]
        item_ids = values[items]
        if fmt == "user-lines":
            seq = tokens[items] - 1
        else:  # position among this user's pairs, continuing across blocks
            order = np.argsort(users, kind="stable")
            u_sorted = users[order]
            start = np.r_[0, np.flatnonzero(u_sorted[1:] != u_sorted[:-1]) + 1]
            rank = np.arange(users.size) - np.repeat(start, np.diff(np.r_[start, users.size]))
            base = np.array([next_seq.get(int(u), 0) for u in u_sorted[start]], dtype=np.int64)
            seq = np.empty(users.size, dtype=np.int64)
            seq[order] = rank + np.repeat(base, np.diff(np.r_[start, users.size]))
            counts = np.diff(np.r_[start, users.size])
            for u, b, c in zip(u_sorted[start].tolist(), base.tolist(), counts.tolist()):
                next_seq[u] = b + c
        n = users.size
        yield pa.table({
            "user_id": pa.array(users, pa.int64()), "item_id": pa.array(item_ids, pa.int64()),
            "category_id": pa.nulls(n, pa.int64()), "behavior": pa.array(np.full(n, behavior, np.int8)),
            "geohash": pa.nulls(n, pa.string()), "seq": pa.array(seq, pa.int64()),
        })
