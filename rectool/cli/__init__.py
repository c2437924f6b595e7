"""The ``rectool`` command line: one Typer app, a thin layer over the library.

Each command module registers plain functions; ``main()`` turns a ``UserError`` into
one line on stderr and exit code 2 (``RECTOOL_DEBUG=1`` shows the traceback), and
Ctrl-C into exit code 130 (atomic writers have already removed their temp output).
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer

from rectool import __version__
from rectool.cli import ingest, ranking, retrieval, train
from rectool.cli import tree as tree_cli
from rectool.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, debug_enabled

app = typer.Typer(
    name="rectool",
    help="Recommender-systems toolkit: raw behaviour logs -> features -> models -> retrieval -> result.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rectool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Recommender-systems toolkit: raw behaviour logs -> features -> models -> retrieval -> result."""


def command(group: typer.Typer, name: str):
    """Register ``func`` as a command whose user errors become one line and exit code 2."""

    def register(func):
        @functools.wraps(func)
        def guarded(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except UserError as exc:
                if debug_enabled():
                    raise
                sys.stderr.write(f"error: {exc}\n")
                raise typer.Exit(EXIT_USER_ERROR) from None
            except KeyboardInterrupt:
                if debug_enabled():
                    raise
                sys.stderr.write("interrupted: no partial output was left behind\n")
                raise typer.Exit(EXIT_INTERRUPTED) from None

        group.command(name)(guarded)
        return func

    return register


# in pipeline order: raw data -> ranking stages -> models -> retrieval -> results
command(app, "synth")(ingest.synth)
command(app, "convert")(ingest.convert)
command(app, "features")(ranking.features)
command(app, "dataset")(ranking.dataset)
command(app, "baseline")(ranking.baseline)
command(app, "train")(train.train)
command(app, "export")(train.export)
command(app, "predict")(train.predict)
command(app, "embed")(train.embed)
command(app, "eval-f1")(ranking.eval_f1)
command(app, "submit")(ranking.submit)

config_group = typer.Typer(help="Training configs: validate without training.", no_args_is_help=True)
app.add_typer(config_group, name="config")
command(config_group, "check")(train.config_check)

tree = typer.Typer(help="TDM trees: build the initial tree or a learnt one from embeddings.", no_args_is_help=True,
                   rich_markup_mode=None)
app.add_typer(tree, name="tree")
command(tree, "init")(tree_cli.init)
command(tree, "cluster")(tree_cli.cluster)

hnsw = typer.Typer(help="HNSW indexes over item embeddings: build one, extract its graph.", no_args_is_help=True,
                   rich_markup_mode=None)
app.add_typer(hnsw, name="hnsw")
command(hnsw, "build")(retrieval.hnsw_build)
command(hnsw, "graph")(retrieval.hnsw_graph)
command(app, "retrieve")(retrieval.retrieve)
command(app, "eval-topk")(retrieval.eval_topk)


def main() -> None:
    """Console-script entry point (``rectool``, ``python -m rectool``)."""
    app(prog_name="rectool")
