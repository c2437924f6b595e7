"""Option aliases shared by every command (one definition, the same help everywhere)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Directory to write (created atomically).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it already exists.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, logs or summary on stderr.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (results are deterministic in it).")]


class Device(str, Enum):
    """Where torch runs: ``auto`` is CUDA when a GPU is present, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
