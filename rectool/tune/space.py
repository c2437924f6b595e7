"""The search of ``rectool tune``, as a YAML file: which methods, which parameters, how to search.

Inputs: a YAML file; output: a frozen, validated ``TuneSpec`` (one-line errors naming the key).

    metric: recall@20           # recall | ndcg | hit_rate, at K
    sampler: tpe                # grid (every combination), tpe (Optuna's TPE) or random
    trials: 40                  # at most this many trials (grid: at most every combination)
    budget_minutes: 30          # no trial starts after this
    patience: 15                # stop after this many trials without a better one (0: never)
    seed: 7
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

A parameter left out keeps the method's default (``rectool.retrieval.classical``). ``grid`` needs
lists, or ranges with a ``step``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rectool.errors import UserError
from rectool.retrieval.classical import CLASSICAL
from rectool.yamlconfig import read_yaml_file, validate_file

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


class TuneSpec(_Frozen):
    metric: str = Field(default="recall@20", pattern=r"^(recall|ndcg|hit_rate)@[1-9][0-9]*$")
    sampler: Sampler = "tpe"
    trials: int = Field(default=40, ge=1)
    budget_minutes: float = Field(default=30.0, gt=0)
    patience: int = Field(default=0, ge=0)
    seed: int = 7
    methods: dict[TunableMethod, dict[str, Domain]] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_parameters(self) -> TuneSpec:
        for method, space in self.methods.items():
            fields = set(CLASSICAL[method].model_fields) - {"method"}
            for name, domain in space.items():
                if name not in fields:
                    raise ValueError(f"{method} has no parameter '{name}' (it has: {', '.join(sorted(fields))})")
                if isinstance(domain, list) and not domain:
                    raise ValueError(f"{method}.{name}: an empty list; give at least one value")
                if self.sampler == "grid" and isinstance(domain, Range) and domain.step is None:
                    raise ValueError(f"{method}.{name}: the grid sampler needs a list or a range with a step")
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
    return validate_file(path, raw, TuneSpec)
