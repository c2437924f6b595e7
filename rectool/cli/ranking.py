"""CLI of the ranking pipeline: ``features``, ``dataset``, ``baseline``, ``eval-f1``, ``submit``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rectool import console
from rectool.cli.options import OutputOpt, OverwriteOpt, QuietOpt

EventsOpt = Annotated[Path, typer.Option("--events", help="Events dataset written by `rectool convert`.")]
ItemsOpt = Annotated[Path | None, typer.Option("--items", help="Item subset P (items dataset from `rectool convert "
                                                               "--format tianchi-item`).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="DuckDB threads [all cores].")]
MemoryOpt = Annotated[str, typer.Option("--memory-limit", help="DuckDB memory limit; beyond it DuckDB spills to "
                                                               "--temp-dir.")]
TempDirOpt = Annotated[Path | None, typer.Option("--temp-dir", help="Where DuckDB spills [beside the output].")]


def features(
    events: EventsOpt,
    output: OutputOpt,
    items: ItemsOpt = None,
    cutoffs: Annotated[str | None, typer.Option("--cutoffs", help="Cut-off days YYYY-MM-DD, comma-separated; "
                                                                  "features use events strictly before each [the "
                                                                  "last two days of the log and the day after].")]
    = None,
    windows: Annotated[str, typer.Option("--windows", help="Windows in days before the cut-off, plus 'all'.")]
    = "1,3,7,all",
    pair_days: Annotated[int | None, typer.Option("--pair-days", help="Keep user x item / user x category rows "
                                                                      "active in the last N days [largest window].")]
    = None,
    last_n: Annotated[int, typer.Option("--last-n", help="Length of the per-user last items/categories lists.")]
    = 50,
    threads: ThreadsOpt = None,
    memory_limit: MemoryOpt = "3GB",
    temp_dir: TempDirOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Behaviour features per cut-off day (user, item, category, user x item, user x category), in DuckDB."""
    from rectool.ranking.common import parse_days
    from rectool.ranking.features import build_features, parse_windows

    console.set_quiet(quiet)
    result = build_features(events, output, cutoffs=parse_days(cutoffs, "--cutoffs") if cutoffs else None,
                            items=items, windows=parse_windows(windows), pair_days=pair_days, last_n=last_n,
                            threads=threads, memory_limit=memory_limit, temp_dir=temp_dir, overwrite=overwrite)
    console.summary("features", result)
    console.emit_path(output)
