"""Counting for Table II: parameters, MACs/FLOPs (attention included), and the reconciliation of our counts with
the reference implementation's figures (paper preset)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import RunConfig

# Figures counted on the public reference implementation (core issue); used only for the paper preset's footnote.
REFERENCE = {
    "infer_no_text_m": 18.1,
    "clip_text_m": 63.4,
    "recon_m": {4: 50.5, 3: 37.9},
    "gmacs_infer_with_text": 24.1,
    "ms_infer_no_text": 170.0,
    "ms_infer_with_text": 190.0,
}



def _m(n: int) -> float:
    return round(n / 1e6, 3)


def count_params(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _sdpa_cpu_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per MAC) of what ``fn`` runs, CPU SDPA included."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def _reconciliation(model: Any, run_cfg: RunConfig, params_infer: int, params_text: int, gmacs_text: float,
                    gmacs_no_text: float, text_len: int) -> list[str]:
    m = run_cfg.model
    if not (m.image_size == 224 and m.base_channels == 64 and m.text.encoder == "clip"):
        return ["reference figures (core issue) apply to the paper preset (224 px, base 64, CLIP) only"]
    lines = []
    conv_e = count_params(model.interest.text_conv) if model.interest is not None else 0
    # With the paper's CI order V' does not depend on E', so E''s attention is training-only too.
    attn_e = count_params(model.text_update) if model.text_update is not None else 0
    attn_note = (f" and, with the paper's CI order (V' from E, not E'), the attention that computes E' "
                 f"({attn_e / 1e6:.3f} M)") if attn_e else ""
    lines.append(
        f"inference path without text encoder: ours {params_infer / 1e6:.3f} M; the reference's "
        f"{REFERENCE['infer_no_text_m']} M also counts a Conv-BN-ReLU on E' ({conv_e / 1e6:.3f} M) that only feeds "
        f"W_woi in training (our training-only `interest` module){attn_note}: {params_infer / 1e6:.3f} + "
        f"{(conv_e + attn_e) / 1e6:.3f} = {(params_infer + conv_e + attn_e) / 1e6:.3f} M"
    )
    lines.append(f"CLIP text tower: ours {params_text / 1e6:.3f} M vs reference {REFERENCE['clip_text_m']} M")
    recon = count_params(model.cvr) + count_params(model.clr)
    dim = model.seg.dim
    cross = 4 * dim * dim + 4 * dim
    layers = m.recon_layers
    ref = REFERENCE["recon_m"].get(layers)
    unused = 2 * layers * cross
    lines.append(
        f"reconstructors (CVR+CLR, {layers} layers per stack): ours {recon / 1e6:.2f} M; the reference also builds "
        f"{2 * layers} never-used cross-attentions in its context stacks ({2 * layers} x {cross / 1e6:.4f} M = "
        f"{unused / 1e6:.2f} M): {recon / 1e6:.2f} + {unused / 1e6:.2f} = {(recon + unused) / 1e6:.2f} M"
        + (f" vs reference {ref} M" if ref else "")
    )
    if layers != 4:  # the reference's QaTa config uses 4 layers: count ours at 4 too, without building the model
        from ..models.reconstruction import ConditionedReconstructor

        r4 = 2 * count_params(ConditionedReconstructor(dim, 4, m.recon_heads, m.recon_ffn_ratio, m.dropout,
                                                       m.recon_attention, m.condition_mode, m.recon_causal))
        u4 = 8 * cross
        lines.append(
            f"reconstructors at 4 layers per stack (the reference's QaTa config): ours {r4 / 1e6:.2f} M + 8 unused "
            f"cross-attentions {u4 / 1e6:.2f} M = {(r4 + u4) / 1e6:.2f} M vs reference {REFERENCE['recon_m'][4]} M"
        )
    if text_len == 18:
        ref_g = REFERENCE["gmacs_infer_with_text"]
        lines.append(
            f"inference MACs at 224x224 with an 18-token note: ours {gmacs_text:.2f} G with the text encoder "
            f"({gmacs_no_text:.2f} G without) vs the paper's/reference's {ref_g} G ({100 * (gmacs_text / ref_g - 1):+.1f}%)"
        )
    return lines
