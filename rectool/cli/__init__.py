"""The ``rectool`` command line: one Typer app, a thin layer over the library.

Each command module registers plain functions; ``command`` turns a ``UserError`` (and an
OS error a user can fix: permissions, a read-only or full disk, a missing path) into one
line on stderr and exit code 2 (``RECTOOL_DEBUG=1`` adds the traceback, same exit code),
and Ctrl-C into exit code 130 (atomic writers have already removed their temp output).
A bad flag or value is one line and exit code 2 as well.
"""

from __future__ import annotations

import errno
import functools
import re
import sys
import traceback
from typing import Annotated

import typer
from typer._click.exceptions import UsageError

from rectool import __version__
from rectool.cli import ingest, ranking, retrieval, train
from rectool.cli import tree as tree_cli
from rectool.cli import tune as tune_cli
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


# OS errors a user can fix (a path they named is unreadable, read-only, full, missing): one line
_USER_OS_ERRORS = {
    errno.EACCES: "permission denied; check its permissions or choose another path",
    errno.EPERM: "operation not permitted; check its permissions or choose another path",
    errno.EROFS: "read-only file system; choose a writable path",
    errno.ENOSPC: "no space left on the device; free some or choose another path",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another path",
    errno.ENOENT: "no such file or directory; check the path",
    errno.ENOTDIR: "a component of the path is not a directory; check the path",
    errno.EISDIR: "is a directory, expected a file; check the path",
}


def _fail(message: str, code: int) -> None:
    """One line on stderr and exit ``code``; with ``RECTOOL_DEBUG=1`` the traceback first, same code."""
    if debug_enabled():
        traceback.print_exc()
    sys.stderr.write(message + "\n")
    raise typer.Exit(code) from None


def command(group: typer.Typer, name: str):
    """Register ``func`` as a command whose user errors become one line and exit code 2."""

    def register(func):
        @functools.wraps(func)
        def guarded(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except UserError as exc:
                _fail(f"error: {exc}", EXIT_USER_ERROR)
            except KeyboardInterrupt:
                _fail("interrupted: no partial output was left behind", EXIT_INTERRUPTED)
            except OSError as exc:
                if exc.errno not in _USER_OS_ERRORS:
                    raise
                where = exc.filename if exc.filename is not None else name
                _fail(f"error: {where}: {_USER_OS_ERRORS[exc.errno]}", EXIT_USER_ERROR)

        group.command(name)(guarded)
        return func

    return register


def _one_line_usage_error(self, file=None) -> None:  # noqa: ANN001, ARG001
    """Click's usage errors (bad flag, bad value) print usage + hint + error on three lines; rectool's
    promise is one line on stderr, so the error says where help is instead."""
    where = f"{self.ctx.command_path} --help" if self.ctx is not None else "rectool --help"
    sys.stderr.write(f"error: {_choice_error(' '.join(self.format_message().split()))} (see '{where}')\n")


_NOT_A_CHOICE = re.compile(r"Invalid value for '(?P<flag>[^']+)': (?:Value error, )?'(?P<value>.*)' is not one of "
                           r"(?P<choices>.*?)\.?$")


def _choice_error(message: str) -> str:
    """Typer's words for a value outside a choice -> rectool's: ``--method lsh: choose hnsw, brute, tdm or nann``."""
    found = _NOT_A_CHOICE.match(message)
    if found is None:
        return message
    names = [c.strip().strip("'") for c in found["choices"].split(",")]
    listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    return f"{found['flag']} {found['value']}: choose {listed}"


UsageError.show = _one_line_usage_error  # NoArgsIsHelpError keeps its own show (the help text)


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
command(app, "tune")(tune_cli.tune)


def main() -> None:
    """Console-script entry point (``rectool``, ``python -m rectool``)."""
    app(prog_name="rectool")
