"""What every model shares: the feature engine, an MLP block, and the interface the trainer uses.

``Model`` is the contract (loss, evaluation, the programs to export). ``RankingModel``
maps the input tensors (see ``rectool.programs.inputs``) to logits [B] (binary) or
[B, num_class]; its loss is binary cross-entropy (or softmax cross-entropy) with an
optional per-sample weight, and it exports one program returning probabilities.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rectool.programs.inputs import InputSpec
from rectool.programs.manifest import OutputKind, RepeatManifest
from rectool.train.config import Config
from rectool.train.features import FeatureEngine
from rectool.train.model_config import MLPConfig


class Dice(nn.Module):
    """Data-adaptive activation of DIN (Zhou et al., 2018): p(x)·x + (1 − p(x))·α·x, p = σ(BN(x))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(width, affine=False)
        self.alpha = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.bn(x))
        return p * x + (1 - p) * self.alpha * x


def _activation(name: str, width: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "prelu":
        return nn.PReLU(width)
    return Dice(width)


class MLP(nn.Sequential):
    """Linear -> [BatchNorm] -> activation -> [Dropout], per hidden layer."""

    def __init__(self, in_features: int, cfg: MLPConfig) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for units in cfg.hidden_units:
            layers.append(nn.Linear(width, units))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(_activation(cfg.activation, units))
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = units
        super().__init__(*layers)
        self.out_features = width


@dataclass(frozen=True)
class ExportPart:
    """One program that ``export`` writes: a module over some input columns."""

    name: str                 # file stem: model.pt2, user_tower.pt2, item_tower.pt2, scorer.pt2, ...
    module: nn.Module         # forward(inputs: dict[str, Tensor]) -> Tensor
    columns: list[str]        # the input columns (of the training spec) it reads
    kind: OutputKind          # what it returns (the manifest's contract with the readers)
    output: str               # the same in words, with shapes
    candidate: str | None = None  # pair scorers: the column of the candidate ids, a [B, T] matrix
    repeat: RepeatManifest | None = None  # two-tower with model.repeat: the history column and learned bonus


class Model(nn.Module, abc.ABC):
    """What the trainer, ``export`` and ``predict`` need from any model.

    ``forward(batch)`` returns whatever ``loss`` and ``eval_step`` consume; ``gather_extras``
    computes data-dependent arrays once before training (item frequencies, a catalogue),
    which are saved in checkpoints so that an export can rebuild the model without data.
    """

    wide_groups: tuple[str, ...] = ()

    def __init__(self, cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.engine = FeatureEngine(cfg, spec, stats, wide_groups=self.wide_groups, sparse=sparse)

    @staticmethod
    def gather_extras(cfg: Config, files: list[str]) -> dict[str, np.ndarray]:
        return {}

    @abc.abstractmethod
    def loss(self, out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training objective of one batch."""

    @abc.abstractmethod
    def eval_step(self, out: Any, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Per-row arrays to gather from every rank for ``eval_metrics``."""

    @abc.abstractmethod
    def eval_metrics(self, arrays: dict[str, np.ndarray], cfg: Config) -> dict[str, float]:
        """Metrics over the gathered arrays of the whole eval set."""

    @abc.abstractmethod
    def export_parts(self) -> list[ExportPart]:
        """The programs ``export`` writes."""


class RankingModel(Model):
    """Scores (user, item) rows: logits [B] (binary) or [B, num_class]; subclasses implement ``logits``."""

    def __init__(self, cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        self.num_class = cfg.model.num_class
        self.gauc_key = "key:" + cfg.eval.gauc_key
        self.input_columns = spec.names

    @abc.abstractmethod
    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unnormalised scores of a batch."""

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.logits(x)
        return out.squeeze(-1) if self.num_class == 1 else out

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        weight = batch.get("weight")
        if self.num_class == 1:
            loss = F.binary_cross_entropy_with_logits(logits, batch["label"], reduction="none")
        else:
            loss = F.cross_entropy(logits, batch["label"], reduction="none")
        if weight is not None:
            return (loss * weight).sum() / weight.sum().clamp(min=1e-12)
        return loss.mean()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.num_class == 1 else torch.softmax(logits, dim=-1)

    def eval_step(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        arrays = {"score": self.probabilities(out).float().cpu().numpy(), "label": batch["label"].cpu().numpy()}
        if self.gauc_key in batch:
            arrays["key"] = batch[self.gauc_key].cpu().numpy()
        return arrays

    def eval_metrics(self, arrays: dict[str, np.ndarray], cfg: Config) -> dict[str, float]:
        from rectool.train.metrics import compute

        return compute(cfg.eval.metrics, arrays["score"], arrays["label"], arrays.get("key"), self.num_class)

    def export_parts(self) -> list[ExportPart]:
        return [ExportPart("model", Scorer(self), self.input_columns, "probabilities",
                           "probabilities [B]" if self.num_class == 1 else f"probabilities [B, {self.num_class}]")]


class Scorer(nn.Module):
    """The served function of a ranking model: inputs -> probabilities."""

    def __init__(self, model: RankingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.probabilities(self.model(inputs))
