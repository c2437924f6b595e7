"""Option aliases shared by every command (one definition, the same help everywhere)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer

from rectool.errors import UserError
from rectool.programs import DeviceChoice

OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Directory to write (created atomically).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it already exists.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, logs or summary on stderr.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (results are deterministic in it).")]
# the largest count an option takes: beyond a C int it is a typo, and it would reach C libraries (hnswlib,
# DuckDB, Arrow) that cannot take it
COUNT_MAX = 2**31 - 1


def count_option(*names: str, least: int = 1, help: str) -> Any:  # noqa: A002 (typer's own name)
    """``typer.Option`` for a whole number: below ``least`` or above ``COUNT_MAX`` it is refused up
    front, in one line naming the flag (``--batch-size 0``, ``--topk 99999999999999999999``)."""
    return typer.Option(*names, min=least, max=COUNT_MAX, help=help)


T = TypeVar("T")


def comma_list(values: str | Sequence[str] | None) -> list[str]:
    """The items of a comma-separated option, given once or repeated: ``"a,b"`` and ``--x a --x b``
    both give ``["a", "b"]``; items are stripped, blanks dropped."""
    texts = [values] if isinstance(values, str) else list(values or [])
    return [part.strip() for text in texts for part in text.split(",") if part.strip()]


def parse_list(values: str | Sequence[str] | None, flag: str, item: Callable[[str], T], expect: str,
               error: str | None = None) -> list[T]:
    """The one parser of list options: each item of ``comma_list(values)`` through ``item``; an item
    it refuses (``ValueError``) is a one-line error naming the flag, the item and what was expected
    (``error``, if given, is the whole message after ``FLAG VALUES:``, for options whose words are settled)."""
    out = []
    for part in comma_list(values):
        try:
            out.append(item(part))
        except ValueError:
            shown = values if isinstance(values, str) else ",".join(values or [])
            raise UserError(f"{flag} {shown}: {error or f'{part!r} is not {expect}'}") from None
    return out


def whole(least: int = 0, most: int = COUNT_MAX) -> Callable[[str], int]:
    """An item parser for ``parse_list``: a whole number in [least, most]."""

    def parse(text: str) -> int:
        value = int(text)
        if not least <= value <= most:
            raise ValueError(text)
        return value

    return parse


def choices(name: str, literal: Any) -> type[Enum]:
    """A Typer choice (a str Enum) of a library ``Literal``'s values: the library owns the closed list,
    the CLI shows and checks it (``--method [hnsw|brute|tdm|nann]``); ``.value`` is the library's value."""
    return Enum(name, {value: value for value in get_args(literal)}, type=str)  # type: ignore[return-value]


Device = choices("Device", DeviceChoice)  # where torch runs: auto is CUDA when a GPU is present, else the CPU

DeviceOpt = Annotated[Device, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]
NprocOpt = Annotated[int, typer.Option("--nproc", min=1, help="Processes to split the rows over (launched with "
                                                               "torch.distributed.run; output committed once "
                                                               "all are done).")]


def run_sharded(command: str, nproc: int, output: Path | str, overwrite: bool) -> None:
    """Under ``--nproc N`` (and not already inside a launched job): run this same command line on N
    processes (``rectool.sharding``) and exit with the job's code; otherwise return and run here. An
    existing output is refused before the processes start, not after."""
    if nproc == 1 or "WORLD_SIZE" in os.environ:
        return
    from rectool.artifacts import refuse_existing
    from rectool.launch import LaunchOptions, launch

    if str(output) != "-":
        refuse_existing(Path(output), overwrite)

    args, skip = [], False
    for arg in sys.argv[1:]:  # the same command line, without --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    logs = Path(tempfile.mkdtemp(prefix=f"rectool-{command}-logs-"))
    code = launch(LaunchOptions(nproc=nproc), args, logs, what=command)
    if code == 0:
        shutil.rmtree(logs, ignore_errors=True)
    sys.exit(code)
