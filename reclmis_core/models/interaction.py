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


class ConditionedInteraction(nn.Module):
    """E' = attn(E -> V) (vision-to-text), then V' = attn(V -> E') (text-to-vision, reference order).

    With ``attention="self"`` (Table V ablation) each modality attends to itself only.
    Only ``V'`` feeds the decoder; ``E'`` also feeds W_woi in training.
    """

    def __init__(self, dim: int, grid: int, heads: int, dropout: float, attention: str = "cross") -> None:
        super().__init__()
        self.attention = attention
        self.embed = PatchEmbedding(dim, grid, dropout)
        self.attn_text = Attention(dim, heads, dropout)
        self.attn_image = Attention(dim, heads, dropout)

    def forward(self, image_feat: Tensor, text: Tensor, text_pad: Tensor) -> tuple[Tensor, Tensor]:
        v = self.embed(image_feat)
        if self.attention == "cross":
            e_new = self.attn_text(text, v)
            v_new = self.attn_image(v, e_new, key_padding_mask=text_pad)
        else:
            e_new = self.attn_text(text, text, key_padding_mask=text_pad)
            v_new = self.attn_image(v, v)
        return e_new, v_new


class InterestWeights(nn.Module):
    """W_poi = softmax(MLP(V')) over patches, W_woi = softmax(MLP(Conv-BN-ReLU(E'))) over valid tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.text_conv = nn.Sequential(nn.Conv1d(dim, dim, 3, padding=1), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
        self.mlp_patch = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 1))
        self.mlp_word = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 1))

    def forward(self, v_new: Tensor, e_new: Tensor, text_valid: Tensor) -> tuple[Tensor, Tensor]:
        e = self.text_conv(e_new.transpose(1, 2)).transpose(1, 2)
        w_poi = self.mlp_patch(v_new).squeeze(-1).softmax(dim=-1)
        w_woi = masked_softmax(self.mlp_word(e).squeeze(-1), text_valid)
        return w_poi, w_woi
