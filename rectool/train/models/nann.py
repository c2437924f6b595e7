"""NANN (Chen et al., "Approximate Nearest Neighbor Search under Neural Similarity Metric for
Large-Scale Recommendation", CIKM 2022): the item scorer that ``hnsw`` searches.

The pair scorer of ``rectool.train.models.pair`` (user history + candidate -> logit), trained
with a sampled softmax over the target and ``negatives`` items drawn from the training targets'
frequencies, with log-Q correction, and optionally FGSM adversarial training: the candidate
embeddings are perturbed by ``adv_eps · sign(∇ loss)`` and ``adv_weight · KL(clean || perturbed)``
is added.

Inputs: the user's history and other user features, the target item id (``model.candidate``'s
column); ``gather_extras`` reads the targets' frequencies once before training (saved in
checkpoints). Outputs: the pair scorer's exports; eval metrics sampled_hit@1, sampled_hit@10
and sampled_mrr (the target's rank among the sampled negatives).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rectool.programs.inputs import InputSpec
from rectool.train.config import Config
from rectool.train.models.pair import PairModel, first_ranks
from rectool.train.models.retrieval import item_frequencies


class NANN(PairModel):
    @staticmethod
    def gather_extras(cfg: Config, files: list[str]) -> dict[str, np.ndarray]:
        col = next(f.input or f.name for f in cfg.features if f.name == cfg.model.candidate)
        ids, counts = item_frequencies(files, col)
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
        return {"rank": first_ranks(out["logits"].masked_fill(out["hits"], -1e9))}

    def eval_metrics(self, arrays: dict[str, np.ndarray], cfg: Config) -> dict[str, float]:
        rank = arrays["rank"]
        return {"sampled_hit@1": float(np.mean(rank < 1)), "sampled_hit@10": float(np.mean(rank < 10)),
                "sampled_mrr": float(np.mean(1.0 / (rank + 1)))}
