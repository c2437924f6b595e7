"""Sequence encoders for the two-tower user tower: GRU4Rec and SASRec over the history, kept as a sequence.

Both read one history feature with ``combiner: none`` (``model.user_encoder.history``): its
embeddings [B, L, D], left-aligned and most recent last, with a [B, L] mask of the valid steps
(``FeatureEngine.group(...).sequences``), and return one state per user [B, H]: the output at the
last valid step, zeros for an empty history. The two-tower's user tower then maps it, with the
user group's other features, to ``output_dim``.

    history ids  [[5, 9, 2, 0, 0],      mask [[1, 1, 1, 0, 0],     state [[h(5, 9, 2)],
                  [7, 0, 0, 0, 0]]            [1, 0, 0, 0, 0]]            [h(7)]]

* ``GRU4RecEncoder`` (Hidasi et al., "Session-based Recommendations with Recurrent Neural
  Networks", ICLR 2016): a GRU over the steps; the state is the hidden state after the last valid
  step. The sequences are left-aligned, so the padding comes after it and never reaches it (no
  ``pack_padded_sequence``, which does not export: a gather of step ``length - 1``).
* ``SASRecEncoder`` (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018):
  ``blocks`` pre-norm causal self-attention blocks (attention, then a point-wise feed-forward
  layer, each with a residual and dropout) over e·√D + p, with learned position embeddings p
  counted back from the most recent step (position 0 = the last item: the paper's left padding,
  which puts the most recent item always at the same position); keys are masked to the valid
  steps and to the past, so the last valid step's output depends only on the valid items.

Both are plain tensor ops on static shapes [B, max_len, D], so they ``torch.export`` with a
dynamic batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rectool.errors import UserError
from rectool.train.model_config import GRU4RecEncoderConfig, SASRecEncoderConfig


def last_valid(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, H] states, [B, L] left-aligned mask -> [B, H]: the state at step ``length - 1``, zeros if empty.

    ``last_valid(tensor([[[1.], [2.], [3.]], [[4.], [5.], [6.]]]), tensor([[1, 1, 0], [0, 0, 0]]).bool())``
    -> ``tensor([[2.], [0.]])``
    """
    lengths = mask.sum(1)
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.shape[2])
    out = torch.gather(states, 1, index).squeeze(1)
    return out * (lengths > 0).unsqueeze(1).to(out.dtype)


class GRU4RecEncoder(nn.Module):
    """A GRU over the history embeddings; the user state is the hidden state after the last valid step."""

    def __init__(self, dim: int, max_len: int, cfg: GRU4RecEncoderConfig) -> None:
        super().__init__()
        self.out_dim = cfg.hidden_size or dim
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(dim, self.out_dim, num_layers=cfg.layers, batch_first=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(emb) * mask.unsqueeze(-1).to(emb.dtype)
        states, _ = self.gru(x)
        return last_valid(states, mask)


class SelfAttention(nn.Module):
    """Multi-head attention of each step over the allowed steps ([B, L, L] bool, True = may attend)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dim // self.heads)          # [B, heads, L, L]
        # a finite fill: a padding step with no allowed key gets uniform weights, not NaN (its output is unused)
        scores = scores.masked_fill(~allowed.unsqueeze(1), -1e9)
        w = self.dropout(torch.softmax(scores, dim=-1))
        return self.out((w @ v).transpose(1, 2).reshape(b, length, dim))


class SASRecBlock(nn.Module):
    """x + attention(LN(x)), then x + FFN(LN(x)); padding steps zeroed after each block."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), allowed))
        x = x + self.dropout(self.ffn(self.norm2(x)))
        return x * keep


class SASRecEncoder(nn.Module):
    """Causal self-attention blocks over the history; the user state is the output at the last valid step."""

    def __init__(self, dim: int, max_len: int, cfg: SASRecEncoderConfig) -> None:
        super().__init__()
        if dim % cfg.heads:
            raise UserError(f"model.user_encoder.heads {cfg.heads} must divide the history's embedding_dim {dim}")
        self.out_dim, self.max_len = dim, max_len
        self.positions = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(dim, cfg.heads, cfg.ffn_dim or dim, cfg.dropout)
                                    for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("causal", torch.ones(max_len, max_len).tril().bool(), persistent=False)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = emb.shape[1]
        lengths = mask.sum(1, keepdim=True)                                          # [B, 1]
        back = (lengths - 1 - torch.arange(length, device=emb.device).unsqueeze(0)).clamp(min=0)  # 0 = most recent
        keep = mask.unsqueeze(-1).to(emb.dtype)
        x = self.dropout(emb * math.sqrt(emb.shape[-1]) + self.positions(back)) * keep
        allowed = self.causal[:length, :length].unsqueeze(0) & mask.unsqueeze(1)     # [B, L(query), L(key)]
        for block in self.blocks:
            x = block(x, allowed, keep)
        return last_valid(self.norm(x), mask)


ENCODERS: dict[str, type[nn.Module]] = {"gru4rec": GRU4RecEncoder, "sasrec": SASRecEncoder}
