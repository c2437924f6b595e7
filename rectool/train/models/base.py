"""What every ranking model shares: the feature engine, an MLP block, the loss and the output.

A model maps the input tensors (see ``rectool.train.inputs``) to logits [B] (binary)
or [B, num_class]; ``loss`` is binary cross-entropy (or softmax cross-entropy), with
an optional per-sample weight; ``probabilities`` is what ``export`` serves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rectool.train.config import Config, MLPConfig
from rectool.train.features import FeatureEngine
from rectool.train.inputs import InputSpec


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


class RankingModel(nn.Module):
    """Base class: subclasses build their layers in ``__init__`` and implement ``logits``."""

    wide_groups: tuple[str, ...] = ()

    def __init__(self, cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True) -> None:
        super().__init__()
        self.num_class = cfg.model.num_class
        self.engine = FeatureEngine(cfg, spec, stats, wide_groups=self.wide_groups, sparse=sparse)

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError  # abstract: each model defines its own scoring

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

    def output_width(self) -> int:
        return self.num_class
