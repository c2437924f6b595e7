"""Models that score (user, candidate) pairs with target attention: TDM's node scorer and NANN's item scorer.

Both read the user's item history (a ``combiner: none`` sequence feature) and a candidate
id whose embedding (from the same table as the history's items) is the attention query;
optionally more user features (``user_group``). Per pair:

    keys = history embeddings [L, D], q = candidate embedding [D]
    attention: windows of the history (most recent first) pooled by DIN's activation unit
               (TorchEasyRec's MultiWindowDIN; one window over everything with ``windows: []``)
    score  = MLP([pooled windows, q, user features]) -> logit

``TDM`` (Zhu et al., "Learning Tree-based Deep Model for Recommender Systems", KDD 2018)
trains it on tree nodes drawn by ``rectool.tree.sampler.LayerSampler``: each target's
ancestors are positives, ``layer_num_sample[l]`` other nodes of each level negatives;
binary cross-entropy over all, or a softmax per level. Non-leaf node ids (``max item id +
code + 1``) go through the candidate feature's id transform like item ids.

``NANN`` (Chen et al., "Approximate Nearest Neighbor Search under Neural Similarity
Metric for Large-Scale Recommendation", CIKM 2022) trains it with a sampled softmax over
the target and ``negatives`` items drawn from the training targets' frequencies, with
log-Q correction, and optionally FGSM adversarial training: the candidate embeddings are
perturbed by ``adv_eps · sign(∇ loss)`` and ``adv_weight · KL(clean || perturbed)`` is added.

Exports: ``scorer`` (user columns [B, ...] + a candidate matrix [B, T] -> scores [B, T]: each
user's history is embedded once for its T candidates, which is what beam searches and brute
force need) and ``item_embedding`` (the candidate column -> its embedding, for ``tree cluster`` /
``hnsw build``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rectool.errors import UserError
from rectool.programs.inputs import InputSpec
from rectool.train.config import Config, IdFeature, SequenceFeature
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


class CandidateModel(Model):
    """User history + candidate -> logit; subclasses decide which candidates are trained on."""

    needs_label = False

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
        q = self.engine.embed_ids(self.mcfg.candidate, candidates) if query is None else query
        b, t, _ = q.shape
        pooled = self.attention(q, state["keys"], state["mask"], state["lengths"])
        parts = [pooled, q] + ([state["user"].unsqueeze(1).expand(-1, t, -1)] if "user" in state else [])
        return self.head(self.mlp(torch.cat(parts, dim=-1).reshape(b * t, -1))).reshape(b, t)

    def candidate_embedding(self, candidates: torch.Tensor) -> torch.Tensor:
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

    def __init__(self, model: CandidateModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.score_pairs(self.model.user_state(inputs), inputs[self.model.candidate_column])


class CandidateEmbedding(nn.Module):
    def __init__(self, model: CandidateModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.candidate_embedding(inputs[self.model.candidate_column])


def _ranks(scores: torch.Tensor) -> np.ndarray:
    """Rank of column 0 among each row's columns (0 = best; ties count against it)."""
    return (scores[:, 1:] >= scores[:, :1]).sum(1).cpu().numpy()


