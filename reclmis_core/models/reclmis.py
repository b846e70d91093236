"""RecLMIS (Fig. 3): U-Net + text tower + one conditioned interaction, with the training-only CVR/CLR
reconstructors and the inputs of the conditioned contrastive loss.

``RecLMIS`` is the training model. ``RecLMIS.for_inference()`` returns ``RecLMISInference``, which shares
the same modules but holds only what segmentation needs (image encoder/decoder, text projection, CI); its
output equals the training model's for the same weights and input.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config_schema import ModelConfig
from ..data.reference import fill_note
from ..errors import ConfigError
from .image_encoders import build_image_encoder
from .interaction import ConditionedInteraction, InterestWeights, text_update
from .layers import Attention
from .reconstruction import ConditionedReconstructor, select_masked
from .text import TextTower, TokenBatch, build_text_tower
from .unet import UNetDecoder, coord_channels

log = logging.getLogger(__name__)


@dataclass
class RecLMISOutput:
    """Everything the objective and the explain view need. Aux fields are None when their branch is off."""

    logits: Tensor  # (B, 1, H, W) raw scores; sigmoid gives the probability of foreground
    image_tokens: Tensor | None = None  # V: bottleneck features (B, N, C)
    text_tokens: Tensor | None = None  # E: projected text features (B, L, C)
    text_valid: Tensor | None = None  # (B, L) bool
    w_poi: Tensor | None = None  # (B, N) patches of interest, sums to 1
    w_woi: Tensor | None = None  # (B, L) words of interest, 0 on padding, sums to 1
    recon_image: Tensor | None = None  # CVR output V_hat (B, N, C)
    target_image: Tensor | None = None
    recon_text: Tensor | None = None  # CLR output E_hat (B, L, C)
    target_text: Tensor | None = None
    image_masked: Tensor | None = None  # (B, N) bool, positions zeroed for CVR
    text_masked: Tensor | None = None  # (B, L) bool, positions zeroed for CLR
    layout_logits: Tensor | None = None  # (B, N) the note-only guess of where the mask lies (model.note_layout)


class SegmentationNet(nn.Module):
    """The inference path without the text tower: image + text features -> mask logits."""

    def __init__(self, cfg: ModelConfig, text_dim: int | None) -> None:
        super().__init__()
        self.image_size = cfg.image_size
        self.in_channels = cfg.in_channels
        self.encoder = build_image_encoder(cfg)
        self.input_coords = cfg.coords and self.encoder.takes_coords
        dim = self.encoder.out_channels[-1]
        self.dim = dim
        self.grid = cfg.image_size // self.encoder.strides[-1]
        self.raw_pads = cfg.text_padding == "raw"
        if text_dim is not None:
            self.text_proj = nn.Conv1d(text_dim, dim, kernel_size=3, padding=1)
            self.interaction = ConditionedInteraction(
                dim, self.grid, cfg.ci_heads, cfg.dropout, cfg.ci_attention, cfg.ci_order, cfg.ci_residual
            )
        else:
            self.text_proj = None
            self.interaction = None
        guide = cfg.guide if (cfg.fusion == "multiscale" and text_dim is not None) else None
        self.decoder = UNetDecoder(self.encoder.out_channels, self.encoder.strides, cfg.coords, guide, dim)
        self.head = nn.Conv2d(self.decoder.out_channels, 1, kernel_size=1)
        stride = self.decoder.out_stride
        self.upsample = nn.Upsample(scale_factor=stride, mode="bilinear", align_corners=False) if stride > 1 else None

    @property
    def uses_text(self) -> bool:
        return self.interaction is not None

    def check_input(self, image: Tensor) -> None:
        if image.ndim != 4 or image.shape[1] != self.in_channels or image.shape[-2:] != (self.image_size,) * 2:
            raise ValueError(
                f"expected images of shape (B, {self.in_channels}, {self.image_size}, {self.image_size}), "
                f"got {tuple(image.shape)}; resize inputs to the checkpoint's image size"
            )

    def project_text(self, text_features: Tensor, text_mask: Tensor) -> Tensor:
        # Zero padded positions first, so the k=3 convolution sees the same zeros as its own padding and a
        # note's features do not depend on how long the other notes in its batch are. text_padding=raw (the
        # reference) convolves the pad tokens' CLIP features as they are.
        feats = text_features if self.raw_pads else text_features * text_mask.unsqueeze(-1).to(text_features.dtype)
        return self.text_proj(feats.transpose(1, 2)).transpose(1, 2)

    def forward_features(
        self, image: Tensor, text_features: Tensor | None = None, text_mask: Tensor | None = None
    ) -> dict[str, Any]:
        if self.input_coords:
            image = torch.cat([image, coord_channels(image)], dim=1)
        feats = self.encoder(image)
        bottleneck = feats[-1]
        out: dict[str, Any] = {"skips": feats[:-1], "bottleneck": bottleneck}
        if self.interaction is None:
            out["decoder_in"] = bottleneck
            return out
        if text_features is None or text_mask is None:
            raise ValueError("this model is text-guided: pass text_features and text_mask")
        valid = text_mask > 0
        e = self.project_text(text_features, text_mask)
        patches, e_new, v_new = self.interaction(bottleneck, e, None if self.raw_pads else ~valid)
        b, c, h, w = bottleneck.shape
        weights = valid.unsqueeze(-1).to(e.dtype)
        out.update(
            text_tokens=e,
            text_valid=valid,
            text_code=(e * weights).sum(1) / weights.sum(1).clamp_min(1.0),
            patches=patches,
            e_new=e_new,
            v_new=v_new,
            decoder_in=v_new.transpose(1, 2).reshape(b, c, h, w),
        )
        return out

    def forward_head(self, feats: dict[str, Any]) -> Tensor:
        valid = feats.get("text_valid")
        x = self.decoder(
            feats["decoder_in"], feats["skips"], feats.get("text_tokens"), feats.get("text_code"),
            None if valid is None else ~valid,
        )
        logits = self.head(x)
        return logits if self.upsample is None else self.upsample(logits)

    def forward(self, image: Tensor, text_features: Tensor | None = None, text_mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(image, text_features, text_mask))


class _TextMixin:
    """Tokenizing and encoding notes, shared by the training and inference models."""

    text_encoder: TextTower | None
    max_length: int
    pad_to_max: bool = False  # every note padded to max_length (model.text.pad_to_max)
    eof_fill: int = 0  # reference read_text fill (model.text.eof_fill)

    @property
    def tokenizer(self):
        return None if self.text_encoder is None else self.text_encoder.tokenizer

    def tokenize(self, notes: Sequence[str]) -> TokenBatch:
        if self.text_encoder is None:
            raise ValueError("this model has no text encoder")
        notes = [fill_note(n, self.eof_fill) for n in notes] if self.eof_fill else list(notes)
        return self.text_encoder.tokenizer(notes, self.max_length, self.pad_to_max)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        tower = self.text_encoder
        frozen = not any(p.requires_grad for p in tower.parameters())
        ctx = torch.no_grad() if frozen else contextlib.nullcontext()
        with ctx:
            return tower(input_ids, attention_mask)


class RecLMISInference(_TextMixin, nn.Module):
    """Inference model: text tower + segmentation path; no reconstruction modules or W heads."""

    def __init__(self, text_encoder: TextTower | None, seg: SegmentationNet, max_length: int,
                 pad_to_max: bool = False, eof_fill: int = 0) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.seg = seg
        self.max_length = max_length
        self.pad_to_max = pad_to_max
        self.eof_fill = eof_fill

    def forward(self, image: Tensor, input_ids: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        if self.seg.uses_text:
            return self.seg(image, self.encode_text(input_ids, attention_mask), attention_mask)
        return self.seg(image)


class RecLMIS(_TextMixin, nn.Module):
    """The training model of Fig. 3.

    Args:
        cfg: the model section of the run config.
        text_encoder: a built text tower, or None for the image-only baseline.
    """

    def __init__(self, cfg: ModelConfig, text_encoder: TextTower | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_encoder = text_encoder
        uses_text = text_encoder is not None
        self.seg = SegmentationNet(cfg, text_encoder.dim if uses_text else None)
        self.max_length = self._resolve_max_length(cfg, text_encoder)
        self.pad_to_max, self.eof_fill = cfg.text.pad_to_max, cfg.text.eof_fill
        dim = self.seg.dim
        use_cvr, use_clr, use_ccl = (uses_text and cfg.use_cvr, uses_text and cfg.use_clr, uses_text and cfg.use_ccl)
        if uses_text and cfg.recon_target == "reference" and use_clr and text_encoder.dim != dim:
            raise ConfigError(
                f"model.recon_target=reference reconstructs raw text features ({text_encoder.dim}-d), which needs "
                f"a text encoder of the bottleneck width {dim}; use recon_target=paper"
            )
        self.interest = InterestWeights(dim, cfg.interest_dropout) if (use_cvr or use_clr or use_ccl) else None
        # E' for W_woi when the CI itself does not compute it (paper order): training-only, like W_woi.
        needs_e = self.interest is not None and self.seg.interaction.attn_text is None
        self.text_update = Attention(dim, cfg.ci_heads, cfg.dropout) if needs_e else None

        def recon() -> ConditionedReconstructor:
            return ConditionedReconstructor(
                dim, cfg.recon_layers, cfg.recon_heads, cfg.recon_ffn_ratio, cfg.dropout,
                cfg.recon_attention, cfg.condition_mode, cfg.recon_causal,
            )

        self.cvr = recon() if use_cvr else None
        # Training only: from the pooled note alone, where on the bottleneck grid the mask lies.
        self.layout = (
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, self.seg.grid ** 2))
            if uses_text and cfg.note_layout
            else None
        )
        self.clr = recon() if use_clr else None
        self.logit_scale = (
            nn.Parameter(torch.tensor(float(cfg.logit_scale_init)), requires_grad=cfg.learn_logit_scale)
            if use_ccl
            else None
        )

    @staticmethod
    def _resolve_max_length(cfg: ModelConfig, tower: TextTower | None) -> int:
        if tower is None:
            return 0
        if cfg.text.max_length <= 0:
            return tower.max_positions
        if cfg.text.max_length > tower.max_positions:
            raise ConfigError(
                f"model.text.max_length={cfg.text.max_length} exceeds what the {cfg.text.encoder} encoder supports "
                f"({tower.max_positions} positions)"
            )
        return cfg.text.max_length

    def train(self, mode: bool = True) -> RecLMIS:
        super().train(mode)
        if self.text_encoder is not None and not any(p.requires_grad for p in self.text_encoder.parameters()):
            self.text_encoder.eval()  # a frozen tower stays deterministic (no dropout)
        return self

    def for_inference(self) -> RecLMISInference:
        """The deployable model: shares weights with this one, holds no reconstruction modules."""
        return RecLMISInference(self.text_encoder, self.seg, self.max_length, self.pad_to_max, self.eof_fill).eval()

    def forward(
        self,
        image: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> RecLMISOutput:
        self.seg.check_input(image)
        text_features = None
        if self.seg.uses_text:
            if input_ids is None or attention_mask is None:
                raise ValueError("this model is text-guided: pass input_ids and attention_mask")
            text_features = self.encode_text(input_ids, attention_mask)
        feats = self.seg.forward_features(image, text_features, attention_mask)
        out = RecLMISOutput(logits=self.seg.forward_head(feats))
        if self.layout is not None:
            out.layout_logits = self.layout(feats["text_code"])
        if self.interest is None:
            return out
        return self._auxiliary(out, feats, text_features, generator)

    def interest_weights(self, feats: dict[str, Any]) -> tuple[Tensor, Tensor]:
        e_new = feats["e_new"]
        if e_new is None:
            e_new = text_update(self.text_update, feats["text_tokens"], feats["patches"], ~feats["text_valid"],
                                self.cfg.ci_attention)
        return self.interest(feats["v_new"], e_new, feats["text_valid"])

    def _auxiliary(
        self, out: RecLMISOutput, feats: dict[str, Any], text_raw: Tensor, generator: torch.Generator | None
    ) -> RecLMISOutput:
        cfg = self.cfg
        v = feats["bottleneck"].flatten(2).transpose(1, 2)  # V (B, N, C)
        e = feats["text_tokens"]  # E (B, L, C)
        valid = feats["text_valid"]
        w_poi, w_woi = self.interest_weights(feats)
        pads = None if self.seg.raw_pads else ~valid  # text_padding=raw: the reconstructors see every slot too
        out.image_tokens, out.text_tokens, out.text_valid, out.w_poi, out.w_woi = v, e, valid, w_poi, w_woi
        if self.cvr is not None:
            all_patches = torch.ones_like(w_poi, dtype=torch.bool)
            masked = select_masked(w_poi, all_patches, cfg.image_mask_ratio, cfg.mask_strategy, generator)
            query = v.masked_fill(masked.unsqueeze(-1), 0.0)
            cond = w_woi if cfg.cvr_attn_condition else None
            out.recon_image = self.cvr(query, None, e, pads, cond)
            target = v if cfg.recon_target == "paper" else feats["v_new"]
            out.target_image = target.detach() if cfg.recon_detach else target
            out.image_masked = masked
        if self.clr is not None:
            masked = select_masked(w_woi, valid, cfg.text_mask_ratio, cfg.mask_strategy, generator)
            query = e.masked_fill(masked.unsqueeze(-1), 0.0)
            cond = w_poi if cfg.clr_attn_condition else None
            out.recon_text = self.clr(query, pads, v, None, cond)
            target = e if cfg.recon_target == "paper" else text_raw
            out.target_text = target.detach() if cfg.recon_detach else target
            out.text_masked = masked
        return out

    # -- checkpoints ---------------------------------------------------------------------------------

    def persistent_keys_excluded(self) -> list[str]:
        """Frozen weights from a verified pretrained source are not copied into checkpoints."""
        tower = self.text_encoder
        if tower is None or not tower.pretrained or any(p.requires_grad for p in tower.parameters()):
            return []
        return [k for k in self.state_dict() if k.startswith("text_encoder.")]

    def checkpoint_state_dict(self) -> dict[str, Tensor]:
        skip = set(self.persistent_keys_excluded())
        return {k: v for k, v in self.state_dict().items() if k not in skip}

    def text_state(self) -> dict[str, Any]:
        return {} if self.text_encoder is None else self.text_encoder.extra_state()


def build_model(
    cfg: ModelConfig, corpus: Sequence[str] | None = None, text_state: dict[str, Any] | None = None
) -> RecLMIS:
    """Build the training model from its config.

    Args:
        cfg: model config.
        corpus: training notes (the scratch encoder learns its vocabulary from them).
        text_state: ``RecLMIS.text_state()`` saved with a checkpoint (e.g. the learned tokenizer).
    """
    tower = build_text_tower(cfg.text, corpus=corpus, state=text_state)
    return RecLMIS(cfg, tower)
