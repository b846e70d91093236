"""A small trainable transformer with a BPE vocabulary learned from the training notes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...config_schema import TextConfig
from ...errors import ConfigError
from ..layers import Attention, FeedForward
from .base import NoteTokenizer, TextTower
from .registry import register_text_encoder

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def train_bpe(corpus: Sequence[str], vocab_size: int) -> str:
    """Learn a lower-cased BPE vocabulary from notes; returns the tokenizer as a JSON string."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return tok.to_str()


class ScratchTokenizer(NoteTokenizer):
    """The BPE learned from the training notes; checkpoints and exports carry its JSON."""

    kind = "bpe-scratch"
    pad_id = 0

    @classmethod
    def from_description(cls, desc: dict[str, Any], folder: Path, max_length: int) -> ScratchTokenizer:
        return cls(desc["tokenizer_json"], max_length)

    def export_description(self, folder: Path) -> dict[str, Any]:
        return {**super().export_description(folder), "tokenizer_json": self._tok.to_str()}  # self-contained

    def __init__(self, tokenizer_json: str, model_max_length: int) -> None:
        from tokenizers import Tokenizer

        self.json = tokenizer_json
        self._tok = Tokenizer.from_str(tokenizer_json)
        self.bos = self._tok.token_to_id("[BOS]")
        self.eos = self._tok.token_to_id("[EOS]")
        self.model_max_length = model_max_length

    def _encode_one(self, text: str) -> list[int]:
        return [self.bos, *self._tok.encode(text).ids, self.eos]

    def _token_strings(self, text: str, max_length: int) -> list[str]:
        tokens = ["[BOS]", *self._tok.encode(text).tokens, "[EOS]"]
        return tokens if len(tokens) <= max_length else tokens[: max_length - 1] + tokens[-1:]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer_json": "embedded in config.json (text_state.tokenizer_json)"}

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, 4 * dim, dropout, activation="gelu")

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, key_padding_mask=pad)
        return x + self.ffn(self.norm2(x))


@register_text_encoder("scratch")
class ScratchTextTower(TextTower):
    """A small pre-norm transformer trained with the model; its BPE vocabulary is learned from the notes."""

    tokenizer_class = ScratchTokenizer

    @classmethod
    def from_config(cls, cfg: TextConfig, source: str | None, corpus: Sequence[str] | None,
                    state: dict[str, Any]) -> ScratchTextTower:
        return cls(cfg.width, cfg.layers, cfg.heads, cfg.vocab_size, tokenizer_json=state.get("tokenizer_json"),
                   corpus=corpus)

    @classmethod
    def check_config(cls, cfg: TextConfig) -> None:
        if cfg.width % cfg.heads:
            raise ConfigError("model.text.width must be divisible by model.text.heads")

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        vocab_size: int,
        tokenizer_json: str | None = None,
        corpus: Sequence[str] | None = None,
        max_positions: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if tokenizer_json is None:
            if not corpus:
                raise ConfigError(
                    "the scratch text encoder learns its BPE vocabulary from the training notes: "
                    "build it with the training notes (corpus) or from a checkpoint"
                )
            tokenizer_json = train_bpe(corpus, vocab_size)
        self.tokenizer = ScratchTokenizer(tokenizer_json, max_positions)
        self.dim = width
        self.max_positions = max_positions
        self.embed = nn.Embedding(self.tokenizer.vocab_size, width, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, max_positions, width))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([_Block(width, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        pad = attention_mask == 0
        x = self.embed(input_ids) + self.pos[:, : input_ids.shape[1]]
        for block in self.blocks:
            x = block(x, pad)
        return self.norm(x)

    def extra_state(self) -> dict[str, Any]:
        return {"tokenizer_json": self.tokenizer.json}
