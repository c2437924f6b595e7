"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018).

For each behaviour sequence named in ``model.query`` (combiner ``none``), the candidate's
embedding q attends over the sequence keys k_t with an MLP on [q, k_t, q − k_t, q ⊙ k_t];
the weights (unnormalised as in the paper, or softmax) pool the sequence. The pooled
interests are concatenated with the ``deep`` group and fed to the MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from rectool.errors import UserError
from rectool.train.feature_config import SequenceFeature
from rectool.train.model_config import MLPConfig
from rectool.train.models.base import MLP, RankingModel


class TargetAttention(nn.Module):
    """DIN's activation unit: weight_t = MLP([q, k_t, q − k_t, q ⊙ k_t]) for keys k_t, query q.

    The first layer is applied to the four blocks separately, which is the same map:
    W[q; k; q−k; q⊙k] = (W_q + W_d) q + (W_k − W_d) k + W_p (q ⊙ k). The q-part is computed
    once per query, the k-part once per user, and W_p (q ⊙ k) = (diag(q) W_pᵀ)ᵀ k as one
    [L, D] × [D, T·H] product per user, so a user's T queries (TDM's sampled nodes, NANN's
    negatives) never copy its keys into a [T, L, D] tensor.
    """

    def __init__(self, dim: int, units: list[int], softmax: bool) -> None:
        super().__init__()
        self.dim = dim
        self.first = nn.Linear(4 * dim, units[0])
        self.act = nn.PReLU(units[0])
        self.rest = MLP(units[0], MLPConfig(hidden_units=units[1:], batch_norm=False, activation="prelu")) \
            if len(units) > 1 else nn.Identity()
        self.score = nn.Linear(units[-1], 1)
        self.softmax = softmax

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, L] weights of T queries per user ([B, T, D]) over that user's keys [B, L, D] (mask [B, L])."""
        b, t, d = query.shape
        length = keys.shape[1]
        wq, wk, wd, wp = self.first.weight.split(self.dim, dim=1)
        units = wq.shape[0]
        q_part = query @ (wq + wd).t() + self.first.bias                               # [B, T, H]
        k_part = keys @ (wk - wd).t()                                                   # [B, L, H]
        per_query = (query.unsqueeze(-1) * wp.t()).transpose(1, 2).reshape(b, d, t * units)   # [B, D, T·H]
        cross = torch.bmm(keys, per_query).reshape(b, length, t, units).transpose(1, 2)        # [B, T, L, H]
        h = self.rest(self.act((cross + q_part.unsqueeze(2) + k_part.unsqueeze(1)).reshape(-1, units)))
        w = self.score(h).reshape(b, t, length)
        m = mask.unsqueeze(1)
        if self.softmax:
            w = torch.softmax(w.masked_fill(~m, -1e9), dim=-1)
        return w * m.to(w.dtype)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention-pooled keys [B, D] for one query [B, D] per user."""
        return torch.bmm(self.weights(query.unsqueeze(1), keys, mask), keys).squeeze(1)


class DIN(RankingModel):
    def __init__(self, cfg, spec, stats=None, sparse=True, extras=None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        self.pairs = list(cfg.model.query.items())
        if not self.pairs:
            raise UserError("model din: model.query must map at least one sequence feature to a candidate feature")
        feats = {f.name: f for f in cfg.features}
        self.attention = nn.ModuleDict()
        width = self.engine.flat_width("deep") if "deep" in cfg.feature_groups else 0
        for seq, query in self.pairs:
            f = feats.get(seq)
            if not isinstance(f, SequenceFeature) or f.combiner != "none":
                raise UserError(f"model din: query key '{seq}' must be a sequence feature with combiner: none")
            if query not in feats or getattr(feats[query], "embedding_dim", None) != f.embedding_dim:
                raise UserError(f"model din: query '{query}' of '{seq}' must be a feature with embedding_dim "
                                f"{f.embedding_dim}")
            self.attention[seq] = TargetAttention(f.embedding_dim, cfg.model.attention_units,
                                                  cfg.model.attention_softmax)
            width += f.embedding_dim
        self.has_deep = "deep" in cfg.feature_groups
        self.mlp = MLP(width, cfg.model.deep)
        self.head = nn.Linear(self.mlp.out_features, self.num_class)

    def logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.engine.prepare(x)
        parts = [self.engine.group("deep", p).flat] if self.has_deep else []
        for seq, query in self.pairs:
            keys, mask = self.engine.sequence(seq, p)
            parts.append(self.attention[seq](self.engine.embed(query, p), keys, mask))
        return self.head(self.mlp(torch.cat(parts, dim=1)))
