"""What the retrieval models share: towers, history pooling, and sampled softmax with log-Q.

Loss (Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys 2019): for user vectors u [B, D] and target item vectors
v [B, D], the logits are u·vᵀ/τ over the batch's targets (in-batch negatives) and,
optionally, over M extra items drawn uniformly or by popularity^α for the whole batch.
Each negative's logit has log(expected count) subtracted (log-Q correction: in-batch
items appear with their training frequency, sampled ones with the sampler's
probability), a batch item equal to the row's target is masked, and the loss is the
softmax cross-entropy of the target. That is ``model.loss.mode: listwise`` (the default); over
the same targets and negatives, ``pointwise`` is binary cross-entropy (target 1, each negative 0,
averaged over the pairs) and ``pairwise`` BPR (-log σ(s⁺ - s⁻), averaged over a row's negatives,
then over rows), both on the raw s = u·v/τ (log-Q corrects the softmax only).

With ``model.repeat`` (two-tower), a candidate found c times in the user's history sequence
gets ``bonus[min(c, max_count)] / τ`` on top of u·v/τ (learned, ``bonus[0] = 0``): the
repeat mode of RepeatNet (Ren et al., AAAI 2019) as one term, which a single user vector
cannot express (it ranks a handful of specific items, e.g. the user's cart, above the rest).
``retrieve`` adds the same bonus to the history items' scores (``rectool.retrieval.repeat``).
The bonus is fit on the training rows: where the towers memorise their training targets (many
epochs over a small log) it stays small, and ``retrieve --repeat-bonus`` tuned on validation
data is the better choice (on Taobao: learnt ~0, tuned 1.0; BENCHMARKS.md).

``gather_extras`` reads, once before training, the target items' frequencies and,
for sampled negatives, the item catalogue with the item tower's columns; both are
saved in checkpoints with the model.
"""

from __future__ import annotations

import abc
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn

from rectool.artifacts import open_dataset
from rectool.badinput import read_table, reading
from rectool.errors import UserError
from rectool.programs.inputs import LEN_SUFFIX, InputSpec, to_tensors
from rectool.programs.manifest import OutputKind, RepeatManifest
from rectool.tablefile import TableFile
from rectool.train.config import Config
from rectool.train.feature_config import SequenceFeature
from rectool.train.features import Prepared
from rectool.train.model_config import MLPConfig, TowerConfig
from rectool.train.models.base import MLP, ExportPart, Model


class Tower(nn.Module):
    """MLP (possibly empty) then a linear map to the output dim."""

    def __init__(self, in_features: int, cfg: TowerConfig, out_dim: int) -> None:
        super().__init__()
        self.mlp = MLP(in_features, MLPConfig(hidden_units=cfg.hidden_units, dropout=cfg.dropout,
                                             batch_norm=cfg.batch_norm, activation=cfg.activation)) \
            if cfg.hidden_units else nn.Identity()
        width = self.mlp.out_features if cfg.hidden_units else in_features
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(x))


class AttentionPooling(nn.Module):
    """Pool a masked sequence [B, L, D] with learned attention: α = softmax(wᵀ tanh(W e_t))."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.score(torch.tanh(self.proj(emb))).squeeze(-1).masked_fill(~mask, -1e9)
        w = torch.softmax(w, dim=1) * mask.to(emb.dtype)
        return torch.bmm(w.unsqueeze(1), emb).squeeze(1)


def item_frequencies(files: list[str], column: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of ``column`` over the files (parquet or ORC) and their counts, read one
    row group / stripe at a time."""
    ids, counts = [], []
    for f in files:
        with reading(("data.train_input", [f])):
            table = TableFile(f)
            if column not in table.schema.names:
                raise UserError(f"model.item_id: column '{column}' is not in {f}")
            for piece in range(len(table.piece_rows)):
                vc = pc.value_counts(table.read_piece(piece, [column]).column(column).combine_chunks())
                ids.append(vc.field("values").to_numpy(zero_copy_only=False).astype(np.int64))
                counts.append(vc.field("counts").to_numpy(zero_copy_only=False).astype(np.int64))
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    all_ids, all_counts = np.concatenate(ids), np.concatenate(counts)
    uniq, inverse = np.unique(all_ids, return_inverse=True)
    return uniq, np.bincount(inverse, weights=all_counts).astype(np.int64)


