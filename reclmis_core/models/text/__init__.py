"""Text towers behind one interface: ``TextTower`` (an nn.Module) + ``NoteTokenizer``, picked through one registry."""

from .base import NoteTokenizer, TextTower, TokenBatch
from .registry import (
    NO_TEXT,
    TEXT_ENCODERS,
    ExportedTokenizer,
    build_text_tower,
    build_tokenizer,
    check_text_config,
    list_text_encoders,
    register_text_encoder,
    text_config_keys,
    text_encoder_class,
    tokenizer_description,
)

# The built-in towers register on import, in this order (one import per line, so that a sorter keeps it); the
# registry does not import its implementations.
from . import clip  # noqa: E402, F401, I001
from . import minilm  # noqa: E402, F401, I001
from . import scratch  # noqa: E402, F401, I001
from . import hf  # noqa: E402, F401, I001

__all__ = [
    "NO_TEXT", "ExportedTokenizer", "NoteTokenizer", "TEXT_ENCODERS", "TextTower", "TokenBatch", "build_text_tower", "build_tokenizer",
    "check_text_config", "list_text_encoders", "register_text_encoder", "text_config_keys", "text_encoder_class",
    "tokenizer_description",
]
