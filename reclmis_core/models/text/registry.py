"""Text towers by name: ``clip``, ``minilm``, ``scratch``, ``hf:<folder or id>`` (and ``none``: no tower).

One registry answers every question about a text backend: config checks (:func:`check_text_config`), the
``--text-encoder`` spelling (:func:`text_config_keys`), building a tower for training or from a checkpoint's
state (:func:`build_text_tower`), and the tokenizer an export sidecar describes (:func:`tokenizer_description`)
and rebuilds (:func:`build_tokenizer`).

Example:
    >>> @register_text_encoder("bow")
    ... class BagOfWordsTower(TextTower):
    ...     tokenizer_class = WhitespaceTokenizer  # a NoteTokenizer with kind = "whitespace"
    ...     @classmethod
    ...     def from_config(cls, cfg, source, corpus, state):
    ...         return cls(cfg.width, vocabulary=state.get("vocabulary") or vocabulary_of(corpus))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ...config_schema import TextConfig
from ...data.note_text import read_note
from ...data.reference import fill_note
from ...errors import CheckpointError, ConfigError
from ...registry import Registry
from .base import NoteTokenizer, TextTower, TokenBatch

NO_TEXT = "none"  # model.text.encoder for the image-only model (no tower)


def _label(name: str, cls: type[TextTower]) -> str:
    """How a config names the tower: ``hf:<folder or hub id>`` for one that needs a source."""
    return f"{name}:<folder or hub id>" if cls.name_argument == "source" else name


TEXT_ENCODERS: Registry[type[TextTower]] = Registry(
    "text encoder", error=ConfigError, hint=f"or {NO_TEXT} for the image-only model", label=_label
)
T = TypeVar("T", bound=type[TextTower])


def register_text_encoder(name: str) -> Callable[[T], T]:
    """Class decorator adding a :class:`TextTower` subclass as ``model.text.encoder=name``."""
    return TEXT_ENCODERS.register(name)  # type: ignore[return-value]  (the class itself comes back)


def list_text_encoders() -> list[str]:
    """How each registered tower is named in a config, then ``none``."""
    return [*TEXT_ENCODERS.labels(), NO_TEXT]


def text_encoder_class(encoder: str) -> tuple[type[TextTower], str | None]:
    """The registered class of ``model.text.encoder`` and the source after ``<name>:`` (None without one)."""
    name, sep, source = encoder.partition(":")
    cls = TEXT_ENCODERS.get(name)
    if cls.name_argument == "source" and not source:
        raise ConfigError(f"model.text.encoder '{encoder}' needs a source: {name}:<folder or hub id>")
    if sep and cls.name_argument != "source":
        how = "; give weights as model.text.weights" if cls.name_argument == "weights" else ""
        raise ConfigError(f"model.text.encoder '{encoder}': {name} takes no source after ':'{how}")
    return cls, source or None


def check_text_config(cfg: TextConfig) -> None:
    """ConfigError for an unknown or malformed ``cfg.encoder``, or options its tower cannot take."""
    if cfg.encoder != NO_TEXT:
        cls, _ = text_encoder_class(cfg.encoder)
        cls.check_config(cfg)


def text_config_keys(spec: str) -> dict[str, Any]:
    """``model.text`` keys of a ``--text-encoder`` value: ``clip``, ``clip:<folder|file|hub-id>`` (weights),
    ``minilm``, ``scratch``, ``hf:<id>``, ``none``."""
    spec = spec.strip()
    name, sep, arg = spec.partition(":")
    if spec == NO_TEXT:
        return {"encoder": NO_TEXT}
    cls = TEXT_ENCODERS.get(name)
    if sep and cls.name_argument == "weights" and arg:
        return {"encoder": name, "weights": arg}
    text_encoder_class(spec)  # a missing or unexpected source raises here
    return {"encoder": spec}


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
    """Build the tower named by ``cfg.encoder`` (None for ``none``); ``state`` is what ``extra_state()`` saved in a
    checkpoint."""
    if cfg.encoder == NO_TEXT:
        return None
    cls, source = text_encoder_class(cfg.encoder)
    if corpus is not None:  # a tokenizer learnt from the notes learns the text it will be given
        corpus = [read_note(t, cfg.reader) for t in corpus]
    with _quiet_transformers():
        tower = cls.from_config(cfg, source, corpus, state or {})
    tower.tokenizer.reader = cfg.reader
    if cfg.freeze:
        for p in tower.parameters():
            p.requires_grad_(False)
    return tower


def tokenizer_class(kind: str) -> type[NoteTokenizer]:
    """The tokenizer class of a registered tower whose exports name their tokenizer ``kind``."""
    kinds = {c.tokenizer_class.kind: c.tokenizer_class for _, c in TEXT_ENCODERS.items()}
    if kind not in kinds:
        raise CheckpointError(f"unknown tokenizer kind {kind!r} (the registered text encoders use "
                              f"{', '.join(sorted(kinds))}); is the export from a newer reclmis or a plug-in?")
    return kinds[kind]


def tokenizer_description(tokenizer: NoteTokenizer, folder: Path) -> dict[str, Any]:
    """Everything needed to rebuild ``tokenizer`` next to the exported graphs in ``folder`` (see
    :func:`build_tokenizer`); refused for a tokenizer no registered tower uses, which nothing could rebuild."""
    tokenizer_class(type(tokenizer).kind)
    return tokenizer.export_description(folder)


def build_tokenizer(desc: dict[str, Any], folder: Path, max_length: int) -> NoteTokenizer:
    """Rebuild a ``NoteTokenizer`` from an export sidecar's ``text.tokenizer`` section."""
    try:
        cls = tokenizer_class(str(desc.get("kind")))
    except CheckpointError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    tokenizer = cls.from_description(desc, folder, max_length)
    tokenizer.reader = str(desc.get("reader", "raw"))
    return tokenizer


@dataclass(frozen=True)
class ExportedTokenizer:
    """The note tokenizer an export's sidecar describes (its ``text`` section): tokenizer, length, padding and the
    reference's word fill; the ONNX and torch.export runtimes tokenize through it, exactly as training did."""

    tokenizer: NoteTokenizer
    max_length: int
    pad_to_max: bool = False
    eof_fill: int = 0

    @classmethod
    def from_sidecar(cls, text: dict[str, Any], folder: Path) -> ExportedTokenizer:
        max_length = int(text["max_length"])
        return cls(build_tokenizer(text["tokenizer"], folder, max_length), max_length,
                   bool(text.get("pad_to_max", False)), int(text.get("eof_fill", 0)))

    def __call__(self, notes: Sequence[str]) -> TokenBatch:
        """Notes -> token ids + attention mask (int64 (N, L), padded to the longest note or to max_length)."""
        return self.tokenizer([fill_note(n, self.eof_fill) for n in notes], self.max_length, self.pad_to_max)
