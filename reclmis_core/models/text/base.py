"""The contract every text backend meets.

A backend is a ``TextTower`` module mapping ``(input_ids, attention_mask)`` to per-token features
``(B, L, dim)``, plus a ``NoteTokenizer`` turning notes into those ids. The rest of the model only sees
token features and the mask, so backends swap freely and the ONNX text graph has exactly these inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass
class TokenBatch:
    input_ids: Tensor  # (B, L) int64
    attention_mask: Tensor  # (B, L) int64, 1 = real token
    truncated: list[int]  # per note: how many tokens were cut to fit max_length


def truncation_advice(pad_to_max: bool, max_length: int) -> str:
    """What to do about notes cut at ``max_length`` tokens, for the warnings that report them.

    In reference-exact mode (``model.text.pad_to_max``) the length is part of the model: the authors' network was
    trained on exactly ``max_length`` (18) tokens per note, so raising it would feed that model inputs it never saw.
    """
    if pad_to_max:
        return (f"in reference-exact mode (model.text.pad_to_max) every note is {max_length} tokens, as the authors' "
                "model was trained; keep max_length and shorten the notes if their end matters")
    return "raise model.text.max_length to keep them whole (0: as long as the longest training note)"


class NoteTokenizer:
    """Base tokenizer: subclasses implement ``_encode_one`` and ``describe``."""

    pad_id: int = 0
    model_max_length: int = 512

    def _encode_one(self, text: str) -> list[int]:
        """Full token ids of one note including special tokens, before truncation."""
        raise NotImplementedError

    def _truncate(self, ids: list[int], max_length: int) -> list[int]:
        """Keep the first tokens and the closing special token."""
        return ids[: max_length - 1] + ids[-1:]

    def token_strings(self, text: str, max_length: int) -> list[str]:
        """Readable token strings aligned with the ids (for per-word weights in --explain)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON description for export sidecars (kind, files/ids, special tokens)."""
        raise NotImplementedError

    def _report_truncation(self, texts: Sequence[str], cut: list[int], max_length: int, pad_to_max: bool = False
                           ) -> None:
        """Warn once per tokenizer (one per run), on the first cut note; later distinct notes are counted."""
        seen: dict[str, int] = self.__dict__.setdefault("_cut_notes", {})
        new = {t: c for t, c in zip(texts, cut) if c and t not in seen}
        if not new:
            return
        first = not seen
        seen.update(new)
        if first:
            log.warning(
                "notes longer than %d tokens are cut (this batch: %d of %d notes, max %d tokens lost); %s (warned "
                "once; later ones are counted)",
                max_length, sum(1 for c in cut if c), len(texts), max(cut), truncation_advice(pad_to_max, max_length),
            )
        else:
            log.debug("%d more distinct notes cut to %d tokens (%d so far)", len(new), max_length, len(seen))

    def truncation_summary(self) -> tuple[int, int]:
        """(distinct notes cut so far, most tokens lost from one note)."""
        seen: dict[str, int] = self.__dict__.get("_cut_notes", {})
        return len(seen), max(seen.values(), default=0)

    def count(self, text: str) -> int:
        return len(self._encode_one(text))

    def __call__(self, texts: Sequence[str], max_length: int, pad_to_max: bool = False) -> TokenBatch:
        """Tokenize notes, pad to the longest in the batch (every note to ``max_length`` with ``pad_to_max``, as
        the reference's fixed 18 tokens), cut at ``max_length`` (counted, never silent)."""
        rows, cut = [], []
        for text in texts:
            ids = self._encode_one(text)
            if len(ids) > max_length:
                cut.append(len(ids) - max_length)
                ids = self._truncate(ids, max_length)
            else:
                cut.append(0)
            rows.append(ids)
        if any(cut):
            self._report_truncation(texts, cut, max_length, pad_to_max)
        length = max_length if pad_to_max else (max(len(r) for r in rows) if rows else 1)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return TokenBatch(ids, mask, cut)


class TextTower(nn.Module):
    """Per-token text features. Subclasses set ``dim``, ``tokenizer`` and ``max_positions``."""

    dim: int
    tokenizer: NoteTokenizer
    max_positions: int
    pretrained: bool = False  # weights came from a verified pretrained source (not saved in checkpoints)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:  # (B, L, dim)
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state needed to rebuild the tower (e.g. a learned tokenizer)."""
        return {}
