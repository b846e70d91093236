"""The configuration schema: one dataclass per stage, nested in ``RunConfig``, and the dict <-> dataclass helpers.

Every field carries a ``(type) meaning`` comment. This module is the low half of the configuration: models, data
and engine read their sections from here. :mod:`reclmis_core.config` builds and validates a ``RunConfig`` from
presets, YAML and ``key=value`` overrides (and re-exports these names).
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .registry import did_you_mean

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------------------


@dataclass
class TextConfig:
    encoder: str = "clip"  # (str) registered text encoder: clip | minilm | scratch | hf:<folder or id> | none (image-only)
    weights: str | None = None  # (str) clip: local HF CLIP folder/.safetensors or a hub id; None = random (warned)
    freeze: bool = True  # (bool) freeze the text encoder (the reference freezes CLIP; the paper does not say)
    max_length: int = 0  # (int) tokens per note incl. special tokens; 0 = longest training note (capped by model)
    width: int = 64  # (int) scratch encoder: hidden width
    layers: int = 2  # (int) scratch encoder: transformer layers
    heads: int = 4  # (int) scratch encoder: attention heads
    vocab_size: int = 512  # (int) scratch encoder: BPE vocabulary learned from the training notes
    pad_to_max: bool = False  # (bool) pad every note to max_length tokens (pad id 0), as the reference (18 tokens)
    reader: str = "raw"  # (str) what the tower reads of a note: raw (as written) | zones (only the lung zones it names, in one plain wording whatever the note's grammar: "upper left and lower right lung"; see data/note_text.py read_note)
    eof_fill: int = 0  # (int) reference quirk: a note of n < eof_fill words gets " EOF XXX" appended eof_fill - n times (the reference's read_text: 9); 0 = off


@dataclass
class ModelConfig:
    image_size: int = 224  # (int) square input side in pixels; a multiple of the encoder's deepest stride (unet: 16)
    in_channels: int = 3  # (int) image channels fed to the network (grayscale is repeated)
    base_channels: int = 64  # (int) U-Net width of the first stage; the bottleneck has 8x this
    text: TextConfig = field(default_factory=TextConfig)  # (TextConfig) text tower
    image_encoder: str = "unet"  # (str) registered image encoder: unet (the paper, PLAM skips) | convnext-tiny
    encoder_weights: str | None = None  # (str) convnext-tiny: local HF folder or hub id; None = random (warned)
    fusion: str = "bottleneck"  # (str) bottleneck (the paper: one CI at the coarsest scale) | multiscale
    guide: str = "film"  # (str) multiscale: film (FiLM from the pooled note) | attention (pixels attend to words)
    coords: bool = False  # (bool) add x/y coordinate channels (input and decoder) so spatial words bind to place
    # Conditioned interaction (CI, Sec. III-B)
    ci_attention: str = "cross"  # (str) cross (paper) | self (Table V ablation: no cross-modal exchange)
    ci_order: str = "paper"  # (str) paper: V' = attn(V -> E) (Sec. III-B) | reference: V' = attn(V -> E') (public code)
    ci_residual: bool = False  # (bool) V' = V + attn(...): the bottleneck keeps the image features (off: paper)
    ci_heads: int = 4  # (int) heads of each CI attention (the reference uses 4)
    text_padding: str = "masked"  # (str) masked: pad tokens are zeroed before the text Conv1d and ignored by attention | raw: their CLIP features enter the Conv1d and CI attends to every slot (the reference)
    dropout: float = 0.1  # (float) dropout in CI and reconstruction attention
    # Auxiliary branches and their conditions (Tables III, IV)
    use_cvr: bool = True  # (bool) conditioned vision reconstruction (text -> masked image features)
    use_clr: bool = True  # (bool) conditioned language reconstruction (image -> masked text features)
    use_ccl: bool = True  # (bool) conditioned contrastive loss
    note_layout: bool = False  # (bool) beyond the paper, training only: a head guesses from the note alone where the mask lies (the mask pooled to the bottleneck grid), so the text tower must read which sides and levels a note names; weighted by loss.layout
    cvr_attn_condition: bool = True  # (bool) CVR attention to the note conditioned by W_woi (Eq. 7)
    cvr_loss_condition: bool = True  # (bool) CVR MSE weighted by W_poi (Eq. 8); off: plain mean (the reference)
    clr_attn_condition: bool = True  # (bool) CLR attention to the image conditioned by W_poi (Eq. 9)
    clr_loss_condition: bool = True  # (bool) CLR MSE weighted by W_woi (Eq. 10); off: plain mean (the reference)
    clr_mean_pads: bool = False  # (bool) unweighted CLR MSE also averages over pad slots (the reference's .mean() over all token slots); no effect while clr_loss_condition weights it (W_woi is 0 on pads)
    ccl_condition: bool = True  # (bool) weight CCL similarity by W_poi and W_woi (else plain means)
    ccl_weights: str = "paper"  # (str) paper: the CCL weights as they are, pads left out | reference: softmax applied a second time over every slot (pads take weight) and pad cosines count as 0 in the best-word max (the public code)
    interest_dropout: float = 0.0  # (float) dropout on V' and E' before the W_poi / W_woi MLPs, training only (the reference's config.dropout/dropout_value: QaTa off, MosMedData+ 0.5)
    ccl_same_note: bool = True  # (bool) images of a batch with the same note are CCL positives (paper: negatives)
    condition_mode: str = "reference"  # (str) reference: weight attention after softmax; literal: Eq. 7/9
    recon_attention: str = "cross"  # (str) cross (paper) | self (Table V: masked query attends to itself)
    recon_layers: int = 3  # (int) layers per decoder stack of each reconstructor (paper: 3; ref. QaTa: 4)
    recon_heads: int = 4  # (int) heads in reconstruction attention
    recon_ffn_ratio: int = 2  # (int) feed-forward width / model width in reconstruction layers
    recon_causal: bool = False  # (bool) reference quirk: causal mask in reconstruction self-attention
    recon_target: str = "paper"  # (str) paper: targets V and E; reference: targets V' and raw text features
    recon_detach: bool = True  # (bool) stop-gradient on the CVR/CLR targets, so they cannot be flattened to fit
    mask_strategy: str = "dist"  # (str) dist (sample by W) | random | topk
    image_mask_ratio: float = 0.5  # (float) share of patches masked for CVR (alpha_v)
    text_mask_ratio: float = 0.3  # (float) share of valid tokens masked for CLR (alpha_t)
    logit_scale_init: float = 4.6052  # (float) log(1/tau) of the CCL; CLIP's value ln(100)
    learn_logit_scale: bool = False  # (bool) train the CCL temperature (the reference keeps CLIP's frozen)


@dataclass
class LossConfig:
    clr: float = 1.0  # (float) lambda1, weight of L_V2T (language reconstruction)
    cvr: float = 1.0  # (float) lambda2, weight of L_T2V (vision reconstruction)
    ccl: float = 0.2  # (float) lambda3, weight of the conditioned contrastive loss
    seg: float = 5.0  # (float) lambda4, weight of Dice + BCE
    dice: float = 1.0  # (float) weight of Dice inside the segmentation term (the reference: 0.5)
    bce: float = 1.0  # (float) weight of BCE inside the segmentation term (the reference: 0.5)
    dice_denominator: str = "linear"  # (str) linear: sum p + sum t | squared: sum p^2 + sum t^2 (the reference's WeightedDiceLoss)
    dice_smooth: float = 1e-5  # (float) added to the Dice numerator and denominator, per image (the reference: 1e-5 on features scaled by 0.5, i.e. 4e-5 here)
    layout: float = 1.0  # (float) weight of the note-layout loss (BCE), when model.note_layout is on
    poi: float = 0.0  # (float) beyond the paper: weight of the patch-of-interest loss, cross-entropy between the target mask pooled to the bottleneck grid and W_poi (teaches the CI which region the note names); needs the CVR, CLR or CCL branch


@dataclass
class DataConfig:
    root: str | None = None  # (str) prepared data folder holding manifest.csv
    num_workers: int = 0  # (int) DataLoader worker processes
    cache: bool = True  # (bool) keep decoded, resized arrays in memory after the first epoch
    augment: bool = True  # (bool) training augmentations (blur, contrast, small rotations, honest flips)
    hflip: bool = True  # (bool) left-right flip that also swaps left/right in the note
    rotate_deg: float = 20.0  # (float) max absolute rotation in degrees (never multiples of 90)
    counterfactual: float = 0.0  # (float) share of training samples whose note and mask are redrawn from the lesion label map (a random subset of its lesions, named in the plain style); needs a lesion_labels column
    domain_augment: float = 0.0  # (float) share of training samples that also get nnU-Net-style intensity and resolution changes (gamma 0.7-1.5, contrast 0.65-1.5, simulated low resolution 0.5-1x, Gaussian noise up to 12 grey levels; each with probability 1/2), for images from other scanners
    lesion_contrast: float = 0.0  # (float) share of training samples whose lesions are made fainter or denser (their difference from the tissue around them scaled by 0.35-1.25; the lesions of the lesion label map when there is one, else the mask), for lesions of other appearance
    note_augment: float = 0.0  # (float) share of training samples whose note is reworded (level synonyms, digits/words, side-first order, filler-word dropout; see data/note_augment.py)
    mean: float = 0.0  # (float) intensity normalisation: (x/255 - mean) / std
    std: float = 1.0  # (float) see mean
    preprocessing: str = "reclmis"  # (str) reclmis: PIL reading/bilinear resize, gray or RGB, (x/255 - mean)/std | reference: the public code's cv2.imread (3 channels, BGR) + cv2.resize, x/255 (needs opencv: pip install 'reclmis[reference]')


@dataclass
class TrainConfig:
    epochs: int = 200  # (int) passes over the training split
    batch_size: int = 32  # (int) images per optimisation step per process
    lr: float = 3e-4  # (float) peak learning rate (Adam)
    weight_decay: float = 1e-5  # (float) Adam weight decay; the paper does not say; the reference's configs set 1e-5 but never pass it to Adam (the reference recipe: 0)
    scheduler: str = "cosine"  # (str) cosine: per step to 0 | constant | cosine-restarts: per epoch, SGDR (the reference QaTa) | exponential: per epoch, lr * max(decay_gamma^epoch, decay_floor) (the reference MosMedData+)
    warmup_epochs: int = 0  # (int) linear warm-up before the cosine decay (cosine and constant only)
    restart_epochs: int = 10  # (int) cosine-restarts: epochs per cosine cycle, T_0 (the reference: 10)
    restart_min_lr: float = 1e-4  # (float) cosine-restarts: lr at the end of each cycle, eta_min (the reference: 1e-4)
    decay_gamma: float = 0.99  # (float) exponential: lr factor per epoch (the reference: 0.99)
    decay_floor: float = 0.1  # (float) exponential: the factor never falls below this (the reference: 0.1)
    grad_accum: int = 1  # (int) gradient accumulation steps
    mixed_precision: str = "no"  # (str) no | bf16 | fp16
    seed: int = 3407  # (int) global seed (the reference's), offset by process rank
    deterministic: bool = False  # (bool) deterministic kernels (tests, exact resume)
    patience: int = 0  # (int) early stopping after this many epochs without better val Dice; 0 = off
    on_nonfinite: str = "stop"  # (str) stop | skip: what a NaN/inf loss does (skips are counted and logged)
    note_dropout: float = 0.0  # (float) share of batches trained with an empty note and every lesion as target
    log_every: int = 10  # (int) steps between progress log lines when output is not a terminal
    tensorboard: bool = False  # (bool) log to TensorBoard through Accelerate trackers


@dataclass
class InferConfig:
    threshold: float = 0.5  # (float) probability above which a pixel is foreground
    batch_size: int = 8  # (int) images per forward pass in predict/eval
    mirror: bool = False  # (bool) test-time mirroring (nnU-Net's): also segment the left-right mirrored image with the note's sides swapped and average the two probabilities; twice the model time


@dataclass
class RunConfig:
    name: str = "run"  # (str) run name; RUN_DIR defaults to runs/<name>
    preset: str = "paper"  # (str) preset this config started from
    recipe: str = ""  # (str) training recipe applied on top of the preset (e.g. paper-qata, reference-qata); "" = none
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass
# --------------------------------------------------------------------------------------------------


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (JSON/YAML friendly)."""
    return dataclasses.asdict(cfg)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(key: str, options: list[str]) -> str:
    return did_you_mean(key, options) or f" Valid keys: {', '.join(sorted(options))}."


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, with a clear error."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return _from_dict(tp, value, where + ".")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {getattr(tp, '__name__', tp)}, got {value!r}") from None
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            raise ConfigError(f"unknown config key '{where}{key}'." + _suggest(key, list(types_)))
        kwargs[key] = _coerce(value, types_[key], f"{where}{key}")
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``base`` recursively (neither is modified)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: Renamed config keys, accepted for one release: old dotted key -> the new keys it sets (to its value).
RENAMED_KEYS: dict[str, tuple[str, ...]] = {
    "model.cvr_condition": ("model.cvr_attn_condition", "model.cvr_loss_condition"),
    "model.clr_condition": ("model.clr_attn_condition", "model.clr_loss_condition"),
}


def migrate_renamed_keys(data: dict[str, Any], warn: bool = True) -> dict[str, Any]:
    """``data`` with each renamed key replaced by its new keys (a new key given explicitly wins).

    ``warn``: a DeprecationWarning (and a log warning, which the CLI shows) per old key; checkpoints written
    before the rename are migrated without one (``warn=False``).
    """
    out = data
    for old, new in RENAMED_KEYS.items():
        section, key = old.split(".")
        node = out.get(section)
        if not isinstance(node, dict) or key not in node:
            continue
        node = dict(node)
        value = node.pop(key)
        for target in new:
            node.setdefault(target.split(".", 1)[1], value)
        out = {**out, section: node}
        if warn:
            message = (f"config key '{old}' is deprecated and will be removed in the next release; it sets "
                       f"{' and '.join(new)}: use those")
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            log.warning(message)
    return out
