"""Pick a text tower by name: ``clip``, ``minilm``, ``scratch``, ``hf:<folder or id>``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ...config import TextConfig
from ...errors import ConfigError
from .base import TextTower


def list_text_encoders() -> list[str]:
    return ["clip", "minilm", "scratch", "hf:<folder or hub id>", "none"]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Keep transformers' load reports and progress bars out of our output; errors still raise."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def build_text_tower(
    cfg: TextConfig, corpus: Sequence[str] | None = None, state: dict[str, Any] | None = None
) -> TextTower | None:
    """Build the tower named by ``cfg.encoder``; ``state`` is what ``extra_state()`` saved in a checkpoint."""
    if cfg.encoder == "none":
        return None
    with _quiet_transformers():
        tower = _build(cfg, corpus, state or {})
    if cfg.freeze:
        for p in tower.parameters():
            p.requires_grad_(False)
    return tower


def _build(cfg: TextConfig, corpus: Sequence[str] | None, state: dict[str, Any]) -> TextTower:
    name = cfg.encoder
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
    return tower
