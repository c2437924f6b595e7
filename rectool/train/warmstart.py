"""Warm start (``train.init_checkpoint``): a fresh run's model initialised from another run's checkpoint.

Taken, wherever the name and the shape match:

* the embedding tables, one logical table at a time: a feature's table (its ``embedding_name``
  or name) and a wide group's 1-dim weights (``wide/NAME``). The tables of one dim live in one
  fused parameter (``engine.tables.dimD``, rows at offsets: ``rectool.train.features``); the
  checkpoint's own config gives its offsets, so a table still loads when others were added,
  removed or resized around it;
* every other parameter and the batch-norm statistics (``mlp.0.weight``, ``mlp.1.running_mean``).

Not taken: the optimiser and scheduler state and the step (the run starts at step 0), and the
buffers this run derives from its own config and data (normaliser statistics, vocabularies,
item frequencies, the negative-sampling catalogue).

    train: {model_dir: out/models/deepfm_v2, init_checkpoint: out/models/deepfm}

prints one table (stderr, rank 0), e.g. for a model with one feature more and one dim changed::

    status          count  names
    loaded             14  table:item, table:user_id, table:wide/item, mlp.0.bias, ...
    shape mismatch      2  table:city [50x8 -> 50x16], mlp.0.weight [32x83 -> 32x91]
    missing             1  table:brand               (this model only: initialised fresh)
    unexpected          0                            (the checkpoint only: ignored)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from rectool import console
from rectool.errors import UserError
from rectool.programs.inputs import InputSpec
from rectool.train import checkpoint as ckpt
from rectool.train.config import Config
from rectool.train.features import FeatureEngine
from rectool.train.models import build_model
from rectool.train.models.base import Model

TABLES = "engine.tables."
SHOWN = 4  # names listed per status


@dataclass
class WarmStart:
    """What ``warm_start`` did, by name (tables as ``table:NAME``)."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "name [old shape -> new shape]"
    missing: list[str] = field(default_factory=list)     # in this model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in this model

    def rows(self) -> list[list]:
        def names(xs: list[str]) -> str:
            return ", ".join(xs[:SHOWN]) + (f", ... (+{len(xs) - SHOWN})" if len(xs) > SHOWN else "")

        return [["loaded", len(self.loaded), names(self.loaded)],
                ["shape mismatch", len(self.mismatched), names(self.mismatched)],
                ["missing (initialised fresh)", len(self.missing), names(self.missing)],
                ["unexpected (ignored)", len(self.unexpected), names(self.unexpected)]]

    def report(self) -> None:
        console.table(f"warm start from {self.path} (optimiser state fresh)", ["", "count", "names"], self.rows())


def table_layout(engine: FeatureEngine) -> dict[str, tuple[int, int, int]]:
    """Logical table -> (dim, first row in the fused ``dimD`` table, rows)."""
    layout = {}
    for key, dim in engine.dim_of_table.items():
        start = engine.offset[key]
        later = [engine.offset[k] for k, d in engine.dim_of_table.items() if d == dim and engine.offset[k] > start]
        end = min(later) if later else engine.tables[f"dim{dim}"].shape[0]
        layout[key] = (dim, start, end - start)
    return layout


def learned_names(model: nn.Module) -> set[str]:
    """state_dict names of the parameters and batch-norm statistics, less the fused tables."""
    names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    for prefix, m in model.named_modules():
        if getattr(m, "track_running_stats", False):
            names |= {f"{prefix}.{b}" if prefix else b for b, _ in m.named_buffers(recurse=False)}
    return {n for n in names if not n.startswith(TABLES)}


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


def _source_model(state: dict, path: Path) -> Model:
    """The checkpoint's model, rebuilt from its own config on the meta device (names, shapes and the
    table layout; no memory for the weights, no draw from the RNG)."""
    if "config" not in state or "input_spec" not in state or "model" not in state:
        raise UserError(f"train.init_checkpoint {path}: not a rectool train checkpoint (no config or model)")
    try:
        cfg = Config.model_validate(yaml.safe_load(state["config"]))
        spec = InputSpec.from_json(state["input_spec"])
        extras = {k: v.numpy() for k, v in state.get("extras", {}).items()}
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return build_model(cfg, spec, stats=None, sparse=False, extras=extras)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 (a checkpoint of another version: say so in one line)
        raise UserError(f"train.init_checkpoint {path}: its model cannot be rebuilt here "
                        f"({str(exc).splitlines()[0][:160]})") from exc


@torch.no_grad()
def warm_start(model: Model, path: Path) -> WarmStart:
    """Copy into ``model`` (in place) what matches in the checkpoint at ``path``; report the rest."""
    state = ckpt.load(path)
    source = _source_model(state, path)
    weights: dict[str, torch.Tensor] = state["model"]
    done = WarmStart(path)

    old_tables, new_tables = table_layout(source.engine), table_layout(model.engine)
    for key, (dim, start, rows) in new_tables.items():
        name = f"table:{key}"
        if key not in old_tables:
            done.missing.append(name)
            continue
        old_dim, old_start, old_rows = old_tables[key]
        if (old_dim, old_rows) != (dim, rows):
            done.mismatched.append(f"{name} [{old_rows}x{old_dim} -> {rows}x{dim}]")
            continue
        target = model.engine.tables[f"dim{dim}"]
        target[start:start + rows] = weights[f"{TABLES}dim{dim}"][old_start:old_start + rows].to(target)
        done.loaded.append(name)
    done.unexpected += [f"table:{k}" for k in old_tables if k not in new_tables]

    ours, theirs = model.state_dict(), learned_names(source)
    mine = learned_names(model)
    for name in (n for n in ours if n in mine):
        if name not in theirs or name not in weights:
            done.missing.append(name)
        elif weights[name].shape != ours[name].shape:
            done.mismatched.append(f"{name} [{_shape(weights[name])} -> {_shape(ours[name])}]")
        else:
            ours[name].copy_(weights[name])
            done.loaded.append(name)
    done.unexpected += sorted(n for n in theirs if n not in mine)
    return done
