"""The search of ``rectool tune``, as a YAML file: which methods, which parameters, how to search.

Inputs: a YAML file; output: a frozen, validated ``TuneSpec`` (one-line errors naming the key).

    metric: recall@20           # recall | ndcg | hit_rate, at K
    sampler: tpe                # grid (every combination), tpe (Optuna's TPE) or random
    trials: 40                  # at most this many trials (grid: at most every combination)
    budget_minutes: 30          # no trial starts after this
    patience: 15                # stop after this many trials without a better one (0: never)
    seed: 7
    validation_users: 3000      # a seeded sample of the validation users scores every trial (default: all)
    methods:                    # one entry per method; its parameters: a list (choose one) or a range
      als:
        factors: [64, 128, 256]
        alpha: {low: 1, high: 50, log: true}
        regularization: {low: 0.001, high: 10, log: true}
        iterations: [15]
      ease:
        l2: {low: 10, high: 5000, log: true}
      item-knn:
        neighbours: {low: 10, high: 1000, log: true, int: true}
    models:                     # trained models (tune --dataset): a train config, its settings searched
      two_tower:
        config: examples/two_tower_taobao.yaml
        params:                 # config paths (as train --set names them) and their domains
          model.loss.temperature: [0.05, 0.1, 0.2]
          train.epochs: [3, 5]
        retrieve:               # retrieve-time terms: every combination is tried on each trained model
          item_similarity: [0, 0.35]
          item_to_item: [0, 0.35]
          repeat_bonus: [null]  # null: the flag left out (the model's own learned bonus, if any)

A parameter left out keeps the method's default (``rectool.retrieval.classical``) or the config's
value. ``grid`` needs lists, or ranges with a ``step``. A trained model's settings are checked at
load: every path must lead to a valid config.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rectool.errors import UserError
from rectool.retrieval.classical import CLASSICAL
from rectool.yamlconfig import read_yaml_file, validate_file

if TYPE_CHECKING:
    from rectool.train.config import Config

Sampler = Literal["grid", "tpe", "random"]
MetricName = Literal["recall", "ndcg", "hit_rate"]
TunableMethod = Literal["als", "ease", "item-knn"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Range(_Frozen):
    """A numeric range: floats unless ``int``; ``log`` samples the logarithm uniformly."""

    low: float
    high: float
    log: bool = False
    int: bool = False
    step: float | None = Field(default=None, gt=0, description="grid points low, low + step, ... (grid sampler)")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


Domain = Range | list[Any]  # Range first: a bad range reports its own error


class RetrieveTerms(_Frozen):
    """Values of ``retrieve``'s item-to-item and repeat terms tried on each trained model (no retraining per
    value); ``null`` leaves the flag out."""

    item_to_item: list[float | None] = Field(default=[None], min_length=1)
    item_similarity: list[float | None] = Field(default=[None], min_length=1)
    repeat_bonus: list[float | None] = Field(default=[None], min_length=1)
    item_to_item_temperature: list[float] = Field(default=[0.05], min_length=1)
    repeat_column: str | None = Field(default=None, description="the user's item-id history, where the user "
                                                                "tower reads more than one list column")

    def variants(self) -> list[dict[str, Any]]:
        """Every combination, as ``RetrieveOptions`` settings (a ``None`` left out)."""
        out: list[dict[str, Any]] = [{}]
        for name, values in self:
            if name != "repeat_column":
                out = [{**v, **({} if x is None else {name: x})} for v in out for x in values]
        mixes = ("item_to_item", "item_similarity")  # weight 0 is the term left out; the temperature matters
        out = [{k: x for k, x in v.items() if k not in mixes or x} for v in out]  # to these terms only
        out = [v if any(m in v for m in mixes) else {k: x for k, x in v.items() if k != "item_to_item_temperature"}
               for v in out]
        out = list({tuple(sorted(v.items())): v for v in out}.values())
        reads_history = ("item_similarity", "repeat_bonus")  # the terms that read --repeat-column
        return [{**v, "repeat_column": self.repeat_column} if self.repeat_column and any(t in v for t in reads_history)
                else v for v in out]


class TrainedSpace(_Frozen):
    """A trained model: a train config (path as the working directory sees it), settings searched in it."""

    config: Path
    params: dict[str, Domain] = {}
    retrieve: RetrieveTerms = RetrieveTerms()


class TuneSpec(_Frozen):
    metric: str = Field(default="recall@20", pattern=r"^(recall|ndcg|hit_rate)@[1-9][0-9]*$")
    sampler: Sampler = "tpe"
    trials: int = Field(default=40, ge=1)
    budget_minutes: float = Field(default=30.0, gt=0)
    patience: int = Field(default=0, ge=0)
    seed: int = 7
    validation_users: int | None = Field(default=None, ge=1, description="score every trial on a seeded sample of "
                                         "this many validation users (all when unset): a trained trial's "
                                         "retrieval costs in proportion")
    methods: dict[TunableMethod, dict[str, Domain]] = {}
    models: dict[str, TrainedSpace] = {}

    @model_validator(mode="after")
    def _known_parameters(self) -> TuneSpec:
        if not self.methods and not self.models:
            raise ValueError("give methods (als, ease, item-knn) or models (a train config), or both")
        for label in self.models:
            if label in CLASSICAL:
                raise ValueError(f"models.{label}: the name of a classical method; name the model otherwise")
        for method, space in self.methods.items():
            fields = set(CLASSICAL[method].model_fields) - {"method"}
            for name, domain in space.items():
                if name not in fields:
                    raise ValueError(f"{method} has no parameter '{name}' (it has: {', '.join(sorted(fields))})")
                if isinstance(domain, list) and not domain:
                    raise ValueError(f"{method}.{name}: an empty list; give at least one value")
                if self.sampler == "grid" and isinstance(domain, Range) and domain.step is None:
                    raise ValueError(f"{method}.{name}: the grid sampler needs a list or a range with a step")
        for label, model in self.models.items():
            for name, domain in model.params.items():
                if isinstance(domain, list) and not domain:
                    raise ValueError(f"{label}.{name}: an empty list; give at least one value")
                if self.sampler == "grid" and isinstance(domain, Range) and domain.step is None:
                    raise ValueError(f"{label}.{name}: the grid sampler needs a list or a range with a step")
        return self

    @property
    def metric_name(self) -> MetricName:
        return self.metric.split("@")[0]  # type: ignore[return-value]

    @property
    def k(self) -> int:
        return int(self.metric.split("@")[1])


def load_spec(path: str | Path) -> TuneSpec:
    path = Path(path)
    raw = read_yaml_file(path, "--space") or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the search space must be a mapping (metric, sampler, methods, ...)")
    spec = validate_file(path, raw, TuneSpec)
    for label, model in spec.models.items():  # every searched path must give a valid config, before any trial
        try:
            model_config(model, {})
        except UserError as exc:
            raise UserError(f"--space {path}: models.{label}.config: {exc}") from None
        for name, domain in model.params.items():
            first = domain[0] if isinstance(domain, list) else (int(domain.low) if domain.int else domain.low)
            try:
                model_config(model, {name: first})
            except UserError as exc:
                raise UserError(f"--space {path}: models.{label}.params.{name} does not fit the config ({exc})") \
                    from None
    return spec


def model_config(model: TrainedSpace, settings: dict[str, Any]) -> Config:
    """The model's train config with ``settings`` (config path -> value) applied, validated."""
    import json

    from rectool.train.config import Config, apply_overrides

    raw = read_yaml_file(model.config, "config") or {}
    if not isinstance(raw, dict):
        raise UserError(f"{model.config}: the config must be a mapping of sections (data, features, model, ...)")
    apply_overrides(raw, [f"{name}={json.dumps(value)}" for name, value in settings.items()])
    return validate_file(model.config, raw, Config)
