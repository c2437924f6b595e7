"""DNN: a plain multi-layer perceptron over the ``deep`` group (DeepCTR's ``DNN``; the deep part of
Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016, as a ranker).

logit = head(MLP(concat of the ``deep`` group's embeddings and dense values)): [B] (binary) or
[B, num_class]. No wide, FM or cross terms: the baseline the other ranking models add to.

    model: {type: dnn, deep: {hidden_units: [256, 128], dropout: 0.1}}
"""

from __future__ import annotations

import torch
from torch import nn

from rectool.train.models.base import MLP, RankingModel


class DNN(RankingModel):
    def __init__(self, cfg, spec, stats=None, sparse=True, extras=None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        self.mlp = MLP(self.engine.flat_width("deep"), cfg.model.deep)
        self.head = nn.Linear(self.mlp.out_features, self.num_class)

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.engine.prepare(x)
        return self.head(self.mlp(self.engine.group("deep", p).flat))