class RetrievalModel(Model):
    """User tower and item tower trained with sampled softmax; subclasses define ``user_vectors``."""

    def __init__(self, cfg: Config, spec: InputSpec, stats: dict | None = None, sparse: bool = True,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(cfg, spec, stats, sparse, extras)
        m = cfg.model
        for g in (m.user_group, m.item_group):
            if g not in cfg.feature_groups:
                raise UserError(f"model {m.type}: needs a feature group named '{g}' (see model.user_group / "
                                "model.item_group)")
        self.mcfg = m
        self.repeat = getattr(m, "repeat", None)
        if self.repeat is not None:
            hist = {f.name: f for f in cfg.features}.get(self.repeat.history)
            if not isinstance(hist, SequenceFeature) or self.repeat.history not in cfg.feature_groups[m.user_group]:
                raise UserError(f"model.repeat.history '{self.repeat.history}': name a sequence feature of the "
                                f"'{m.user_group}' feature group (the user's item ids)")
            self.repeat_column = hist.input or hist.name
            # on the u·v scale (divided by the temperature in the logits), so Adam's steps move it at the same pace
            self.repeat_bonus = nn.Parameter(torch.zeros(self.repeat.max_count))
        self.item_tower = Tower(self.engine.flat_width(m.item_group), m.item_tower, m.output_dim)
        self.user_columns = self.engine.columns((m.user_group,))
        self.item_columns = self.engine.columns((m.item_group,))
        extras = extras or {}
        self.register_buffer("freq_ids", torch.from_numpy(extras.get("freq_ids", np.zeros(1, np.int64))))
        counts = extras.get("freq_counts", np.ones(1, np.int64)).astype(np.float64)
        self.register_buffer("freq_logp", torch.from_numpy(np.log(counts / counts.sum())).float())
        neg = m.loss.negatives
        self.n_neg = neg.count if neg.sampler != "none" else 0
        self.neg_columns = [c for c in self.item_columns]
        for c in self.neg_columns:
            self.register_buffer(f"neg_{c}", torch.from_numpy(extras.get(f"neg_{c}", np.zeros(1, np.int64))))
        weight = extras.get("neg_weight", np.ones(1))
        self.register_buffer("neg_cdf", torch.from_numpy(np.cumsum(weight / weight.sum())).double())
        self.register_buffer("neg_logq", torch.from_numpy(np.log(weight / weight.sum())).float())

    # -- data-dependent arrays ------------------------------------------------------------------

    @staticmethod
    def gather_extras(cfg: Config, files: list[str]) -> dict[str, np.ndarray]:
        m = cfg.model
        ids, counts = item_frequencies(files, m.item_id)
        extras = {"freq_ids": ids, "freq_counts": counts}
        neg = m.loss.negatives
        if neg.sampler != "none" and neg.count > 0:
            path = neg.items or str(Path(cfg.data.train_input).parent / "items")
            table = read_table(open_dataset(path, "model.loss.negatives.items"), f"model.loss.negatives.items {path}")
            groups = {n: f for f in cfg.features for n in [f.name]}
            needed = []
            for n in cfg.feature_groups[m.item_group]:
                f = groups[n]
                needed += list(getattr(f, "inputs", None) or [getattr(f, "input", None) or f.name])
            missing = [c for c in needed if c not in table.column_names]
            if missing:
                raise UserError(f"model.loss.negatives.items {path}: missing column(s) {', '.join(missing)} "
                                "that the item tower reads")
            for c in dict.fromkeys(needed):
                extras[f"neg_{c}"] = table.column(c).combine_chunks().fill_null(0).to_numpy(
                    zero_copy_only=False).astype(np.int64)
            item_ids = table.column(m.item_id).to_numpy(zero_copy_only=False).astype(np.int64)
            pos = np.clip(np.searchsorted(ids, item_ids), 0, len(ids) - 1)
            freq = np.where(ids[pos] == item_ids, counts[pos], 0).astype(np.float64)
            extras["neg_weight"] = np.ones(len(item_ids)) if neg.sampler == "uniform" else (freq + 1.0) ** neg.alpha
        return extras

    # -- towers -------------------------------------------------------------------------------

    def item_vectors(self, p: Prepared) -> torch.Tensor:
        v = self.item_tower(self.engine.group(self.mcfg.item_group, p).flat)
        return F.normalize(v, dim=-1) if self.mcfg.l2_normalize else v

    @abc.abstractmethod
    def user_vectors(self, p: Prepared) -> torch.Tensor:
        """[B, D] (or [B, K, D] for multi-interest models) user vectors."""

    def _negatives(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vectors [M, D], item ids [M], log q [M]) of M sampled items."""
        r = torch.rand(self.n_neg, dtype=torch.float64, device=device)
        idx = torch.searchsorted(self.neg_cdf, r).clamp(max=self.neg_cdf.numel() - 1)
        cols = {c: getattr(self, f"neg_{c}")[idx] for c in self.neg_columns}
        p = self.engine.prepare(cols, groups=(self.mcfg.item_group,))
        return self.item_vectors(p), cols[self.mcfg.item_id], self.neg_logq[idx] + math.log(self.n_neg)

    def _log_freq(self, item_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(self.freq_ids, item_ids.contiguous()).clamp(max=self.freq_ids.numel() - 1)
        hit = self.freq_ids[pos] == item_ids
        return torch.where(hit, self.freq_logp[pos], self.freq_logp.min())

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        p = self.engine.prepare(batch)
        return {"user": self.user_vectors(p), "item": self.item_vectors(p)}

    # -- the repeat term ---------------------------------------------------------------------

    def _history_counts(self, batch: dict[str, torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
        """[B, N]: how often each candidate id occurs in row b's history (binary search in the sorted
        rows: B·N·log L work instead of a [B, L, N] comparison)."""
        hist = batch[self.repeat_column]
        valid = torch.arange(hist.shape[1], device=hist.device) < batch[self.repeat_column + LEN_SUFFIX].unsqueeze(1)
        rows = hist.masked_fill(~valid, torch.iinfo(hist.dtype).max).sort(dim=1).values  # padding sorts last
        cand = candidates.view(1, -1).expand(hist.shape[0], -1).contiguous()
        counts = torch.searchsorted(rows, cand, right=True) - torch.searchsorted(rows, cand)
        return counts.masked_fill(cand == torch.iinfo(hist.dtype).max, 0)

    def _bonus(self, counts: torch.Tensor) -> torch.Tensor:
        bonus = torch.cat([self.repeat_bonus.new_zeros(1), self.repeat_bonus])
        return bonus[counts.clamp(max=self.repeat.max_count)]

    def repeat_scores(self, batch: dict[str, torch.Tensor], candidates: torch.Tensor) -> torch.Tensor | None:
        """[B, N] bonus of each candidate id by its count in row b's history (None without ``model.repeat``)."""
        return None if self.repeat is None else self._bonus(self._history_counts(batch, candidates))

    def pair_user(self, user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The user vector that meets these items [B, D] (multi-interest models pick per item)."""
        return user

    def logits(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
               sample: bool = True) -> torch.Tensor:
        """[B, B (+ M)] corrected logits; the target of row i is column i."""
        return self.scores(out, batch, sample, self.mcfg.loss.log_q)[0]

    def scores(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], sample: bool = True,
               log_q: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, B (+ M)] logits, the same-shaped mask of the entries that are not row i's negatives, the
        target's column i included); masked entries are -1e9. ``log_q``: corrected (the listwise logits)."""
        loss_cfg = self.mcfg.loss
        v = out["item"]
        u = self.pair_user(out["user"], v)
        ids = batch[self.mcfg.item_id]
        b = u.shape[0]
        parts, masks = [], []
        eye = torch.eye(b, dtype=torch.bool, device=ids.device)
        repeat = self.repeat_scores(batch, ids)
        if loss_cfg.in_batch or not sample:
            logits = (u @ v.t() + (0 if repeat is None else repeat)) / loss_cfg.temperature
            if log_q:
                logits = logits - (self._log_freq(ids) + math.log(b)).unsqueeze(0)
            same = (ids.unsqueeze(1) == ids.unsqueeze(0)) & ~eye
            parts.append(logits.masked_fill(same, -1e9))
            masks.append(same | eye)
        else:  # the target's own logit, then only sampled negatives
            own = ((u * v).sum(-1) + (0 if repeat is None else repeat.diagonal())) / loss_cfg.temperature
            parts.append(torch.full((b, b), -1e9, device=u.device).diagonal_scatter(own))
            masks.append(torch.ones_like(eye))
        if sample and self.n_neg:
            nv, nids, logq = self._negatives(u.device)
            repeat = self.repeat_scores(batch, nids)
            logits = (u @ nv.t() + (0 if repeat is None else repeat)) / loss_cfg.temperature
            if log_q:
                logits = logits - logq.unsqueeze(0)
            same = nids.unsqueeze(0) == ids.unsqueeze(1)
            parts.append(logits.masked_fill(same, -1e9))
            masks.append(same)
        if len(parts) == 1:
            return parts[0], masks[0]
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mode = self.mcfg.loss.mode
        if mode == "listwise":
            logits = self.logits(out, batch)
            target = torch.arange(logits.shape[0], device=logits.device)
            return F.cross_entropy(logits, target)
        scores, not_negative = self.scores(out, batch)
        b = scores.shape[0]
        positive = scores.diagonal()  # [B]: row i's target is column i
        negative = ~not_negative
        if mode == "pointwise":  # BCE over every (row, target) and (row, negative) pair
            pairs = F.softplus(-positive).sum() + (F.softplus(scores) * negative).sum()
            return pairs / (b + negative.sum())
        # pairwise (BPR): -log σ(s⁺ - s⁻) = softplus(s⁻ - s⁺), a row's mean over its negatives
        per_row = (F.softplus(scores - positive.unsqueeze(1)) * negative).sum(1) / negative.sum(1).clamp(min=1)
        return per_row.mean()

    # -- evaluation and export ----------------------------------------------------------------

    @staticmethod
    def score_matrix(user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, N] scores: u·v, or for several interests per user the best interest's."""
        if user.dim() == 2:
            return user @ items.t()
        return torch.einsum("bkd,nd->bkn", user, items).amax(dim=1)

    def eval_step(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Rank of each row's target among the batch's items (raw scores, no correction, no label use)."""
        v = out["item"]
        scores = self.score_matrix(out["user"], v)
        ids = batch[self.mcfg.item_id]
        repeat = self.repeat_scores(batch, ids)
        if repeat is not None:
            scores = scores + repeat
        own = scores.diagonal().unsqueeze(1)
        same = ids.unsqueeze(1) == ids.unsqueeze(0)
        rank = ((scores > own) & ~same).sum(1)
        return {"rank": rank.cpu().numpy(), "batch": np.full(rank.shape[0], v.shape[0])}

    def eval_metrics(self, arrays: dict[str, np.ndarray], cfg: Config) -> dict[str, float]:
        rank = arrays["rank"]
        return {"inbatch_hit@1": float(np.mean(rank < 1)), "inbatch_hit@10": float(np.mean(rank < 10)),
                "inbatch_mrr": float(np.mean(1.0 / (rank + 1)))}

    def export_parts(self) -> list[ExportPart]:
        repeat = None if self.repeat is None else RepeatManifest(
            column=self.repeat_column, bonus=[0.0, *self.repeat_bonus.detach().cpu().tolist()])
        return [ExportPart("user_tower", UserTower(self), self.user_columns, self.user_kind, self.user_output(),
                           repeat=repeat),
                ExportPart("item_tower", ItemTower(self), self.item_columns, "vector",
                           f"item vectors [B, {self.mcfg.output_dim}]")]

    user_kind: OutputKind = "vector"  # one vector per user (mind: "interests")

    def user_output(self) -> str:
        return f"user vectors [B, {self.mcfg.output_dim}]"


class UserTower(nn.Module):
    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.user_vectors(self.model.engine.prepare(inputs, groups=(self.model.mcfg.user_group,)))


class ItemTower(nn.Module):
    def __init__(self, model: RetrievalModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.item_vectors(self.model.engine.prepare(inputs, groups=(self.model.mcfg.item_group,)))


def embed_table(program: nn.Module, spec: InputSpec, table: pa.Table, source: str) -> np.ndarray:
    """Run a tower program over an Arrow table (rows -> vectors)."""
    with torch.inference_mode():
        return program(to_tensors(table, spec, source=source, with_label=False)).float().cpu().numpy()
