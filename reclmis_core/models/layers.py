"""Attention and feed-forward building blocks shared by CI, the reconstructors and the scratch text encoder.

Attention is written out (matmul + softmax) instead of calling ``scaled_dot_product_attention``: the sequences
are short (196 patches x ~20 tokens), the condition weights must act on the attention map, FLOP counters see
every multiply, and the ONNX export stays a plain graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conditioned_softmax(
    scores: Tensor,
    key_padding_mask: Tensor | None = None,
    key_weights: Tensor | None = None,
    mode: str = "reference",
    causal: bool = False,
) -> Tensor:
    """Attention probabilities over the last axis, with optional condition weights on the keys.

    Args:
        scores: ``(B, H, Lq, Lk)`` scaled dot products.
        key_padding_mask: ``(B, Lk)`` bool, True where the key is padding; padded keys get exactly 0.
        key_weights: ``(B, Lk)`` non-negative condition weights (W_woi or W_poi) or None.
        mode: ``reference`` multiplies the probabilities by the weights and renormalises (public code);
            ``literal`` multiplies the logits by the weights before the softmax (Eq. 7 and 9 as printed).
        causal: mask future keys (a quirk of the reference reconstructor, off by default).
    """
    neg = torch.finfo(scores.dtype).min
    if key_weights is not None and mode == "literal":
        scores = scores * key_weights[:, None, None, :]
    if causal:
        lq, lk = scores.shape[-2:]
        future = torch.ones(lq, lk, dtype=torch.bool, device=scores.device).triu(1)
        scores = scores.masked_fill(future, neg)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], neg)
    probs = scores.softmax(dim=-1)
    if key_weights is not None and mode == "reference":
        probs = probs * (key_weights[:, None, None, :] + 1e-10)
        if key_padding_mask is not None:
            probs = probs.masked_fill(key_padding_mask[:, None, None, :], 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


class Attention(nn.Module):
    """Multi-head attention (q from ``query``, k/v from ``context``), with padding and condition weights.

    Same parameters as ``nn.MultiheadAttention`` (4 d^2 + 4 d).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        context: Tensor,
        key_padding_mask: Tensor | None = None,
        key_weights: Tensor | None = None,
        mode: str = "reference",
        causal: bool = False,
    ) -> Tensor:
        b, lq, d = query.shape
        lk = context.shape[1]
        q = self.q(query).view(b, lq, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(context).view(b, lk, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        probs = conditioned_softmax(scores, key_padding_mask, key_weights, mode, causal)
        out = self.dropout(probs) @ v
        return self.out(out.transpose(1, 2).reshape(b, lq, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(x))))


def masked_softmax(logits: Tensor, valid: Tensor | None) -> Tensor:
    """Softmax over the last axis where invalid positions get exactly 0."""
    if valid is not None:
        logits = logits.masked_fill(~valid, torch.finfo(logits.dtype).min)
    probs = F.softmax(logits, dim=-1)
    if valid is not None:
        probs = probs * valid
    return probs
