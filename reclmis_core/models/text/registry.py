"""Pick a text tower by name: ``clip``, ``minilm``, ``scratch``, ``hf:<folder or id>``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...config import TextConfig
from ...errors import ConfigError
from .base import TextTower


def list_text_encoders() -> list[str]:
    return ["clip", "minilm", "scratch", "hf:<folder or hub id>", "none"]


def build_text_tower(
    cfg: TextConfig, corpus: Sequence[str] | None = None, state: dict[str, Any] | None = None
) -> TextTower | None:
    """Build the tower named by ``cfg.encoder``; ``state`` is what ``extra_state()`` saved in a checkpoint."""
    state = state or {}
    name = cfg.encoder
    if name == "none":
        return None
    if name == "clip":
        from .clip import ClipTextTower

        tower: TextTower = ClipTextTower(cfg.weights, state.get("config"))
    elif name == "minilm":
        from .minilm import MiniLMTextTower

        tower = MiniLMTextTower()
    elif name == "scratch":
        from .scratch import ScratchTextTower

        tower = ScratchTextTower(
            cfg.width, cfg.layers, cfg.heads, cfg.vocab_size, tokenizer_json=state.get("tokenizer_json"), corpus=corpus
        )
    elif name.startswith("hf:"):
        from .hf import HFTextTower

        tower = HFTextTower(name[3:])
    else:
        raise ConfigError(f"unknown text encoder '{name}'. Available: {', '.join(list_text_encoders())}")
    if cfg.freeze:
        for p in tower.parameters():
            p.requires_grad_(False)
    return tower
