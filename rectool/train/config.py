"""The training config: one YAML file, validated at the boundary.

Sections: ``data``, ``features``, ``feature_groups``, ``model``, ``optimizer``, ``train``,
``eval``. Every model is frozen with ``extra="forbid"``: an unknown key or a wrong type
is an error naming the key and the allowed values. ``--set a.b=c`` overrides any value
(parsed as YAML, so ``--set train.epochs=2`` is an int). The resolved config is saved
beside the checkpoints as ``config.yaml``. The ``features`` section's classes live in
``rectool.train.feature_config``, the ``model`` section's in ``rectool.train.model_config``.

Example (``examples/deepfm_tianchi.yaml`` is a complete, commented one)::

    data: {train_input: out/dataset/train, eval_input: out/dataset/eval, label: label}
    features:
      - {name: user_id, kind: id, hash_bucket_size: 100000, embedding_dim: 16}
      - {name: ui_views_3d, kind: raw, normalizer: log1p}
    feature_groups: {deep: [user_id, ui_views_3d]}
    model: {type: deepfm, hidden_units: [256, 128]}
    train: {model_dir: out/model}

    rectool config check x.yaml
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, model_validator

from rectool.errors import UserError
from rectool.train.feature_config import CrossFeature, Feature, IdFeature, SequenceFeature, Strict
from rectool.train.model_config import ModelConfig
from rectool.yamlconfig import read_yaml_file, validate_file

# ----------------------------------------------------------------------------- data


class DataConfig(Strict):
    train_input: str = Field(description="training samples: parquet dir, file or glob")
    eval_input: str | None = Field(default=None, description="evaluation samples")
    label: str | None = Field(default="label", description="label column (ranking models; retrieval models "
                                                           "learn from the target item)")
    batch_size: int = Field(default=4096, gt=0)
    eval_batch_size: int | None = Field(default=None, gt=0)
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        default="auto", description="loader processes (0: load in the training process; auto: 0 with <= 2 cores "
                                    "per training process, where a loader process would take a core from the "
                                    "model, 1 with 3-7, 2 with more)")
    shuffle: bool = True
    shuffle_buffer: int = Field(default=200_000, ge=0, description="rows mixed across row groups and files")
    drop_remainder: bool = False
    sample_weight: str | None = None


# ----------------------------------------------------------------------------- optimisation


class DenseOptimizer(Strict):
    type: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.0, ge=0, description="sgd only")
    betas: tuple[float, float] = (0.9, 0.999)


class SparseOptimizer(Strict):
    type: Literal["sparse_adam", "adamw", "adagrad", "rowwise_adagrad", "dense"] = Field(
        default="sparse_adam", description="adamw: lazy Adam with decoupled weight decay of the touched rows; "
                                           "dense: embedding tables join the dense optimizer")
    lr: float = Field(default=1e-3, gt=0)
    eps: float = Field(default=1e-8, gt=0)
    initial_accumulator_value: float = Field(default=0.0, ge=0, description="adagrad variants")
    weight_decay: float | None = Field(default=None, ge=0, description="adamw only (default 0.01): each step, "
                                                                       "the rows it touched are multiplied by "
                                                                       "1 - lr * weight_decay")

    @model_validator(mode="after")
    def _decay_needs_adamw(self) -> SparseOptimizer:
        if self.weight_decay is not None and self.type != "adamw":
            raise ValueError(f"weight_decay is applied by type adamw only (type is {self.type}); set type: adamw "
                             "or remove weight_decay")
        return self

    @property
    def decay(self) -> float:
        """The weight decay ``adamw`` applies (0.01, torch's AdamW default, when not given)."""
        return 0.01 if self.weight_decay is None else self.weight_decay


class OptimizerConfig(Strict):
    dense: DenseOptimizer = Field(default_factory=DenseOptimizer)
    sparse: SparseOptimizer = Field(default_factory=SparseOptimizer)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["constant", "linear", "cosine", "exponential"] = "constant"
    decay_rate: float = Field(default=0.96, gt=0, le=1, description="exponential: factor per decay_steps")
    decay_steps: int = Field(default=1000, gt=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    clip_grad_norm: float | None = Field(default=None, gt=0, description="dense parameters")


class TrainConfig(Strict):
    model_dir: str
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, gt=0)
    grad_accum_steps: int = Field(default=1, ge=1)
    seed: int = 2024
    log_every: int = Field(default=50, gt=0)
    eval_every: int | None = Field(default=None, gt=0, description="steps; evaluation also runs at the end")
    checkpoint_every: int | None = Field(default=None, gt=0,
                                         description="steps; a checkpoint is also written at the end")
    checkpoint_minutes: float | None = Field(
        default=5.0, gt=0, description="wall-clock minutes of training between checkpoints (checked at log "
                                       "steps), so a killed run loses at most this much; null: steps only")
    keep_checkpoints: int = Field(default=3, ge=1)
    best_metric: str = "auc"
    best_mode: Literal["max", "min"] = "max"
    threads: int | None = Field(default=None, gt=0, description="torch intra-op threads (default: all cores)")
    init_checkpoint: str | None = Field(
        default=None, description="warm start: a checkpoint file, or a model_dir (its best, else latest "
                                  "checkpoint), whose embedding tables and layers of the same names and shapes "
                                  "initialise a fresh run (optimiser state starts fresh); a run resuming from "
                                  "this model_dir's own checkpoint ignores it")


class EvalConfig(Strict):
    metrics: list[Literal["auc", "gauc", "logloss", "accuracy"]] = Field(default_factory=lambda: ["auc", "logloss"])
    gauc_key: str = "user_id"
    max_rows: int | None = Field(default=None, gt=0, description="evaluate on the first N rows only")


# the feature groups each model reads by name (retrieval models name theirs in model.user_group/item_group)
GROUPS_READ = {"wide_and_deep": ("wide", "deep"), "deepfm": ("deep",), "dcn_v2": ("deep",), "dnn": ("deep",)}


class Config(Strict):
    data: DataConfig
    features: list[Feature] = Field(min_length=1)
    feature_groups: dict[str, list[str]]
    model: ModelConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique (repeated: {', '.join(dupes)})")
        for group, members in self.feature_groups.items():
            for m in members:
                if m not in names:
                    hint = difflib.get_close_matches(m, names, n=1)
                    raise ValueError(f"feature_groups.{group}: unknown feature '{m}'"
                                     + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        tables: dict[str, int] = {}
        for f in self.features:
            if isinstance(f, (IdFeature, SequenceFeature, CrossFeature)) and f.embedding_dim is None:
                raise ValueError(f"features.{f.name}: give embedding_dim")
            if getattr(f, "embedding_name", None):
                dim = tables.setdefault(f.embedding_name, f.embedding_dim)
                if dim != f.embedding_dim:
                    raise ValueError(f"features.{f.name}: embedding_name '{f.embedding_name}' is shared with "
                                     f"embedding_dim {dim}; shared tables need the same dim")
        cols: dict[str, str] = {}
        for f in self.features:
            if isinstance(f, SequenceFeature):
                side = cols.setdefault(f.input or f.name, f.truncate)
                if side != f.truncate:
                    raise ValueError(f"features.{f.name}: sequences over one column must truncate the same side")
        self._check_model_groups()
        return self

    def _check_model_groups(self) -> None:
        """Every feature group the model reads exists (else a KeyError deep inside the model)."""
        m = self.model
        needed = [*GROUPS_READ.get(m.type, ()), *(g for g in (getattr(m, "user_group", None),
                                                               getattr(m, "item_group", None)) if g)]
        missing = [g for g in dict.fromkeys(needed) if g not in self.feature_groups]
        if missing:
            have = ", ".join(self.feature_groups) or "none"
            raise ValueError(f"feature_groups: model {m.type} reads the group(s) {', '.join(missing)}, which the "
                             f"config does not define (it has {have}); add feature_groups.{missing[0]}: a list of "
                             "feature names")


# ----------------------------------------------------------------------------- loading


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """``["train.epochs=2", "features.0.embedding_dim=8"]`` applied to the raw YAML tree."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item}: expected KEY.PATH=VALUE")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            nxt = node[int(part)] if isinstance(node, list) and part.isdigit() else (
                node.get(part) if isinstance(node, dict) else None)
            if nxt is None:
                if isinstance(node, dict):
                    nxt = node[part] = {}
                else:
                    raise UserError(f"--set {item}: '{'.'.join(parts[:i + 1])}' is not in the config")
            node = nxt
        last = parts[-1]
        parsed = yaml.safe_load(value) if value.strip() else None
        if isinstance(node, list) and last.isdigit():
            node[int(last)] = parsed
        elif isinstance(node, dict):
            node[last] = parsed
        else:
            raise UserError(f"--set {item}: '{key}' does not name a key of the config")
    return raw


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    path = Path(path)
    raw = read_yaml_file(path, "--config") or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping of sections (data, features, model, ...)")
    return validate_file(path, apply_overrides(raw, overrides), Config)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)
