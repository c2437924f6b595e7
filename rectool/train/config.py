"""The training config: one YAML file, validated at the boundary.

Sections: ``data``, ``features``, ``feature_groups``, ``model``, ``optimizer``, ``train``,
``eval``. Every model is frozen with ``extra="forbid"``: an unknown key or a wrong type
is an error naming the key and the allowed values. ``--set a.b=c`` overrides any value
(parsed as YAML, so ``--set train.epochs=2`` is an int). The resolved config is saved
beside the checkpoints as ``config.yaml``.

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
import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rectool.errors import UserError
from rectool.yamlconfig import read_yaml, validation_message


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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


# ----------------------------------------------------------------------------- features


class _EmbeddingOptions(Strict):
    embedding_dim: int | None = Field(default=None, gt=0)
    embedding_name: str | None = Field(default=None, description="share one table between features")


class _IdOptions(_EmbeddingOptions):
    hash_bucket_size: int | None = Field(default=None, gt=0)
    num_buckets: int | None = Field(default=None, gt=0)
    modulo: bool = Field(default=False, description="num_buckets: take out-of-range ids modulo, not an error")
    vocab_list: list[int | str] | None = None
    default_id: int = Field(default=0, description="id used for missing (null) values")

    @model_validator(mode="after")
    def _one_bucketing(self) -> _IdOptions:
        chosen = [k for k in ("hash_bucket_size", "num_buckets", "vocab_list") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("give exactly one of hash_bucket_size, num_buckets, vocab_list"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        return self

    @property
    def table_size(self) -> int:
        if self.hash_bucket_size is not None:
            return self.hash_bucket_size
        if self.num_buckets is not None:
            return self.num_buckets
        return len(self.vocab_list or []) + 1  # row 0: out of vocabulary


class IdFeature(_IdOptions):
    """A categorical id column (int64 or string) mapped to an embedding row."""

    kind: Literal["id"]
    name: str
    input: str | None = Field(default=None, description="column name (default: the feature name)")


class RawFeature(_EmbeddingOptions):
    """A numeric column: normalised and fed as a dense value, or bucketized to an id."""

    kind: Literal["raw"]
    name: str
    input: str | None = None
    match: str | None = Field(default=None, description="glob over column names: one dense value per matching "
                                                         "numeric column (e.g. 'ui_*')")
    normalizer: Literal["none", "log1p", "zscore", "minmax"] = "none"
    stats: dict[str, float] | None = Field(
        default=None, description="zscore: {mean, std}; minmax: {min, max}; computed from training data if absent")
    boundaries: list[float] | None = Field(default=None, description="bucketize into len+1 ids (needs embedding_dim)")
    default_value: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> RawFeature:
        if self.match is not None and (self.input is not None or self.boundaries is not None or self.stats):
            raise ValueError("match selects many columns: it cannot be combined with input, boundaries or stats")
        if self.boundaries is not None:
            if sorted(self.boundaries) != list(self.boundaries):
                raise ValueError("boundaries must be sorted ascending")
            if self.embedding_dim is None:
                raise ValueError("boundaries turn the feature into an id: give embedding_dim")
        elif self.embedding_dim is not None:
            raise ValueError("embedding_dim on a raw feature needs boundaries (else it is a dense value)")
        need = {"zscore": {"mean", "std"}, "minmax": {"min", "max"}}.get(self.normalizer)
        if self.stats is not None and need is not None and set(self.stats) != need:
            raise ValueError(f"stats for {self.normalizer} must have exactly {sorted(need)}")
        return self

    @property
    def table_size(self) -> int:
        return len(self.boundaries or []) + 1

    def columns(self, names: Sequence[str]) -> list[str]:
        """The columns it reads: its ``input`` (or name), or every name of ``names`` matching ``match``."""
        if self.match is None:
            return [self.input or self.name]
        return [n for n in names if fnmatch.fnmatchcase(n, self.match)]


class CrossFeature(_EmbeddingOptions):
    """Hashed cross of two or more id columns."""

    kind: Literal["cross"]
    name: str
    inputs: list[str] = Field(min_length=2)
    hash_bucket_size: int = Field(gt=0)

    @property
    def table_size(self) -> int:
        return self.hash_bucket_size


class SequenceFeature(_IdOptions):
    """A list<id> column (most recent last), truncated to ``max_len`` and padded."""

    kind: Literal["sequence"]
    name: str
    input: str | None = None
    max_len: int = Field(gt=0)
    truncate: Literal["keep_last", "keep_first"] = "keep_last"
    combiner: Literal["sum", "mean", "tile", "none"] = "mean"
    tile_len: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _tile(self) -> SequenceFeature:
        if self.combiner == "tile" and self.tile_len is None:
            raise ValueError("combiner tile needs tile_len")
        if self.combiner != "tile" and self.tile_len is not None:
            raise ValueError("tile_len is only used with combiner tile")
        if self.tile_len is not None and self.tile_len > self.max_len:
            raise ValueError("tile_len cannot exceed max_len")
        return self


Feature = Annotated[IdFeature | RawFeature | CrossFeature | SequenceFeature, Field(discriminator="kind")]


# ----------------------------------------------------------------------------- models


class MLPConfig(Strict):
    hidden_units: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = True
    activation: Literal["relu", "gelu", "prelu", "dice"] = "relu"


class _ModelBase(Strict):
    needs_label: ClassVar[bool] = True  # learns from data.label (retrieval and pair models: from the target id)

    num_class: int = Field(default=1, ge=1, description="1: binary (BCE); >1: softmax over classes")
    deep: MLPConfig = Field(default_factory=MLPConfig)


class WideAndDeepConfig(_ModelBase):
    type: Literal["wide_and_deep"]


class DeepFMConfig(_ModelBase):
    type: Literal["deepfm"]


class DINConfig(_ModelBase):
    type: Literal["din"]
    attention_units: list[int] = Field(default_factory=lambda: [64, 32])
    attention_softmax: bool = Field(default=False, description="the paper uses unnormalised weights")
    query: dict[str, str] = Field(
        description="sequence feature -> the candidate's feature it attends with, e.g. {hist_items: item_id}")


class DCNv2Config(_ModelBase):
    type: Literal["dcn_v2"]
    cross_layers: int = Field(default=3, ge=1)
    low_rank: int | None = Field(default=None, gt=0, description="low-rank cross matrices (the paper's DCN-Mix off)")
    structure: Literal["stacked", "parallel"] = "parallel"


class TowerConfig(Strict):
    hidden_units: list[int] = Field(default_factory=lambda: [256])
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    activation: Literal["relu", "gelu", "prelu"] = "relu"


class NegativesConfig(Strict):
    sampler: Literal["none", "uniform", "popularity"] = Field(
        default="none", description="extra negatives shared by the batch, besides the in-batch ones")
    count: int = Field(default=0, ge=0)
    alpha: float = Field(default=0.75, ge=0, description="popularity sampler: weight = count ** alpha")
    items: str | None = Field(default=None, description="item catalogue (parquet) with the item tower's columns; "
                                                        "default: items/ beside data.train_input")


class RetrievalLossConfig(Strict):
    in_batch: bool = True
    log_q: bool = Field(default=True, description="subtract log(sampling probability) from each negative's logit")
    temperature: float = Field(default=0.05, gt=0)
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)

    @model_validator(mode="after")
    def _some_negatives(self) -> RetrievalLossConfig:
        if not self.in_batch and (self.negatives.sampler == "none" or self.negatives.count == 0):
            raise ValueError("with in_batch: false, give negatives.sampler and negatives.count")
        return self


class _RetrievalBase(Strict):
    needs_label: ClassVar[bool] = False

    user_group: str = "user"
    item_group: str = "item"
    item_id: str = Field(default="item_id", description="the column that identifies the target item")
    output_dim: int = Field(default=64, gt=0)
    user_tower: TowerConfig = Field(default_factory=TowerConfig)
    item_tower: TowerConfig = Field(default_factory=lambda: TowerConfig(hidden_units=[]))
    l2_normalize: bool = True
    loss: RetrievalLossConfig = Field(default_factory=RetrievalLossConfig)


class RepeatConfig(Strict):
    """A learned bonus for candidates the user already has in a history sequence (RepeatNet's
    repeat mode, Ren et al., AAAI 2019): score = u·v + bonus[min(count, max_count)]."""

    history: str = Field(description="user-group sequence feature (raw item ids, compared with model.item_id)")
    max_count: int = Field(default=3, ge=1, le=64, description="occurrences in the history beyond this share a bonus")


class TwoTowerConfig(_RetrievalBase):
    """DSSM / YouTube-DNN: user tower over user features and the pooled history, item tower over the item."""

    type: Literal["two_tower"]
    history_pooling: Literal["mean", "attention"] = Field(
        default="attention", description="how user-group sequences with combiner none are pooled")
    history_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="training: drop each history item "
                                   "of the pooled sequences with this probability (input dropout, as Mult-VAE)")
    repeat: RepeatConfig | None = Field(
        default=None, description="add a learned bonus to items already in the user's history (repeat "
                                  "consumption: re-buys, carted items); retrieve applies it to those items")


class MINDConfig(_RetrievalBase):
    """MIND: several interest capsules per user by dynamic routing over the history."""

    type: Literal["mind"]
    history: str = Field(description="the user's item sequence feature (combiner none) to route over")
    interests: int = Field(default=4, ge=1)
    routing_iterations: int = Field(default=3, ge=1)
    pow_p: float = Field(default=1.0, ge=0, description="label-aware attention sharpness")
    dynamic_interests: bool = Field(default=True, description="K_u = max(1, min(K, log2(history length)))")


class _CandidateBase(Strict):
    needs_label: ClassVar[bool] = False

    candidate: str = Field(description="id feature whose column carries the candidate (item or tree node) id; "
                                       "its embedding is the attention query")
    history: str = Field(description="the user's item sequence feature (combiner none), sharing the candidate's "
                                     "embedding table")
    user_group: str | None = Field(default=None, description="more user features, concatenated before the MLP")
    attention_units: list[int] = Field(default_factory=lambda: [36])
    deep: MLPConfig = Field(default_factory=lambda: MLPConfig(hidden_units=[128, 64], batch_norm=False))


class TDMConfig(_CandidateBase):
    """TDM: a node scorer trained with layer-wise sampling over an item tree."""

    type: Literal["tdm"]
    tree: str = Field(description="tree directory from rectool tree init / tree cluster")
    layer_num_sample: list[int] = Field(description="negatives per tree level, root first (0)")
    windows: list[int] = Field(default_factory=lambda: [1, 1, 2, 4, 8, 16],
                               description="multi-window attention (most recent first); [] for one window")
    loss: Literal["binary", "softmax"] = Field(default="binary", description="softmax: per level over the "
                                                                             "positive and its negatives")


class NANNConfig(_CandidateBase):
    """NANN's scorer: target attention + MLP, sampled softmax with log-Q, optional adversarial training."""

    type: Literal["nann"]
    negatives: int = Field(default=200, ge=1, description="frequency-unigram negatives per batch")
    adv_eps: float = Field(default=0.0, ge=0, description="FGSM step on the candidate embedding (0: off)")
    adv_weight: float = Field(default=1.0, ge=0, description="weight of KL(clean || perturbed)")


