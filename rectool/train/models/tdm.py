"""TDM (Zhu et al., "Learning Tree-based Deep Model for Recommender Systems", KDD 2018).

The pair scorer of ``rectool.train.models.pair`` (user history + candidate -> logit), trained on
tree nodes drawn by ``rectool.tree.sampler.LayerSampler``: each target's ancestors are positives,
``layer_num_sample[l]`` other nodes of each level negatives; binary cross-entropy over all, or a
softmax per level. Non-leaf node ids (``max item id + code + 1``) go through the candidate
feature's id transform like item ids.

Inputs: the user's history and other user features, the target item id (``model.candidate``'s
column) and the tree (``model.tree``, read on first use; its ``node_feature/`` table at start
when ``model.node_features`` names attributes, added to each node's embedding:
``rectool.train.models.node_attributes``). Outputs: the pair scorer's exports;
eval metrics auc and logloss over all sampled nodes, and leaf_hit@1 (the target leaf scored
above the sampled leaves).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rectool.programs.inputs import InputSpec
from rectool.train.config import Config
from rectool.train.models.pair import PairModel, first_ranks


class TDM(PairModel):
    def __init__(self, cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        self._sampler = None
        self.node_attributes = None
        if self.mcfg.node_features:  # read now: the buffers must exist before a checkpoint loads into them
            from rectool.train.models.node_attributes import NodeAttributes, read_node_features

            dim = self.engine.dim_of_table[self.engine.table_of[self.mcfg.candidate]]
            self.node_attributes = NodeAttributes(read_node_features(self.mcfg.tree, self.mcfg.node_features), dim)

    @property
    def sampler(self):  # noqa: ANN201 (loaded on first use: exports and scoring need no tree)
        if self._sampler is None:
            from rectool.tree.sampler import LayerSampler
            from rectool.tree.structure import load_tree

            self._sampler = LayerSampler(load_tree(self.mcfg.tree), self.mcfg.layer_num_sample)
        return self._sampler

    def candidate_embedding(self, candidates: torch.Tensor) -> torch.Tensor:
        """The node's id embedding, plus its attributes (``model.node_features``) when the config names any."""
        embedded = super().candidate_embedding(candidates)
        return embedded if self.node_attributes is None else embedded + self.node_attributes(candidates)

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
                "leaf_rank": first_ranks(out["logits"][:, leaf])}

    def eval_metrics(self, arrays: dict[str, np.ndarray], cfg: Config) -> dict[str, float]:
        from rectool.train.metrics import compute

        return compute(["auc", "logloss"], arrays["score"], arrays["label"]) | {
            "leaf_hit@1": float(np.mean(arrays["leaf_rank"] < 1))}
