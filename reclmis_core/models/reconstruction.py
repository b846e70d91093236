"""Conditioned reconstruction (CVR Sec. III-C, CLR Sec. III-D) and the token masking that feeds it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import Attention, FeedForward


def num_to_mask(n_valid: Tensor, ratio: float) -> Tensor:
    """round(ratio * n) per row, half away from zero, as an int tensor."""
    return torch.floor(n_valid.to(torch.float64) * ratio + 0.5).to(torch.long)


def select_masked(
    weights: Tensor,
    valid: Tensor,
    ratio: float,
    strategy: str = "dist",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Choose exactly round(ratio * n_valid) valid positions per row to mask; never a padded one.

    ``dist`` samples without replacement with probability proportional to ``weights`` (Gumbel-top-k,
    which is exactly sequential sampling without replacement); ``random`` samples uniformly; ``topk``
    takes the highest weights.

    Returns:
        bool ``(B, N)``, True where the position is masked.
    """
    weights = weights.detach().float()
    k = num_to_mask(valid.sum(dim=1), ratio)
    if strategy == "topk":
        keys = weights.clone()
    else:
        u = torch.rand(weights.shape, generator=generator, device=weights.device if generator is None else "cpu")
        u = u.to(weights.device).clamp_(1e-20, 1.0 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        if strategy == "dist":
            keys = torch.log(weights.clamp_min(1e-30)) + gumbel
        elif strategy == "random":
            keys = gumbel
        else:
            raise ValueError(f"unknown mask strategy {strategy}")
    keys = keys.masked_fill(~valid, float("-inf"))
    order = keys.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < k[:, None]) & valid


class ReconstructionLayer(nn.Module):
    """Post-norm transformer layer: self-attention, optional conditioned cross-attention, feed-forward."""

    def __init__(self, dim: int, heads: int, ffn_ratio: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads) if cross else None
        self.norm2 = nn.LayerNorm(dim) if cross else None
        self.ffn = FeedForward(dim, ffn_ratio * dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        pad: Tensor | None,
        self_weights: Tensor | None,
        context: Tensor | None = None,
        context_pad: Tensor | None = None,
        context_weights: Tensor | None = None,
        mode: str = "reference",
        causal: bool = False,
    ) -> Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, x, pad, self_weights, mode, causal)))
        if self.cross_attn is not None and context is not None:
            x = self.norm2(x + self.dropout(self.cross_attn(x, context, context_pad, context_weights, mode)))
        return self.norm3(x + self.dropout(self.ffn(x)))


class ConditionedReconstructor(nn.Module):
    """Psi(X_m, S, W_S): reconstruct masked features X_m from the other modality S under its weights W_S.

    As in the reference, two stacks: a context stack runs conditioned self-attention over S, then a
    decoder stack lets the masked query attend to itself and, conditioned by W_S, to the encoded S.
    The reference builds a never-used cross-attention in every context layer; it is left out here.
    With ``attention="self"`` (Table V) the query only attends to itself.
    """

    def __init__(
        self,
        dim: int,
        layers: int,
        heads: int,
        ffn_ratio: int,
        dropout: float,
        attention: str = "cross",
        mode: str = "reference",
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.attention = attention
        self.mode = mode
        self.causal = causal
        cross = attention == "cross"
        self.context = (
            nn.ModuleList([ReconstructionLayer(dim, heads, ffn_ratio, dropout, cross=False) for _ in range(layers)])
            if cross
            else None
        )
        self.decoder = nn.ModuleList(
            [ReconstructionLayer(dim, heads, ffn_ratio, dropout, cross=cross) for _ in range(layers)]
        )

    def forward(
        self,
        query: Tensor,
        query_pad: Tensor | None,
        context: Tensor,
        context_pad: Tensor | None,
        context_weights: Tensor | None,
    ) -> Tensor:
        mem = None
        if self.context is not None:
            mem = context
            for layer in self.context:
                mem = layer(mem, context_pad, context_weights, mode=self.mode, causal=self.causal)
        x = query
        for layer in self.decoder:
            x = layer(x, query_pad, None, mem, context_pad, context_weights, mode=self.mode, causal=self.causal)
        return x
