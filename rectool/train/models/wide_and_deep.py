"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016).

logit = Σ first-order weights of the ``wide`` group + linear(dense of ``wide``)
        + MLP(concat of the ``deep`` group's embeddings and dense values)
"""

from __future__ import annotations

import torch
from torch import nn

from rectool.train.models.base import MLP, RankingModel


class WideAndDeep(RankingModel):
    wide_groups = ("wide",)

    def __init__(self, cfg, spec, stats=None, sparse=True, extras=None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        width = self.engine.dense_width("wide")  # an id-only wide group has no dense part
        self.wide_dense = nn.Linear(width, self.num_class) if width else None
        self.mlp = MLP(self.engine.flat_width("deep"), cfg.model.deep)
        self.head = nn.Linear(self.mlp.out_features, self.num_class)

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.engine.prepare(x)
        wide = self.engine.wide("wide", p)
        dense = self.engine.dense("wide", p)
        if self.wide_dense is not None and dense is not None:
            wide = wide + self.wide_dense(dense)
        deep = self.head(self.mlp(self.engine.group("deep", p).flat))
        return deep + wide
