"""Text towers behind one interface: ``TextTower`` (an nn.Module) + ``NoteTokenizer``."""

from .base import NoteTokenizer, TextTower, TokenBatch
from .registry import build_text_tower, list_text_encoders

__all__ = ["NoteTokenizer", "TextTower", "TokenBatch", "build_text_tower", "list_text_encoders"]
