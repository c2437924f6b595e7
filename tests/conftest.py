"""Shared fixtures: a CLI runner and tiny generated data (real samples: ``helpers.shared_path``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from rectool.cli import app


def _cli_runner() -> Callable[..., Result]:
    runner = CliRunner()

    def run(*args: str | os.PathLike[str], expect: int | None = 0) -> Result:
        result = runner.invoke(app, [os.fspath(a) for a in args], catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (
                f"exit {result.exit_code} != {expect}\nstdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    return run


@pytest.fixture
def cli() -> Callable[..., Result]:
    """``cli("convert", ..., expect=0)`` runs the real Typer app and checks the exit code."""
    return _cli_runner()


@pytest.fixture(scope="module")
def cli_module() -> Callable[..., Result]:
    """The same runner, for module-scoped fixtures that build artifacts once."""
    return _cli_runner()


@pytest.fixture(scope="session")
def tiny_tianchi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated Tianchi log (both layouts), shared by the tests of a session."""
    from rectool.ingest.synth import synth_tianchi

    out = tmp_path_factory.mktemp("synth") / "tianchi"
    synth_tianchi(out, users=200, items=20_000, categories=200, seed=7)
    return out


@pytest.fixture(scope="session")
def tiny_ranking(tiny_tianchi: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``tiny_tianchi`` converted, featurised (item subset P) and sampled with the defaults."""
    from rectool.ingest.convert import convert
    from rectool.ranking.dataset import build_dataset
    from rectool.ranking.features import build_features

    root = tmp_path_factory.mktemp("ranking")
    convert([tiny_tianchi / "offline/tianchi_fresh_comp_train_user.csv"], root / "events")
    convert([tiny_tianchi / "offline/tianchi_fresh_comp_train_item.csv"], root / "items", fmt="tianchi-item")
    build_features(root / "events", root / "features", items=root / "items", threads=2, memory_limit="1GB")
    build_dataset(root / "events", root / "features", root / "samples", items=root / "items", threads=2,
                  memory_limit="1GB")
    return {"raw": tiny_tianchi, "root": root, **{name: root / name for name in
                                                  ("events", "items", "features", "samples")}}
