"""Two-tower retrieval: DSSM (Huang et al., CIKM 2013) / YouTube-DNN (Covington et al., RecSys 2016).

User tower: MLP over the ``user`` group (user features, pooled histories; sequences
with combiner ``none`` are pooled here, by mean or learned attention, after dropping each
item with probability ``history_dropout`` while training) -> D; or, with ``model.user_encoder``
of type ``gru4rec`` / ``sasrec``, one history read as a sequence (``rectool.train.models.encoders``:
the state at its last valid step) beside the other user features -> D.
Item tower: MLP (or none, as in YouTube-DNN) over the ``item`` group -> D.
Optionally L2-normalised; trained with sampled softmax (in-batch negatives, log-Q
correction, extra uniform/popularity negatives: ``rectool.train.models.retrieval``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rectool.errors import UserError
from rectool.train.feature_config import SequenceFeature
from rectool.train.features import Prepared
from rectool.train.models.encoders import ENCODERS
from rectool.train.models.retrieval import AttentionPooling, RetrievalModel, Tower


class TwoTower(RetrievalModel):
    def __init__(self, cfg, spec, stats=None, sparse=True, extras=None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        m = cfg.model
        feats = {f.name: f for f in cfg.features}
        enc = m.user_encoder
        self.encoded = None if enc.type == "pooling" else enc.history
        if self.encoded is not None:
            hist = feats.get(self.encoded)
            if not isinstance(hist, SequenceFeature) or hist.combiner != "none" \
                    or self.encoded not in cfg.feature_groups[m.user_group]:
                raise UserError(f"model.user_encoder.history '{self.encoded}': name a sequence feature with "
                                f"combiner: none in the '{m.user_group}' feature group")
        self.raw_sequences = [n for n in cfg.feature_groups[m.user_group] if n != self.encoded
                              and isinstance(feats[n], SequenceFeature) and feats[n].combiner == "none"]
        self.pools = nn.ModuleDict({n: AttentionPooling(feats[n].embedding_dim) for n in self.raw_sequences}) \
            if m.history_pooling == "attention" else nn.ModuleDict()
        width = self.engine.flat_width(m.user_group) + sum(feats[n].embedding_dim for n in self.raw_sequences)
        if self.encoded is not None:
            self.encoder = ENCODERS[enc.type](hist.embedding_dim, hist.max_len, enc)
            width += self.encoder.out_dim
        self.user_tower = Tower(width, m.user_tower, m.output_dim)

    def user_vectors(self, p: Prepared) -> torch.Tensor:
        g = self.engine.group(self.mcfg.user_group, p)
        parts = [g.flat]
        for n in self.raw_sequences:
            emb, mask = g.sequences[n]
            if self.training and self.mcfg.history_dropout > 0:  # each step sees a random subset of the history
                mask = mask & (torch.rand(mask.shape, device=mask.device) >= self.mcfg.history_dropout)
            if n in self.pools:
                parts.append(self.pools[n](emb, mask))
            else:
                m = mask.unsqueeze(-1).to(emb.dtype)
                parts.append((emb * m).sum(1) / m.sum(1).clamp(min=1.0))
        if self.encoded is not None:  # the whole sequence, not thinned by history_dropout
            parts.append(self.encoder(*g.sequences[self.encoded]))
        u = self.user_tower(torch.cat(parts, dim=1))
        return F.normalize(u, dim=-1) if self.mcfg.l2_normalize else u
