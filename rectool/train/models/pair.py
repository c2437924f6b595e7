"""What TDM's node scorer and NANN's item scorer share: a model that scores (user, candidate) pairs
with target attention (``rectool.train.models.tdm``, ``rectool.train.models.nann`` train it).

Inputs: the user's item history (a ``combiner: none`` sequence feature) and a candidate id
whose embedding (from the same table as the history's items) is the attention query;
optionally more user features (``user_group``). Per pair:

    keys = history embeddings [L, D], q = candidate embedding [D]
    attention: windows of the history (most recent first) pooled by DIN's activation unit
               (TorchEasyRec's MultiWindowDIN; one window over everything with ``windows: []``)
    score  = MLP([pooled windows, q, user features]) -> logit

Outputs (exports): ``scorer`` (user columns [B, ...] + a candidate matrix [B, T] -> scores [B, T]:
each user's history is embedded once for its T candidates, which is what beam searches and brute
force need) and ``item_embedding`` (the candidate column -> its embedding, for ``tree cluster`` /
``hnsw build``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rectool.errors import UserError
from rectool.programs.inputs import InputSpec
from rectool.train.config import Config
from rectool.train.feature_config import IdFeature, SequenceFeature
from rectool.train.features import Prepared
from rectool.train.models.base import MLP, ExportPart, Model
from rectool.train.models.din import TargetAttention


class WindowAttention(nn.Module):
    """DIN activation-unit pooling over consecutive windows of the history, most recent first.

    One set of attention weights per (query, position); each window sums its own positions.
    """

    def __init__(self, dim: int, windows: list[int], max_len: int, units: list[int]) -> None:
        super().__init__()
        self.attention = TargetAttention(dim, units, softmax=False)
        bounds, start = [], 0
        for w in windows or [max_len]:
            bounds.append((start, min(start + w, max_len)))
            start += w
            if start >= max_len:
                break
        self.bounds = bounds
        self.out_features = dim * len(bounds)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        """query [B, T, D]: T queries per user; keys [B, L, D], mask [B, L], lengths [B] -> [B, T, windows·D]."""
        b, t, _ = query.shape
        length, dim = keys.shape[1], keys.shape[2]
        w = self.attention.weights(query, keys, mask)                                              # [B, T, L]
        recency = lengths.unsqueeze(1) - 1 - torch.arange(length, device=keys.device).unsqueeze(0)   # 0 = newest
        windows = torch.stack([(recency >= a) & (recency < b) for a, b in self.bounds], dim=1)    # [B, W, L]
        weighted = (w.unsqueeze(2) * windows.to(w.dtype).unsqueeze(1)).reshape(b, t * len(self.bounds), length)
        return torch.bmm(weighted, keys).reshape(b, t, len(self.bounds) * dim)


class PairModel(Model):
    """User history + candidate -> logit; subclasses decide which candidates are trained on."""

    def __init__(self, cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        m = cfg.model
        feats = {f.name: f for f in cfg.features}
        cand, hist = feats.get(m.candidate), feats.get(m.history)
        if not isinstance(cand, IdFeature):
            raise UserError(f"model {m.type}: candidate '{m.candidate}' must be an id feature")
        if not isinstance(hist, SequenceFeature) or hist.combiner != "none":
            raise UserError(f"model {m.type}: history '{m.history}' must be a sequence feature with combiner: none")
        if (hist.embedding_name or hist.name) != (cand.embedding_name or cand.name):
            raise UserError(f"model {m.type}: history '{m.history}' and candidate '{m.candidate}' must share one "
                            "embedding table (set the same embedding_name)")
        if m.user_group is not None and m.user_group not in cfg.feature_groups:
            raise UserError(f"model {m.type}: user_group '{m.user_group}' is not in feature_groups")
        self.mcfg = m
        self.candidate_column = cand.input or cand.name
        dim = cand.embedding_dim
        windows = getattr(m, "windows", [])
        self.attention = WindowAttention(dim, windows, hist.max_len, m.attention_units)
        self.user_width = self.engine.flat_width(m.user_group) if m.user_group else 0
        self.mlp = MLP(self.attention.out_features + dim + self.user_width, m.deep)
        self.head = nn.Linear(self.mlp.out_features, 1)
        self.user_columns = self.engine.columns(groups=(m.user_group,) if m.user_group else (),
                                                features=(m.history,))

    def user_state(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-user tensors the pair scorer gathers: history embeddings, mask, lengths, user features."""
        groups = (self.mcfg.user_group,) if self.mcfg.user_group else ()
        p: Prepared = self.engine.prepare(x, groups=groups, features=(self.mcfg.history,))
        keys, mask = self.engine.sequence(self.mcfg.history, p)
        state = {"keys": keys, "mask": mask, "lengths": mask.sum(1)}
        if self.mcfg.user_group:
            state["user"] = self.engine.group(self.mcfg.user_group, p).flat
        return state

    def score_pairs(self, state: dict[str, torch.Tensor], candidates: torch.Tensor,
                    query: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T] of each state row's T candidate ids [B, T]; ``query`` [B, T, D] overrides their embeddings."""
        q = self.candidate_embedding(candidates) if query is None else query
        b, t, _ = q.shape
        pooled = self.attention(q, state["keys"], state["mask"], state["lengths"])
        parts = [pooled, q] + ([state["user"].unsqueeze(1).expand(-1, t, -1)] if "user" in state else [])
        return self.head(self.mlp(torch.cat(parts, dim=-1).reshape(b * t, -1))).reshape(b, t)

    def candidate_embedding(self, candidates: torch.Tensor) -> torch.Tensor:
        """[..., D] embeddings of candidate ids [...]: the attention query and the MLP's candidate input."""
        return self.engine.embed_ids(self.mcfg.candidate, candidates)

    def export_parts(self) -> list[ExportPart]:
        dim = self.engine.dim_of_table[self.engine.table_of[self.mcfg.candidate]]
        return [ExportPart("scorer", PairScorer(self), self.user_columns + [self.candidate_column], "pair_scores",
                           f"scores [B, T] of each row's user and its T candidates ({self.candidate_column} [B, T])",
                           candidate=self.candidate_column),
                ExportPart("item_embedding", CandidateEmbedding(self), [self.candidate_column], "vector",
                           f"embeddings [B, {dim}] of {self.candidate_column}")]


class PairScorer(nn.Module):
    """Served pair scorer: one row = one user (its columns) and T candidates ([B, T] ids) -> [B, T] logits."""

    def __init__(self, model: PairModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.score_pairs(self.model.user_state(inputs), inputs[self.model.candidate_column])


class CandidateEmbedding(nn.Module):
    def __init__(self, model: PairModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.candidate_embedding(inputs[self.model.candidate_column])


def first_ranks(scores: torch.Tensor) -> np.ndarray:
    """Rank of column 0 among each row's columns (0 = best; ties count against it)."""
    return (scores[:, 1:] >= scores[:, :1]).sum(1).cpu().numpy()