class TDM(CandidateModel):
    def __init__(self, cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        self._sampler = None

    @property
    def sampler(self):  # noqa: ANN201 (loaded on first use: exports and scoring need no tree)
        if self._sampler is None:
            from rectool.tree.sampler import LayerSampler
            from rectool.tree.structure import load_tree

            self._sampler = LayerSampler(load_tree(self.mcfg.tree), self.mcfg.layer_num_sample)
        return self._sampler

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = batch[self.candidate_column].cpu().numpy()
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # from torch's RNG: checkpointed, so resumable
        sample = self.sampler.sample(targets, np.random.default_rng(seed))
        device = batch[self.candidate_column].device
        logits = self.score_pairs(self.user_state(batch), torch.from_numpy(sample.node_ids).to(device))
        return {"logits": logits, "labels": torch.from_numpy(sample.labels).to(device),
                "levels": torch.from_numpy(sample.levels).to(device)}

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.mcfg.loss == "binary":
            return F.binary_cross_entropy_with_logits(out["logits"], out["labels"])
        # softmax over each level's positive (its first column) and negatives
        first = torch.zeros(out["logits"].shape[0], dtype=torch.long, device=out["logits"].device)
        losses = [F.cross_entropy(out["logits"][:, out["levels"] == level], first)
                  for level in torch.unique(out["levels"]).tolist()]
        return torch.stack(losses).mean()

    def eval_step(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        leaf = torch.nonzero(out["levels"] == out["levels"].max()).squeeze(1)
        return {"score": torch.sigmoid(out["logits"]).reshape(-1).float().cpu().numpy(),
                "label": out["labels"].reshape(-1).cpu().numpy(),
                "leaf_rank": _ranks(out["logits"][:, leaf])}

    def eval_metrics(self, arrays: dict[str, np.ndarray], cfg: Config) -> dict[str, float]:
        from rectool.train.metrics import compute

        return compute(["auc", "logloss"], arrays["score"], arrays["label"]) | {
            "leaf_hit@1": float(np.mean(arrays["leaf_rank"] < 1))}


class NANN(CandidateModel):
    @staticmethod
    def gather_extras(cfg: Config, files: list[str]) -> dict[str, np.ndarray]:
        from rectool.train.models.retrieval import _frequencies

        col = next(f.input or f.name for f in cfg.features if f.name == cfg.model.candidate)
        ids, counts = _frequencies(files, col)
        return {"freq_ids": ids, "freq_counts": counts}

    def __init__(self, cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        extras = extras or {}
        counts = extras.get("freq_counts", np.ones(1)).astype(np.float64)
        self.register_buffer("freq_ids", torch.from_numpy(extras.get("freq_ids", np.zeros(1, np.int64))))
        self.register_buffer("freq_cdf", torch.from_numpy(np.cumsum(counts / counts.sum())))
        self.register_buffer("freq_logq", torch.from_numpy(np.log(counts / counts.sum())).float())

    def _sample(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.rand(self.mcfg.negatives, dtype=torch.float64, device=device)
        idx = torch.searchsorted(self.freq_cdf, r).clamp(max=self.freq_cdf.numel() - 1)
        return self.freq_ids[idx], self.freq_logq[idx]

    def _logq(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(self.freq_ids, ids).clamp(max=self.freq_ids.numel() - 1)
        return torch.where(self.freq_ids[pos] == ids, self.freq_logq[pos], self.freq_logq.min())

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = batch[self.candidate_column]
        b, device = target.shape[0], target.device
        negatives, neg_logq = self._sample(device)
        cands = torch.cat([target.unsqueeze(1), negatives.unsqueeze(0).expand(b, -1)], dim=1)  # [B, 1 + M]
        query = self.candidate_embedding(cands)                                                  # [B, 1 + M, D]
        state = self.user_state(batch)
        logits = self.score_pairs(state, cands, query=query)
        logq = torch.cat([self._logq(target).unsqueeze(1), neg_logq.unsqueeze(0).expand(b, -1)], dim=1)
        logq = logq + float(np.log(self.mcfg.negatives))
        hits = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=device), cands[:, 1:] == target.unsqueeze(1)], 1)
        return {"logits": logits, "corrected": (logits - logq).masked_fill(hits, -1e9), "query": query,
                "cands": cands, "state": state, "logq": logq, "hits": hits}

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        target = torch.zeros(out["corrected"].shape[0], dtype=torch.long, device=out["corrected"].device)
        clean = F.cross_entropy(out["corrected"], target)
        if self.mcfg.adv_eps <= 0 or not self.training:
            return clean
        grad, = torch.autograd.grad(clean, out["query"], retain_graph=True)
        perturbed = (out["query"] + self.mcfg.adv_eps * grad.sign()).detach()
        adv = self.score_pairs(out["state"], out["cands"], query=perturbed)
        adv = (adv - out["logq"]).masked_fill(out["hits"], -1e9)
        kl = F.kl_div(F.log_softmax(adv, dim=1), F.log_softmax(out["corrected"], dim=1).detach(), log_target=True,
                      reduction="batchmean")
        return clean + self.mcfg.adv_weight * kl

    def eval_step(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {"rank": _ranks(out["logits"].masked_fill(out["hits"], -1e9))}

    def eval_metrics(self, arrays: dict[str, np.ndarray], cfg: Config) -> dict[str, float]:
        rank = arrays["rank"]
        return {"sampled_hit@1": float(np.mean(rank < 1)), "sampled_hit@10": float(np.mean(rank < 10)),
                "sampled_mrr": float(np.mean(1.0 / (rank + 1)))}
