"""Any Hugging Face encoder (CXR-BERT, PubMedBERT, ...) from a local folder or a hub id named by the user."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ...config_schema import TextConfig
from ...errors import CheckpointError, ConfigError
from .base import NoteTokenizer, TextTower
from .registry import register_text_encoder

log = logging.getLogger(__name__)


class AutoTokenizerWrapper(NoteTokenizer):
    """A transformers ``AutoTokenizer``; exports save it in ``tokenizer/`` next to the graphs."""

    kind = "huggingface"

    @classmethod
    def from_description(cls, desc: dict[str, Any], folder: Path, max_length: int) -> AutoTokenizerWrapper:
        from transformers import AutoTokenizer

        local = folder / desc.get("files", "tokenizer")
        if not local.is_dir():
            raise CheckpointError(f"{folder}: tokenizer folder {local.name}/ is missing from the export")
        return cls(AutoTokenizer.from_pretrained(str(local), local_files_only=True), desc["source"])

    def export_description(self, folder: Path) -> dict[str, Any]:
        self._tok.save_pretrained(str(folder / "tokenizer"))
        return {**super().export_description(folder), "files": "tokenizer"}

    def __init__(self, tokenizer: Any, source: str) -> None:
        self._tok = tokenizer
        self._source = source
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.model_max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 4096)

    def _encode_one(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=True, truncation=False)["input_ids"])

    def _token_strings(self, text: str, max_length: int) -> list[str]:
        ids = self._encode_one(text)
        if len(ids) > max_length:
            ids = self._truncate(ids, max_length)
        return list(self._tok.convert_ids_to_tokens(ids))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self._source}


@register_text_encoder("hf")
class HFTextTower(TextTower):
    """``hf:<folder or hub id>``: the encoder's last hidden states (CXR-BERT, PubMedBERT, ...)."""

    tokenizer_class = AutoTokenizerWrapper
    name_argument = "source"

    @classmethod
    def from_config(cls, cfg: TextConfig, source: str | None, corpus: Sequence[str] | None,
                    state: dict[str, Any]) -> HFTextTower:
        if not source:
            raise ConfigError("the hf text encoder needs a source: hf:<folder or hub id>")
        return cls(source)

    def __init__(self, source: str) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        local = Path(source).expanduser().is_dir()
        if not local:
            log.info("loading text encoder '%s' from the Hugging Face hub", source)
        try:
            self.model = AutoModel.from_pretrained(source, local_files_only=local, attn_implementation="eager")
            tok = AutoTokenizer.from_pretrained(source, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"could not load Hugging Face text encoder '{source}': {exc}") from None
        self.tokenizer = AutoTokenizerWrapper(tok, source)
        self.dim = self.model.config.hidden_size
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 512))
        self.pretrained = True
        self.source = source

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
