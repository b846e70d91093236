"""Validation of a ``RunConfig``: the allowed values of choice fields and the cross-field rules, each error naming
the field and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .data.note_text import NOTE_READERS
from .data.preprocessor import PREPROCESSORS, Preprocessor
from .errors import ConfigError

if TYPE_CHECKING:
    from .config_schema import RunConfig


_CHOICES = {
    "model.fusion": ("bottleneck", "multiscale"),
    "model.guide": ("film", "attention"),
    "model.ci_attention": ("cross", "self"),
    "model.ci_order": ("paper", "reference"),
    "model.text_padding": ("masked", "raw"),
    "data.preprocessing": PREPROCESSORS.names(),
    "model.recon_attention": ("cross", "self"),
    "model.condition_mode": ("reference", "literal"),
    "model.recon_target": ("paper", "reference"),
    "model.mask_strategy": ("dist", "random", "topk"),
    "model.ccl_weights": ("paper", "reference"),
    "loss.dice_denominator": ("linear", "squared"),
    "train.scheduler": ("cosine", "constant", "cosine-restarts", "exponential"),
    "train.mixed_precision": ("no", "bf16", "fp16"),
    "train.on_nonfinite": ("stop", "skip"),
}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate_config(cfg: RunConfig) -> None:
    """Check choices and cross-field consistency; raise ConfigError naming the field and the fix."""
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got '{value}'")
    m = cfg.model
    # the model registries import torch: when a config is checked, not when this module is
    from .models.image_encoders import image_encoder_class
    from .models.text import NO_TEXT, check_text_config

    encoder = image_encoder_class(m.image_encoder)
    step = encoder.strides[-1]
    if m.image_size % step or m.image_size < 2 * step:
        raise ConfigError(
            f"model.image_size must be a multiple of {step} and >= {2 * step} for the {m.image_encoder} encoder, "
            f"got {m.image_size} (try {max(2 * step, round(m.image_size / step) * step)})"
        )
    if m.in_channels not in (1, 3):
        raise ConfigError(f"model.in_channels must be 1 or 3, got {m.in_channels}")
    check_text_config(m.text)
    for name in ("image_mask_ratio", "text_mask_ratio"):
        ratio = getattr(m, name)
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"model.{name} must lie in [0, 1], got {ratio}")
    width = encoder.feature_channels(m)[-1]
    if width % m.ci_heads or width % m.recon_heads:
        raise ConfigError(f"bottleneck width {width} must be divisible by model.ci_heads and model.recon_heads")
    if m.fusion == "multiscale" and m.text.encoder == NO_TEXT:
        raise ConfigError("model.fusion=multiscale conditions the decoder on the note: it needs a text encoder")
    if m.recon_layers < 1:
        raise ConfigError(f"model.recon_layers must be >= 1, got {m.recon_layers}")
    Preprocessor.from_config(cfg).check_config()
    if m.text.reader not in NOTE_READERS:
        raise ConfigError(f"model.text.reader must be one of {', '.join(NOTE_READERS)}, got {m.text.reader!r}")
    if m.text.reader != "raw" and m.text.eof_fill:
        raise ConfigError("model.text.eof_fill pads raw notes as the reference code did; a model that reads only the "
                          "zones (model.text.reader=zones) would read the padding away: use one or the other")
    if m.text.eof_fill < 0:
        raise ConfigError(f"model.text.eof_fill must be >= 0, got {m.text.eof_fill}")
    t = cfg.train
    if t.epochs < 1 or t.batch_size < 1 or t.grad_accum < 1:
        raise ConfigError("train.epochs, train.batch_size and train.grad_accum must be >= 1")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if not 0.0 <= m.interest_dropout < 1.0:
        raise ConfigError(f"model.interest_dropout must lie in [0, 1), got {m.interest_dropout}")
    for name in ("counterfactual", "note_augment", "domain_augment", "lesion_contrast"):
        share = getattr(cfg.data, name)
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"data.{name} must lie in [0, 1], got {share}")
    if m.note_layout and m.text.encoder == NO_TEXT:
        raise ConfigError("model.note_layout guesses the mask's place from the note: it needs a text encoder")
    if cfg.loss.poi < 0:
        raise ConfigError(f"loss.poi must be >= 0, got {cfg.loss.poi}")
    has_interest = m.text.encoder != NO_TEXT and (m.use_cvr or m.use_clr or m.use_ccl)
    if cfg.loss.poi > 0 and not has_interest:
        raise ConfigError("loss.poi trains W_poi, which exists only with a note and the CVR, CLR or CCL branch")
    if cfg.loss.dice_smooth < 0:
        raise ConfigError(f"loss.dice_smooth must be >= 0, got {cfg.loss.dice_smooth}")
    if t.scheduler in ("cosine-restarts", "exponential") and t.warmup_epochs:
        raise ConfigError(f"train.scheduler={t.scheduler} has no warm-up: set train.warmup_epochs=0 "
                          f"(got {t.warmup_epochs}) or use train.scheduler=cosine|constant")
    if t.restart_epochs < 1:
        raise ConfigError(f"train.restart_epochs must be >= 1, got {t.restart_epochs}")
    if t.scheduler == "cosine-restarts" and not 0.0 <= t.restart_min_lr <= t.lr:
        raise ConfigError(f"train.restart_min_lr must lie in [0, train.lr={t.lr:g}], got {t.restart_min_lr:g}")
    if not 0.0 < t.decay_gamma <= 1.0 or not 0.0 <= t.decay_floor <= 1.0:
        raise ConfigError(f"train.decay_gamma must lie in (0, 1] and train.decay_floor in [0, 1], got "
                          f"{t.decay_gamma:g} and {t.decay_floor:g}")
    if not 0.0 < cfg.infer.threshold < 1.0:
        raise ConfigError(f"infer.threshold must lie in (0, 1), got {cfg.infer.threshold}")
