"""Conditioned Interaction (CI, Sec. III-B): one cross-attention each way at the bottleneck, and the
patch-of-interest / word-of-interest weights W_poi and W_woi (Eq. 1-3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import Attention, masked_softmax


class PatchEmbedding(nn.Module):
    """1x1 patch projection + learned position embedding on the (h, w) bottleneck grid."""

    def __init__(self, dim: int, grid: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, h, w) -> (B, N, C)
        return self.dropout(self.proj(x).flatten(2).transpose(1, 2) + self.pos)


def text_update(attn: Attention, text: Tensor, patches: Tensor, text_pad: Tensor | None, attention: str) -> Tensor:
    """E' (Eq. 1): the words attend to the patches (``cross``) or to each other (``self``, Table V)."""
    if attention == "cross":
        return attn(text, patches)
    return attn(text, text, key_padding_mask=text_pad)


class ConditionedInteraction(nn.Module):
    """CI (Sec. III-B): E' = attn(E -> V) (vision-to-text) and V' = attn(V -> .) (text-to-vision).

    ``order="paper"`` (the text as printed): V' = attn(V -> E), the words themselves as keys and values, so the
    note's content reaches every patch. E' then only feeds W_woi, a training-only input, so its attention is
    not part of this module: ``RecLMIS.text_update`` holds it and the inference model does not.
    ``order="reference"`` (the public code; the authors' weights need it): V' = attn(V -> E'), where E' is a
    mixture of patches; at initialisation every row of E' is nearly the same vector and V' barely depends on the
    note. ``residual`` adds V to V'. With ``attention="self"`` (Table V) each modality attends to itself only.
    """

    def __init__(
        self, dim: int, grid: int, heads: int, dropout: float, attention: str = "cross",
        order: str = "paper", residual: bool = False,
    ) -> None:
        super().__init__()
        self.attention = attention
        self.order = order
        self.residual = residual
        self.embed = PatchEmbedding(dim, grid, dropout)
        self.attn_text = Attention(dim, heads, dropout) if order == "reference" else None
        self.attn_image = Attention(dim, heads, dropout)

    def forward(self, image_feat: Tensor, text: Tensor, text_pad: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor]:
        """(embedded patches V, E' or None when this module does not compute it, V'); ``text_pad`` None: every
        token slot is attended, pads included (``model.text_padding=raw``, the reference)."""
        v = self.embed(image_feat)
        e_new = None if self.attn_text is None else text_update(self.attn_text, text, v, text_pad, self.attention)
        if self.attention == "cross":
            keys = text if e_new is None else e_new
            v_new = self.attn_image(v, keys, key_padding_mask=text_pad)
        else:
            v_new = self.attn_image(v, v)
        if self.residual:
            v_new = v + v_new
        return v, e_new, v_new


class InterestWeights(nn.Module):
    """W_poi = softmax(MLP(V')) over patches, W_woi = softmax(MLP(Conv-BN-ReLU(E'))) over valid tokens.

    ``dropout`` acts on the MLPs' inputs only (V' and Conv-BN-ReLU(E')), as the reference's ``dropout1``.
    """

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.text_conv = nn.Sequential(nn.Conv1d(dim, dim, 3, padding=1), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
        self.mlp_patch = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 1))
        self.mlp_word = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, v_new: Tensor, e_new: Tensor, text_valid: Tensor) -> tuple[Tensor, Tensor]:
        e = self.text_conv(e_new.transpose(1, 2)).transpose(1, 2)
        w_poi = self.mlp_patch(self.dropout(v_new)).squeeze(-1).softmax(dim=-1)
        w_woi = masked_softmax(self.mlp_word(self.dropout(e)).squeeze(-1), text_valid)
        return w_poi, w_woi
