"""Checkpoints: plain dicts of tensors and primitives (``torch.load(weights_only=True)`` reads them).

Layout under ``model_dir``::

    config.yaml              the resolved config
    input_spec.json          how parquet columns become tensors
    loader_workers.txt       the loader process count (``num_workers: auto`` resolved once: it fixes the batch order)
    checkpoints/ckpt-00001000.pt   every ``checkpoint_minutes`` (5) or ``checkpoint_every`` steps and at the end;
                             the last K kept
    checkpoints/best.pt      the best by ``train.best_metric`` (also what ``train.init_checkpoint`` takes from a
                             model_dir: ``resolve_init``)
    metrics.jsonl            one JSON line per log / eval event
    tensorboard/             TensorBoard event files

A checkpoint holds: model, optimiser and scheduler states, ``step`` (global),
``epoch``, ``step_in_epoch`` (the data position), RNG states, the best metric so far,
the config text and versions. Files are written to a temp name and renamed; a temp
left by a process killed mid-save is swept by the next run (``sweep_temps``).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rectool import __version__
from rectool.errors import UserError
from rectool.faults import fault_point

_NAME = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_dir(model_dir: Path) -> Path:
    return model_dir / "checkpoints"


def list_checkpoints(model_dir: Path) -> list[Path]:
    folder = checkpoint_dir(model_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors and primitives (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save(path: Path, payload: dict[str, Any]) -> None:
    payload = {**payload, "rectool_version": __version__, "torch_version": str(torch.__version__)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    fault_point("checkpoint.before_rename")
    os.replace(tmp, path)


def sweep_temps(model_dir: Path) -> list[Path]:
    """Remove half-written checkpoints (``.ckpt-*.pt.tmp-PID``) of killed runs. The caller holds
    the model_dir's lock, so no live process is writing them."""
    folder = checkpoint_dir(model_dir)
    stale = sorted(folder.glob(".*.tmp-*")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise UserError(f"checkpoint {path}: cannot be read ({str(exc).splitlines()[0][:200]})") from exc


def prune(model_dir: Path, keep: int) -> None:
    for old in list_checkpoints(model_dir)[:-keep]:
        old.unlink(missing_ok=True)


def resolve(model_dir: Path, which: str) -> Path:
    """``best``, ``latest`` or a path -> the checkpoint file."""
    if which == "latest":
        found = list_checkpoints(model_dir)
        if not found:
            raise UserError(f"--model-dir {model_dir}: has no checkpoint; train first")
        return found[-1]
    if which == "best":
        best = checkpoint_dir(model_dir) / "best.pt"
        if best.is_file():
            return best
        return resolve(model_dir, "latest")
    return Path(which)


def resolve_init(where: str) -> Path:
    """``train.init_checkpoint`` -> a checkpoint file: the file itself, or a model_dir's best (else latest)."""
    path = Path(where)
    if path.is_file():
        return path
    if path.is_dir():
        best = checkpoint_dir(path) / "best.pt"
        found = [best] if best.is_file() else list_checkpoints(path)[-1:]
        if not found:
            raise UserError(f"train.init_checkpoint {path}: a directory without checkpoints (give a checkpoint "
                            "file or a trained model_dir)")
        return found[0]
    raise UserError(f"train.init_checkpoint {path}: no such file or directory")
