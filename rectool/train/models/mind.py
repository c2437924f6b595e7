"""MIND (Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall", CIKM 2019).

The history's embeddings e_i, mapped by one shared bilinear S, are routed into K
interest capsules (behaviour-to-interest dynamic routing): routing logits b_ki start
from a fixed random matrix, w = softmax_k(b), z_k = Σ_i w_ki S e_i, u_k = squash(z_k),
b_ki += u_k · S e_i, for ``routing_iterations`` rounds; K_u = max(1, min(K, ⌊log2 n_u⌋))
capsules are used for a user with n_u behaviours. Each capsule, with the user's other
features, goes through a shared MLP to an interest vector.

Training pairs the target item v with a label-aware attention over the interests:
a = softmax_k(pow(u_k · v, p)), u = Σ a_k u_k, then sampled softmax as the two-tower
model. Serving returns all K interests [B, K, D]; retrieval takes the union of each
interest's neighbours (unused capsules repeat the first one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rectool.errors import UserError
from rectool.train.feature_config import SequenceFeature
from rectool.train.features import Prepared
from rectool.train.models.retrieval import RetrievalModel, Tower


def squash(z: torch.Tensor) -> torch.Tensor:
    """Capsule non-linearity: |z|²/(1+|z|²) · z/|z|."""
    sq = (z * z).sum(-1, keepdim=True)
    return sq / (1.0 + sq) * z / torch.sqrt(sq + 1e-9)


class MIND(RetrievalModel):
    def __init__(self, cfg, spec, stats=None, sparse=True, extras=None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        m = cfg.model
        feats = {f.name: f for f in cfg.features}
        hist = feats.get(m.history)
        if not isinstance(hist, SequenceFeature) or hist.combiner != "none" \
                or m.history not in cfg.feature_groups[m.user_group]:
            raise UserError(f"model mind: history '{m.history}' must be a sequence feature with combiner: none "
                            f"in the '{m.user_group}' group")
        self.k, self.iterations, self.pow_p = m.interests, m.routing_iterations, m.pow_p
        self.dynamic = m.dynamic_interests
        self.bilinear = nn.Linear(hist.embedding_dim, m.output_dim, bias=False)
        gen = torch.Generator().manual_seed(cfg.train.seed)
        self.register_buffer("routing_init", torch.randn(m.interests, hist.max_len, generator=gen))
        self.other_width = self.engine.flat_width(m.user_group)
        self.interest_mlp = Tower(m.output_dim + self.other_width, m.user_tower, m.output_dim)

    def user_vectors(self, p: Prepared) -> torch.Tensor:
        g = self.engine.group(self.mcfg.user_group, p)
        emb, mask = g.sequences[self.mcfg.history]
        e = self.bilinear(emb)                                     # [B, L, D]
        b = self.routing_init.unsqueeze(0).expand(e.shape[0], -1, -1)
        valid = mask.unsqueeze(1).to(e.dtype)                      # [B, 1, L]
        e_fixed = e.detach()
        u = e.new_zeros(e.shape[0], self.k, e.shape[2])
        for it in range(self.iterations):
            w = torch.softmax(b, dim=1) * valid                    # each behaviour shares itself over interests
            last = it == self.iterations - 1
            u = squash(torch.bmm(w, e if last else e_fixed))      # [B, K, D]
            if not last:
                b = b + torch.bmm(u, e_fixed.transpose(1, 2))
        n = mask.sum(1).clamp(min=1)
        k_u = torch.clamp(torch.floor(torch.log2(n.to(e.dtype))), min=1, max=self.k) if self.dynamic \
            else torch.full_like(n, self.k, dtype=e.dtype)
        used = torch.arange(self.k, device=e.device).unsqueeze(0) < k_u.unsqueeze(1)
        u = torch.where(used.unsqueeze(-1), u, u[:, :1].expand_as(u))
        if self.other_width:
            u = torch.cat([u, g.flat.unsqueeze(1).expand(-1, self.k, -1)], dim=-1)
        out = self.interest_mlp(u)
        return F.normalize(out, dim=-1) if self.mcfg.l2_normalize else out

    def pair_user(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        s = (user * items.unsqueeze(1)).sum(-1)                    # [B, K]
        a = torch.softmax(torch.sign(s) * s.abs().pow(self.pow_p), dim=1)
        return (a.unsqueeze(-1) * user).sum(1)

    user_kind = "interests"

    def user_output(self) -> str:
        return f"interest vectors [B, {self.k}, {self.mcfg.output_dim}]"
