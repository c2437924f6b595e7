"""Every example config is valid (the pipeline tests run the ones make all uses)."""

from __future__ import annotations

import pytest

from helpers import ROOT
from rectool.train.config import load_config

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_there_is_an_example_for_every_model():
    from rectool.train.models import MODELS

    types = {load_config(p).model.type for p in EXAMPLES}
    assert types == set(MODELS), f"models without an example: {set(MODELS) - types}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path, cli):
    res = cli("config", "check", path)
    assert res.stdout.strip() == str(path)


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_tune_search_example_is_valid(path):
    from rectool.tune.space import load_spec

    spec = load_spec(path)
    assert spec.methods or spec.models
