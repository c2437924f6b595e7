"""Bad rows of ``rectool convert``: stop at the first one, or count them and keep examples.

``error`` mode raises one line naming where the row is (``file:line`` for text logs,
``file: row N`` for ORC/parquet inputs), the reason and the row's text; ``skip`` mode counts
bad rows and keeps the first few as examples for ``_meta.json``::

    bad = BadRows("skip")
    bad.add(Path("log.csv"), "column item_id is not a number of type int64", "7,x,1")
    bad.examples  # [{"file": "log.csv", "line": None, "reason": ..., "text": "7,x,1"}]
    bad.locate_examples()  # fills "line" by one scan of log.csv

``ConvertStats`` holds the figures of one conversion (files, bytes, rows, bad rows, rows per day).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rectool.badinput import quote
from rectool.errors import UserError

BadRowMode = Literal["error", "skip"]
MAX_EXAMPLES = 5


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


@dataclass
class BadRows:
    mode: BadRowMode
    count: int = 0
    examples: list[dict] = field(default_factory=list)
    max_examples: int = MAX_EXAMPLES

    def add(self, file: Path, reason: str, text: str, line: int | None = None, row: int | None = None) -> None:
        """Count one bad row; keep it as an example while there is room. ``row`` (1-based, within
        the file) locates rows of columnar inputs, which have no lines."""
        self.count += 1
        if len(self.examples) < self.max_examples:
            example = {"file": str(file), "line": line, "reason": reason, "text": text[:300]}
            if row is not None:
                example["row"] = row
            self.examples.append(example)

    def fail(self, file: Path, line: int | None, reason: str, text: str, row: int | None = None) -> None:
        where = f"{file}:{line}" if line is not None else f"{file}: row {row}" if row is not None else str(file)
        raise UserError(f"{where}: {reason}: {quote(text)}; fix the row or pass --on-bad-rows skip")

    def locate_examples(self) -> None:
        """Fill in the line numbers of the kept examples of text files (one scan per file, only when needed)."""
        by_file: dict[str, list[dict]] = {}
        for ex in self.examples:
            if ex["line"] is None and "row" not in ex:
                by_file.setdefault(ex["file"], []).append(ex)
        for path, exs in by_file.items():
            wanted = {ex["text"].encode(): ex for ex in exs}
            opener = gzip.open if is_gzip(Path(path)) else open
            with opener(path, "rb") as fh:  # type: ignore[operator]
                for no, line in enumerate(fh, start=1):
                    ex = wanted.pop(line.rstrip(b"\r\n"), None)
                    if ex is not None:
                        ex["line"] = no
                        if not wanted:
                            break


@dataclass
class ConvertStats:
    files: int = 0
    bytes: int = 0
    rows: int = 0
    bad: BadRows = field(default_factory=lambda: BadRows("error"))
    rows_per_day: dict[str, int] = field(default_factory=dict)
