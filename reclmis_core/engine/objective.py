"""The RecLMIS objective (Eq. 5-11): Dice + BCE, conditioned contrastive loss, weighted reconstruction MSE.

Every function here is pure; ``RecLMISObjective`` returns the total ``loss`` plus each named part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config_schema import LossConfig, ModelConfig
from ..models.reclmis import RecLMISOutput


def soft_dice_loss(probs: Tensor, target: Tensor, eps: float = 1e-5, denominator: str = "linear") -> Tensor:
    """1 - mean over images of (2 sum(p t) + eps) / (D + eps).

    ``denominator``: ``linear`` D = sum p + sum t; ``squared`` D = sum p^2 + sum t^2 (the reference's
    WeightedDiceLoss, whose 0.5 pixel weights scale every sum by 1/4: its smooth 1e-5 is eps = 4e-5 here).
    """
    p = probs.flatten(1)
    t = target.flatten(1)
    if denominator == "linear":
        union = p.sum(1) + t.sum(1)
    elif denominator == "squared":
        union = p.pow(2).sum(1) + t.pow(2).sum(1)
    else:
        raise ValueError(f"unknown Dice denominator {denominator!r}; use linear or squared")
    dice = (2 * (p * t).sum(1) + eps) / (union + eps)
    return 1 - dice.mean()


def weighted_token_mse(pred: Tensor, target: Tensor, weights: Tensor | None, valid: Tensor | None) -> Tensor:
    """Eq. 8 / 10: per token the mean squared error over channels, averaged over tokens with weights w.

    With ``weights`` (W_poi or W_woi, detached) the per-image term is ``sum_j w_j e_j / sum_j w_j`` over valid
    tokens; Eq. 8's printed 1/N factor on top of softmax weights that already sum to one would shrink the loss
    by N and is read as this normalisation. Without weights it is the plain mean over valid tokens.
    """
    err = (pred - target).pow(2).mean(dim=-1)  # (B, T)
    if valid is None:
        valid = torch.ones_like(err, dtype=torch.bool)
    w = valid.to(err.dtype) if weights is None else weights.detach().to(err.dtype) * valid
    per_image = (w * err).sum(1) / w.sum(1).clamp_min(1e-12)
    return per_image.mean()


def conditioned_similarity(
    image_tokens: Tensor, text_tokens: Tensor, w_poi: Tensor, w_woi: Tensor, text_valid: Tensor,
    pads_as_zero: bool = False,
) -> Tensor:
    """Eq. 5 for every image i and note j of the batch: ``S[i, j]``.

    a_nl = cos(v_n, e_l); S = 1/2 (sum_n w_poi[i, n] max_l a_nl + sum_l w_woi[j, l] max_n a_nl).
    Padded tokens take part in neither max nor sum; with ``pads_as_zero`` (the reference) a pad's cosine is 0,
    so it can be a patch's best word, and it adds 0 to the word sum.
    """
    v = F.normalize(image_tokens, dim=-1)
    e = F.normalize(text_tokens, dim=-1)
    a = torch.einsum("ind,jld->ijnl", v, e)  # (B_img, B_txt, N, L)
    if pads_as_zero:
        a = a * text_valid[None, :, None, :].to(a.dtype)
        a_tok = a
    else:
        a_tok = a.masked_fill(~text_valid[None, :, None, :], float("-inf"))
    best_word = a_tok.amax(dim=-1)  # (Bi, Bt, N)
    best_patch = a.amax(dim=-2)  # (Bi, Bt, L)
    s_img = (best_word * w_poi[:, None, :]).sum(-1)
    s_txt = (best_patch * (w_woi * text_valid)[None, :, :]).sum(-1)
    return 0.5 * (s_img + s_txt)


def conditioned_contrastive_loss(similarity: Tensor, logit_scale: Tensor, groups: Tensor | None = None) -> Tensor:
    """Eq. 6 with the logits S / tau inside the exponent (as printed, tau would cancel), both directions.

    ``groups`` (B,) gives images whose notes are the same text the same id: each such pair is a positive, with
    the target spread evenly over the positives, instead of a false negative (a batch of phantoms or of QaTa
    images often holds the same note several times). Without ``groups`` only the diagonal is positive.
    """
    logits = similarity * logit_scale.exp()
    n = similarity.shape[0]
    if groups is None:
        target = torch.eye(n, device=similarity.device, dtype=logits.dtype)
    else:
        target = (groups[:, None] == groups[None, :]).to(logits.dtype)
    target = target / target.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def patch_shares(masks: Tensor, n_patches: int) -> Tensor:
    """(B, N): each bottleneck patch's foreground share, the masks average-pooled to the square grid of N patches."""
    grid = round(n_patches ** 0.5)
    if grid * grid != n_patches:
        raise ValueError(f"{n_patches} patches do not form a square grid")
    return F.adaptive_avg_pool2d(masks.float(), grid).flatten(1)


