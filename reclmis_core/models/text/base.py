"""The contract every text backend meets.

A backend is a ``TextTower`` module mapping ``(input_ids, attention_mask)`` to per-token features
``(B, L, dim)``, plus a ``NoteTokenizer`` turning notes into those ids. The rest of the model only sees
token features and the mask, so backends swap freely and the ONNX text graph has exactly these inputs.

Both sides describe themselves to the registry (:mod:`.registry`): a tower says how it is built from the config
and a checkpoint's state and which tokenizer it uses; a tokenizer says how an export sidecar stores it
(``kind``, :meth:`NoteTokenizer.export_description`) and how it is rebuilt from that
(:meth:`NoteTokenizer.from_description`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ...data.note_text import read_note, unplaced_levels

if TYPE_CHECKING:
    from ...config_schema import TextConfig

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
    """Base tokenizer: subclasses set ``kind`` and implement ``_encode_one``, ``describe`` and ``from_description``."""

    kind: ClassVar[str]  # how an export sidecar names this tokenizer ("clip-bpe", "bpe-scratch", ...)
    pad_id: int = 0
    model_max_length: int = 512
    reader: str = "raw"  # model.text.reader: what of a note is tokenized (raw: all of it; zones: the zones it names)

    @classmethod
    def from_description(cls, desc: dict[str, Any], folder: Path, max_length: int) -> NoteTokenizer:
        """Rebuild the tokenizer from what :meth:`export_description` wrote into the export ``folder``."""
        raise NotImplementedError

    def export_description(self, folder: Path) -> dict[str, Any]:
        """What an export sidecar stores to rebuild this tokenizer; files it needs are written into ``folder``."""
        return {**self.describe(), "pad_id": int(self.pad_id), "reader": self.reader}

    def read(self, text: str) -> str:
        """The text this tokenizer encodes for ``text`` (the note as written, or the zones it names)."""
        return read_note(text, self.reader)

    def unplaced(self, text: str) -> list[str]:
        """Level words of ``text`` this tokenizer's zone reader skipped, not knowing their side (none for ``raw``)."""
        return unplaced_levels(text) if self.reader == "zones" else []

    def _encode_one(self, text: str) -> list[int]:
        """Full token ids of one note including special tokens, before truncation."""
        raise NotImplementedError

    def _truncate(self, ids: list[int], max_length: int) -> list[int]:
        """Keep the first tokens and the closing special token."""
        return ids[: max_length - 1] + ids[-1:]

    def token_strings(self, text: str, max_length: int) -> list[str]:
        """Readable token strings aligned with the ids (for per-word weights in --explain)."""
        return self._token_strings(self.read(text), max_length)

    def _token_strings(self, text: str, max_length: int) -> list[str]:
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

    def _report_unread(self, texts: Sequence[str], read: Sequence[str]) -> None:
        """Warn once per tokenizer when the zone reader finds nothing in a note (the model then reads no note), and
        once when it skips a level whose side it cannot tell (the model reads the rest)."""
        seen: set[str] = self.__dict__.setdefault("_unread_notes", set())
        new = {t for t, r in zip(texts, read) if not r and t.strip() and t not in seen}
        if new and not seen:
            log.warning("the note reader found no lung zone, side or 'no infection' in %r; the model reads it as no "
                        "note (model.text.reader=zones; warned once, later ones are counted)", next(iter(new)))
        seen.update(new)
        partial: set[str] = self.__dict__.setdefault("_partly_read_notes", set())
        new = {t for t in texts if t not in partial and self.unplaced(t)}
        if new and not partial:
            note = next(iter(new))
            log.warning("the note reader could not tell the side of %s in %r and skipped it; the model reads %r "
                        "(model.text.reader=zones; warned once)", ", ".join(repr(w) for w in self.unplaced(note)),
                        note, self.read(note))
        partial.update(new)

    def unread_count(self) -> int:
        """Distinct notes so far in which the zone reader found nothing."""
        return len(self.__dict__.get("_unread_notes", ()))

    def count(self, text: str) -> int:
        return len(self._encode_one(self.read(text)))

    def __call__(self, texts: Sequence[str], max_length: int, pad_to_max: bool = False) -> TokenBatch:
        """Tokenize notes, pad to the longest in the batch (every note to ``max_length`` with ``pad_to_max``, as
        the reference's fixed 18 tokens), cut at ``max_length`` (counted, never silent)."""
        read = [self.read(t) for t in texts]
        if self.reader != "raw":
            self._report_unread(texts, read)
        rows, cut = [], []
        for text in read:
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
    """Per-token text features. Subclasses set ``dim``, ``tokenizer`` and ``max_positions`` on the instance,
    ``tokenizer_class`` (and ``name_argument``) on the class, and implement :meth:`from_config`."""

    tokenizer_class: ClassVar[type[NoteTokenizer]]  # the tokenizer it uses (export sidecars are rebuilt with it)
    # What ``<name>:<arg>`` carries: "source" (required, kept in model.text.encoder: hf:<id>), "weights" (optional,
    # given as --text-encoder clip:<folder>, stored in model.text.weights) or None (the name takes no argument).
    name_argument: ClassVar[str | None] = None
    dim: int
    tokenizer: NoteTokenizer
    max_positions: int
    pretrained: bool = False  # weights came from a verified pretrained source (not saved in checkpoints)

    @classmethod
    def from_config(cls, cfg: TextConfig, source: str | None, corpus: Sequence[str] | None,
                    state: dict[str, Any]) -> TextTower:
        """The tower for ``cfg``: ``source`` is what follows ``<name>:``; ``corpus`` the training notes;
        ``state`` what :meth:`extra_state` saved with a checkpoint (empty for a new model)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg: TextConfig) -> None:
        """ConfigError for options this tower cannot take (checked with the rest of the config)."""

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:  # (B, L, dim)
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state needed to rebuild the tower (e.g. a learned tokenizer)."""
        return {}
