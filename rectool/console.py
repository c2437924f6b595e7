"""Terminal output that never pollutes stdout.

stdout carries only what a command wrote (its output path, or an Arrow stream for
``-``), so commands compose in the shell. Everything else goes to stderr:
progress bars (rank 0 only; off with ``--quiet`` or when stderr is not a TTY),
log lines and the summary table printed at the end of every command.

Example::

    from rectool import console
    with console.progress("converting", total=n_bytes, unit="B") as bar:
        bar.advance(len(chunk))
    console.summary("convert", {"rows": 23_291_027, "output": "events/"})
    console.emit_path(out_dir)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

stderr = Console(stderr=True, highlight=False)
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence progress bars, logs and summaries (errors still print)."""
    global _quiet
    _quiet = bool(quiet) or os.environ.get("RECTOOL_QUIET", "") not in ("", "0")


def rank() -> int:
    """This process's rank under torch.distributed launchers (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_chatty() -> bool:
    """Whether logs and summaries should print: rank 0 and not ``--quiet``."""
    return not _quiet and rank() == 0


def log(message: str) -> None:
    if is_chatty():
        stderr.print(message)


def warn(message: str) -> None:
    if rank() == 0:
        stderr.print(f"[yellow]warning:[/yellow] {message}")


class _NullBar:
    """Stands in for a progress bar when none is shown."""

    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, **_: Any) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task_id: int) -> None:
        self._progress, self._task = progress, task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)

    def update(self, **fields: Any) -> None:
        self._progress.update(self._task, **fields)


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "") -> Iterator[_Bar | _NullBar]:
    """A rich progress bar on stderr, or a no-op when quiet, not rank 0, or not a TTY."""
    if not is_chatty() or not stderr.is_terminal:
        yield _NullBar()
        return
    count = MofNCompleteColumn() if unit != "B" else TextColumn("{task.completed:,.0f} B")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), count,
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=stderr, transient=False) as bar:
        task = bar.add_task(description, total=total, info="")
        yield _Bar(bar, task)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def summary(title: str, rows: Mapping[str, Any]) -> None:
    """The short two-column table every command prints at the end."""
    if not is_chatty():
        return
    table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
    table.add_column("", style="cyan")
    table.add_column("", justify="right")
    for key, value in rows.items():
        table.add_row(key, _fmt(value))
    stderr.print(table)


def table(title: str, columns: list[str], rows: list[list[Any]], highlight_row: int | None = None) -> None:
    """A many-column table on stderr (e.g. the eval scan), optionally marking one row."""
    if not is_chatty():
        return
    t = Table(title=title, title_justify="left", title_style="bold")
    for c in columns:
        t.add_column(c, justify="right")
    for i, r in enumerate(rows):
        t.add_row(*[_fmt(v) for v in r], style="bold green" if i == highlight_row else None)
    stderr.print(t)


def emit_path(path: os.PathLike[str] | str) -> None:
    """Print the path a command wrote, the one thing a command puts on stdout."""
    sys.stdout.write(f"{os.fspath(path)}\n")
    sys.stdout.flush()


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.start