ModelConfig = Annotated[WideAndDeepConfig | DeepFMConfig | DINConfig | DCNv2Config | TwoTowerConfig | MINDConfig
                        | TDMConfig | NANNConfig, Field(discriminator="type")]


# ----------------------------------------------------------------------------- optimisation


class DenseOptimizer(Strict):
    type: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.0, ge=0, description="sgd only")
    betas: tuple[float, float] = (0.9, 0.999)


class SparseOptimizer(Strict):
    type: Literal["sparse_adam", "adagrad", "rowwise_adagrad", "dense"] = Field(
        default="sparse_adam", description="dense: embedding tables join the dense optimizer")
    lr: float = Field(default=1e-3, gt=0)
    eps: float = Field(default=1e-8, gt=0)
    initial_accumulator_value: float = Field(default=0.0, ge=0, description="adagrad variants")


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


class EvalConfig(Strict):
    metrics: list[Literal["auc", "gauc", "logloss", "accuracy"]] = Field(default_factory=lambda: ["auc", "logloss"])
    gauc_key: str = "user_id"
    max_rows: int | None = Field(default=None, gt=0, description="evaluate on the first N rows only")


# the feature groups each model reads by name (retrieval models name theirs in model.user_group/item_group)
GROUPS_READ = {"wide_and_deep": ("wide", "deep"), "deepfm": ("deep",), "dcn_v2": ("deep",)}


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
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping of sections (data, features, model, ...)")
    raw = apply_overrides(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise UserError(validation_message(path, exc, Config)) from exc


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)
