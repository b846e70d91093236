"""CLIP text tower (ViT-B/32 by default) with the exact CLIP BPE tokenizer.

Weights come only from where the user points: a local Hugging Face CLIP folder, a ``.safetensors`` file
written by :func:`reclmis_core.models.text.convert.convert_openai_clip`, or a hub id (the only case that
touches the network). Without weights the tower is random, and we say so loudly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from collections.abc import Sequence

from torch import Tensor

from ...config_schema import TextConfig
from ...errors import CheckpointError, ConfigError
from .base import NoteTokenizer, TextTower
from .registry import register_text_encoder

log = logging.getLogger(__name__)

# OpenAI ViT-B/32 text transformer: 12 layers, width 512, 8 heads, 77 positions, 49408 BPE tokens.
VIT_B32_TEXT = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    projection_dim=512,
    hidden_act="quick_gelu",
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=0,
)


class ClipTokenizer(NoteTokenizer):
    """CLIP's byte-level BPE (lower-cases and cleans like the original), ids wrapped in SOT/EOT."""

    kind = "clip-bpe"
    pad_id = 0
    model_max_length = 77

    @classmethod
    def from_description(cls, desc: dict[str, Any], folder: Path, max_length: int) -> ClipTokenizer:
        return cls()  # the BPE ships with instant-clip-tokenizer: nothing is stored in the export

    def __init__(self) -> None:
        from instant_clip_tokenizer import Tokenizer

        self._tok = Tokenizer()
        self.sot = self._tok.start_of_text()
        self.eot = self._tok.end_of_text()

    def _encode_one(self, text: str) -> list[int]:
        return [self.sot, *self._tok.encode(text), self.eot]

    def _token_strings(self, text: str, max_length: int) -> list[str]:
        ids = self._encode_one(text)
        if len(ids) > max_length:
            ids = self._truncate(ids, max_length)
        return ["<sot>" if i == self.sot else "<eot>" if i == self.eot else self._tok.decode([i]).strip() for i in ids]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "package": "instant-clip-tokenizer", "sot": self.sot, "eot": self.eot, "pad": 0}


@register_text_encoder("clip")
class ClipTextTower(TextTower):
    """Per-token CLIP text features after the final LayerNorm and the text projection (as the reference)."""

    tokenizer_class = ClipTokenizer
    name_argument = "weights"

    @classmethod
    def from_config(cls, cfg: TextConfig, source: str | None, corpus: Sequence[str] | None,
                    state: dict[str, Any]) -> ClipTextTower:
        return cls(cfg.weights, state.get("config"))

    def __init__(self, weights: str | None = None, config_overrides: dict[str, Any] | None = None) -> None:
        # config_overrides come from a checkpoint's text_state: the checkpoint then holds the tower's weights
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        self.tokenizer = ClipTokenizer()
        self.source = weights
        if weights is None:
            cfg = CLIPTextConfig(**{**VIT_B32_TEXT, **(config_overrides or {})})
            cfg._attn_implementation = "eager"
            self.model = CLIPTextModelWithProjection(cfg)
            (log.debug if config_overrides else log.warning)(
                "CLIP text tower is RANDOMLY INITIALISED (no model.text.weights given). Fine for tests; "
                "for real use pass a local CLIP folder/.safetensors or a hub id, e.g. "
                "--text-encoder clip:openai/clip-vit-base-patch32"
            )
            self.pretrained = False
        else:
            self.model = _load_clip(weights)
            self.pretrained = True
        c = self.model.config
        self.dim = c.projection_dim
        self.max_positions = c.max_position_embeddings

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.model.text_projection(hidden)

    def extra_state(self) -> dict[str, Any]:
        return {"config": self.model.config.to_diff_dict()} if not self.pretrained else {}


def _load_clip(weights: str):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    path = Path(weights).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ConfigError(f"CLIP weights file not found: {path}")
        from safetensors.torch import load_file

        cfg_path = path.with_name("config.json")
        cfg = CLIPTextConfig.from_json_file(str(cfg_path)) if cfg_path.is_file() else CLIPTextConfig(**VIT_B32_TEXT)
        cfg._attn_implementation = "eager"
        model = CLIPTextModelWithProjection(cfg)
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{path} is not a CLIP text tower: {len(missing)} missing keys (e.g. {missing[:2]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
            )
        return model
    local = path.is_dir()
    if not local and (path.exists() or weights.startswith((".", "/", "~"))):
        raise ConfigError(f"CLIP weights folder not found: {weights}")
    if not local:
        log.info("loading CLIP text tower from the Hugging Face hub: %s", weights)
    try:
        return CLIPTextModelWithProjection.from_pretrained(
            str(path) if local else weights, local_files_only=local, attn_implementation="eager"
        )
    except OSError as exc:
        raise CheckpointError(f"could not load CLIP text weights from '{weights}': {exc}") from None
