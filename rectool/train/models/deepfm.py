"""DeepFM (Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017).

logit = first order (1-dim weights of the ``wide`` group, default: the ``fm`` group)
        + FM second order over the ``fm`` group's embeddings (default: ``deep``; one dim for all)
        + MLP(concat of the ``deep`` group's embeddings and dense values)
"""

from __future__ import annotations

import torch
from torch import nn

from rectool.errors import UserError
from rectool.train.models.base import MLP, RankingModel


class DeepFM(RankingModel):
    wide_groups = ("wide",)

    def __init__(self, cfg, spec, stats=None, sparse=True, extras=None) -> None:
        groups = dict(cfg.feature_groups)
        if "deep" not in groups:
            raise UserError("model deepfm needs a feature group named 'deep'")
        groups.setdefault("fm", groups["deep"])
        groups.setdefault("wide", groups["fm"])
        cfg = cfg.model_copy(update={"feature_groups": groups})
        super().__init__(cfg, spec, stats, sparse, extras)
        self.fm_group = "fm"
        self.dense_linear = nn.Linear(self.engine.dense_width("deep"), 1) if self.engine.dense_width("deep") else None
        self.mlp = MLP(self.engine.flat_width("deep"), cfg.model.deep)
        self.head = nn.Linear(self.mlp.out_features, self.num_class)

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.engine.prepare(x)
        fm_in = self.engine.group("fm", p)
        if fm_in.stacked is None:
            raise UserError("deepfm: the 'fm' group needs embedding features of one embedding_dim")
        e = fm_in.stacked                                              # [B, F, D]
        s = e.sum(1)
        second = 0.5 * (s * s - (e * e).sum(1)).sum(1, keepdim=True)  # Σ_{i<j} <e_i, e_j>
        deep_in = fm_in if self.engine.groups["deep"] == self.engine.groups["fm"] else self.engine.group("deep", p)
        out = self.engine.wide("wide", p) + second
        if self.dense_linear is not None and deep_in.dense is not None:
            out = out + self.dense_linear(deep_in.dense)
        return self.head(self.mlp(deep_in.flat)) + out
