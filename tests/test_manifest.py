"""The export manifest: typed, versioned, and exports written before it still load."""

from __future__ import annotations

import json

import pytest

from rectool.errors import UserError
from rectool.programs.manifest import MANIFEST_VERSION, ExportManifest, PartManifest


def _export(tmp_path, meta):
    (tmp_path / "_meta.json").write_text(json.dumps({"kind": "export", **meta}))
    return tmp_path


def test_an_export_from_before_the_manifest_is_read_with_its_kinds_inferred(tmp_path):
    old_mind = {"model": "mind", "parts": {
        "user_tower": {"columns": ["hist"], "output": "interest vectors [B, 4, 16]", "candidate": None},
        "item_tower": {"columns": ["item_id"], "output": "item vectors [B, 16]", "candidate": None}}}
    (tmp_path / "mind").mkdir()
    manifest = ExportManifest.read(_export(tmp_path / "mind", old_mind))
    assert manifest.part("user_tower").kind == "interests" and manifest.part("item_tower").kind == "vector"
    assert manifest.towers and not manifest.pair_scorer and manifest.item_part == "item_tower"
    old_scorer = {"model": "nann", "parts": {  # scorers before the candidate matrix: one candidate per row
        "scorer": {"columns": ["hist", "item_id"], "output": "scores [B]", "candidate": "item_id"},
        "item_embedding": {"columns": ["item_id"], "output": "embeddings [B, 8]", "candidate": None}}}
    (tmp_path / "nann").mkdir()
    scorer = ExportManifest.read(_export(tmp_path / "nann", old_scorer)).part("scorer")
    assert (scorer.kind, scorer.candidate, scorer.candidate_shape) == ("pair_scores", "item_id", "[B]")


def test_the_manifest_round_trips_through_meta_and_names_what_is_missing(tmp_path):
    manifest = ExportManifest(model="two_tower", columns=["u", "i"], parts={
        "user_tower": PartManifest(columns=["u"], kind="vector"),
        "item_tower": PartManifest(columns=["i"], kind="vector")}, step=10)
    meta = json.loads(json.dumps(manifest.to_meta()))
    assert meta["manifest_version"] == MANIFEST_VERSION
    assert ExportManifest.read(_export(tmp_path, meta)) == manifest
    with pytest.raises(UserError, match=r"has no scorer.pt2 \(it has: user_tower, item_tower\)"):
        manifest.part("scorer", "--model", tmp_path)


def test_a_manifest_of_an_unknown_kind_is_one_line(tmp_path):
    meta = {"parts": {"user_tower": {"columns": ["u"], "kind": "histogram"}}}
    with pytest.raises(UserError, match="_meta.json parts.user_tower.kind"):
        ExportManifest.read(_export(tmp_path, meta))
