"""DCN-V2 (Wang et al., "DCN V2: Improved Deep & Cross Network ...", WWW 2021).

x0 = concat of the ``deep`` group; cross layers x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l
(W_l full rank, or U_l V_lᵀ with ``low_rank``); ``parallel``: [cross(x0), MLP(x0)] -> head,
``stacked``: MLP(cross(x0)) -> head.
"""

from __future__ import annotations

import torch
from torch import nn

from rectool.train.models.base import MLP, RankingModel


class CrossLayer(nn.Module):
    def __init__(self, width: int, low_rank: int | None) -> None:
        super().__init__()
        if low_rank is None:
            self.proj: nn.Module = nn.Linear(width, width)
        else:
            self.proj = nn.Sequential(nn.Linear(width, low_rank, bias=False), nn.Linear(low_rank, width))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.proj(x) + x


class DCNv2(RankingModel):
    def __init__(self, cfg, spec, stats=None, sparse=True, extras=None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        width = self.engine.flat_width("deep")
        self.cross = nn.ModuleList(CrossLayer(width, cfg.model.low_rank) for _ in range(cfg.model.cross_layers))
        self.structure = cfg.model.structure
        self.mlp = MLP(width, cfg.model.deep)
        head_in = self.mlp.out_features + (width if self.structure == "parallel" else 0)
        self.head = nn.Linear(head_in, self.num_class)

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.engine.prepare(x)
        x0 = self.engine.group("deep", p).flat
        xc = x0
        for layer in self.cross:
            xc = layer(x0, xc)
        if self.structure == "stacked":
            return self.head(self.mlp(xc))
        return self.head(torch.cat([xc, self.mlp(x0)], dim=1))
