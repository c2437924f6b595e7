"""``rectool export``: a trained checkpoint -> a ``torch.export`` program (``model.pt2``).

Each program takes some of the model's input tensors (``NAME.input_spec.json`` says which
parquet columns and how, see ``rectool.programs.inputs``) with a dynamic batch size. A
ranking model has one, ``model.pt2``, returning probabilities: [B] for binary models,
[B, C] for ``num_class`` > 1; two-tower models have ``user_tower.pt2`` and
``item_tower.pt2`` returning embeddings; pair scorers (tdm, nann) have ``scorer.pt2``, whose
candidate column is a [B, T] matrix (T candidates per user row, scores [B, T]), and
``item_embedding.pt2``; ``_meta.json`` lists the parts. Every feature
transform (hashing, bucketizing, normalising, crosses, sequence truncation) is inside
the program, so ``predict`` needs only this directory and the parquet columns.
Not TorchScript (deprecated).

Output directory::

    NAME.pt2              each exported program (torch.export.save)
    NAME.input_spec.json  the columns that program reads
    input_spec.json       every column the model reads
    config.yaml        the resolved training config
    assets/            files given with --asset-files
    _meta.json         kind "export", model, parts {name: {columns, output, ...}}, checkpoint, step;
                       a two-tower with ``model.repeat`` adds parts.user_tower.repeat {column,
                       bonus} (the bonus per history count, on the u·v scale)

    rectool export --model-dir out/model --export-dir out/export --checkpoint best
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from rectool.artifacts import atomic_dir, write_meta
from rectool.errors import UserError
from rectool.programs.inputs import InputSpec, example_tensors
from rectool.programs.manifest import ExportManifest, PartManifest
from rectool.train import checkpoint as ckpt
from rectool.train.config import Config
from rectool.train.models import build_model
from rectool.train.models.base import Model


def example_inputs(spec: InputSpec, batch: int = 4) -> dict[str, torch.Tensor]:
    return example_tensors(spec, batch)


def load_trained(model_dir: Path, which: str = "best") -> tuple[Config, InputSpec, Model, dict[str, Any]]:
    """Config, input spec and the model with the chosen checkpoint's weights (eval mode, dense grads)."""
    for name in ("config.yaml", "input_spec.json"):
        if not (model_dir / name).is_file():
            raise UserError(f"--model-dir {model_dir}: has no {name}; is it a rectool train model_dir?")
    cfg = Config.model_validate(yaml.safe_load((model_dir / "config.yaml").read_text()))
    spec = InputSpec.from_json((model_dir / "input_spec.json").read_text())
    path = ckpt.resolve(model_dir, which)
    state = ckpt.load(path)
    extras = {k: v.numpy() for k, v in state.get("extras", {}).items()}
    model = build_model(cfg, spec, stats=None, sparse=False, extras=extras)
    model.load_state_dict(state["model"])
    model.eval()
    return cfg, spec, model, {"checkpoint": str(path), "step": state.get("step"), "best": state.get("best")}


def export_program(module: nn.Module, example: dict[str, torch.Tensor], path: Path,
                   candidate: str | None = None) -> None:
    """torch.export with a dynamic batch dimension on every input (and a dynamic width on a candidate matrix)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 24)
    shapes = {k: {0: batch} for k in example}
    if candidate is not None:
        example = example | {candidate: torch.zeros(next(iter(example.values())).shape[0], 3, dtype=torch.int64)}
        shapes[candidate] = {0: batch, 1: torch.export.Dim("candidates", min=1, max=1 << 24)}
    shapes = (shapes,)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=shapes)
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds here)
        raise RuntimeError(f"torch.export failed for this model: {exc}") from exc
    torch.export.save(program, str(path))


def export(model_dir: Path, export_dir: Path, checkpoint: str = "best", asset_files: list[Path] | None = None,
           overwrite: bool = False) -> dict[str, Any]:
    cfg, spec, model, info = load_trained(Path(model_dir), checkpoint)
    assets = [Path(a) for a in (asset_files or [])]
    for a in assets:
        if not a.is_file():
            raise UserError(f"--asset-files {a}: no such file")
    parts = model.export_parts()
    with atomic_dir(export_dir, overwrite) as tmp:
        for part in parts:
            sub = subset(spec, part.columns)
            export_program(part.module, example_inputs(sub), tmp / f"{part.name}.pt2", part.candidate)
            (tmp / f"{part.name}.input_spec.json").write_text(sub.to_json())
        (tmp / "input_spec.json").write_text(spec.to_json())
        shutil.copy(Path(model_dir) / "config.yaml", tmp / "config.yaml")
        if assets:
            (tmp / "assets").mkdir()
            for a in assets:
                shutil.copy(a, tmp / "assets" / a.name)
        manifest = ExportManifest(
            model=cfg.model.type, num_class=getattr(cfg.model, "num_class", 1), columns=spec.names,
            parts={p.name: PartManifest(columns=p.columns, kind=p.kind, output=p.output, candidate=p.candidate,
                                        candidate_shape="[B, T]" if p.candidate else None, repeat=p.repeat)
                   for p in parts},
            checkpoint=info["checkpoint"], step=info["step"])
        write_meta(tmp, kind="export", inputs=[str(model_dir)], **manifest.to_meta(), best=info["best"])
    size = sum((Path(export_dir) / f"{p.name}.pt2").stat().st_size for p in parts)
    return {"export_dir": str(export_dir), "model": cfg.model.type, "programs": ", ".join(p.name for p in parts),
            **info, "programs_mb": round(size / 1e6, 2)}


def subset(spec: InputSpec, columns: list[str]) -> InputSpec:
    """The spec of the columns one program reads (no label)."""
    return InputSpec(columns=[c for c in spec.columns if c.name in columns])