def note_layout_loss(layout_logits: Tensor, masks: Tensor) -> Tensor:
    """BCE between the note-only layout guess (B, N) and each patch's foreground share."""
    return F.binary_cross_entropy_with_logits(layout_logits.float(), patch_shares(masks, layout_logits.shape[1]))


def patch_of_interest_loss(w_poi: Tensor, masks: Tensor) -> Tensor:
    """Cross-entropy ``-sum_n t_n log w_n`` between the target's share of each bottleneck patch and W_poi.

    ``t`` is the mask average-pooled to the (square) patch grid of ``w_poi`` (B, N), normalised to sum to one;
    images with an empty mask have no region to point at and are left out (0 when every mask is empty).
    """
    share = patch_shares(masks, w_poi.shape[1])
    mass = share.sum(1)
    keep = mass > 0
    if not bool(keep.any()):
        return w_poi.sum() * 0.0
    target = share[keep] / mass[keep, None]
    return -(target * w_poi[keep].float().clamp_min(1e-12).log()).sum(1).mean()


class RecLMISObjective:
    """Eq. 11: lambda1 L_V2T + lambda2 L_T2V + lambda3 L_CCL + lambda4 (L_Dice + L_BCE)."""

    def __init__(self, loss_cfg: LossConfig, model_cfg: ModelConfig) -> None:
        self.w = loss_cfg
        self.m = model_cfg

    def __call__(
        self, out: RecLMISOutput, masks: Tensor, logit_scale: Tensor | None = None, note_groups: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Loss parts; ``note_groups`` (B,) marks images that share a note (see conditioned_contrastive_loss)."""
        logits = out.logits.float()
        dice = soft_dice_loss(torch.sigmoid(logits), masks, self.w.dice_smooth, self.w.dice_denominator)
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        seg = self.w.dice * dice + self.w.bce * bce
        parts: dict[str, Tensor] = {"dice": dice.detach(), "bce": bce.detach(), "seg": seg}
        total = self.w.seg * seg
        if out.recon_text is not None:
            cond = out.w_woi if self.m.clr_loss_condition else None
            valid = None if self.m.clr_mean_pads else out.text_valid
            parts["clr"] = weighted_token_mse(out.recon_text.float(), out.target_text.float(), cond, valid)
            total = total + self.w.clr * parts["clr"]
        if out.recon_image is not None:
            cond = out.w_poi if self.m.cvr_loss_condition else None
            parts["cvr"] = weighted_token_mse(out.recon_image.float(), out.target_image.float(), cond, None)
            total = total + self.w.cvr * parts["cvr"]
        if logit_scale is not None and out.w_poi is not None and out.image_tokens.shape[0] > 1:
            if self.m.ccl_condition:
                w_poi, w_woi = out.w_poi.float(), out.w_woi.float()
            else:
                w_poi = torch.full_like(out.w_poi, 1.0 / out.w_poi.shape[1]).float()
                w_woi = out.text_valid.float() / out.text_valid.sum(1, keepdim=True)
            reference = self.m.ccl_weights == "reference"
            if reference:  # the public code softmaxes W again, over every slot: pads (W = 0) get exp(0) each
                w_poi, w_woi = w_poi.softmax(dim=-1), w_woi.softmax(dim=-1)
            sim = conditioned_similarity(
                out.image_tokens.float(), out.text_tokens.float(), w_poi, w_woi, out.text_valid, reference
            )
            groups = note_groups if self.m.ccl_same_note else None
            parts["ccl"] = conditioned_contrastive_loss(sim, logit_scale.float(), groups)
            total = total + self.w.ccl * parts["ccl"]
        if out.layout_logits is not None:
            parts["layout"] = note_layout_loss(out.layout_logits, masks)
            total = total + self.w.layout * parts["layout"]
        if self.w.poi > 0 and out.w_poi is not None:
            parts["poi"] = patch_of_interest_loss(out.w_poi, masks)
            total = total + self.w.poi * parts["poi"]
        parts["loss"] = total
        return parts
