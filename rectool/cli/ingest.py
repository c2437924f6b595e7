"""CLI for the first stages: ``synth`` (built-in default data) and ``convert`` (raw logs, ORC or parquet to
rectool's parquet tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rectool import console
from rectool.cli.options import OutputOpt, OverwriteOpt, QuietOpt, SeedOpt, choices, count_option
from rectool.ingest.badrows import BadRowMode
from rectool.ingest.formats import FORMAT_NAMES
from rectool.ingest.synth import Dataset, Layout

DatasetChoice = choices("DatasetChoice", Dataset)
LayoutChoice = choices("LayoutChoice", Layout)
BadRowModeChoice = choices("BadRowModeChoice", BadRowMode)


def synth(
    output: OutputOpt,
    dataset: Annotated[DatasetChoice, typer.Option(help="tianchi (next-day purchase task) or userbehavior "
                                                        "(retrieval).")] = DatasetChoice("tianchi"),
    users: Annotated[int | None, count_option(help="Users [tianchi 3000, userbehavior 10000].")] = None,
    items: Annotated[int | None, count_option(help="Items [tianchi 300000, userbehavior 100000].")] = None,
    categories: Annotated[int | None, count_option(help="Categories [tianchi 2000, userbehavior 1000].")] = None,
    rows: Annotated[int | None, count_option(help="Approximate log rows [1165 per user / 101 per user].")] = None,
    days: Annotated[int | None, count_option(help="Days of log [31 from 2014-11-18 / 9 from 2017-11-25].")] = None,
    layout: Annotated[LayoutChoice, typer.Option(help="Tianchi layouts: offline (CSV+header), online (TSV parts "
                                                      "A/B), or both.")] = LayoutChoice("both"),
    seed: SeedOpt = 2014,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate realistic raw behaviour logs in the public Tianchi or UserBehavior formats.

    Full Tianchi scale: --users 20000 --items 4758484 --categories 9557 --rows 23291027.
    """
    from rectool.ingest.synth import synth_tianchi, synth_userbehavior

    console.set_quiet(quiet)
    sizes = {k: v for k, v in dict(users=users, items=items, categories=categories, rows=rows, days=days).items()
             if v is not None}
    if dataset.value == "tianchi":
        counts = synth_tianchi(output, seed=seed, layout=layout.value, overwrite=overwrite, **sizes)
    else:
        counts = synth_userbehavior(output, seed=seed, overwrite=overwrite, **sizes)
    console.summary(f"synth {dataset.value}", {"output": str(output), **counts})
    console.emit_path(output)


def convert(
    inputs: Annotated[list[str], typer.Argument(help="Raw files or globs (plain or gzip text; .orc or .parquet "
                                                     "files or directories, read by column name); several allowed.",
                                                show_default=False)],
    output: OutputOpt,
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of {', '.join(FORMAT_NAMES)}.")]
    = "tianchi-user",
    schema: Annotated[Path | None, typer.Option(help="YAML column spec for --format generic (ORC/parquet: "
                                                     "columns by name, rename maps them).")] = None,
    on_bad_rows: Annotated[BadRowModeChoice, typer.Option(help="error: stop at the first bad row; skip: drop and "
                                                               "count them.")] = BadRowModeChoice("error"),
    behavior: Annotated[int | None, typer.Option(help="Behaviour (1-4) of every row, for layouts without one "
                                                      "(user-lines, pairs, movielens, movielens-1m).")] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert raw logs (CSV/TSV, ORC, parquet) to parquet: events (by day when timed), or the deduplicated item
    subset."""
    from rectool.ingest.convert import convert as run_convert

    console.set_quiet(quiet)
    result = run_convert(inputs, output, fmt=format, schema=schema, on_bad_rows=on_bad_rows.value, overwrite=overwrite,
                         behavior=behavior)
    console.summary(f"convert {format}", result)
    console.emit_path(output)
