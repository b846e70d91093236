"""Small shared helpers: atomic file writes, silencing known log messages."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file: the rename is atomic on the same filesystem.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            try:
                tmp_path.unlink()
            except OSError as exc:  # never hide the error that got us here behind a cleanup error
                logging.getLogger(__name__).warning("%s: could not remove this temporary file (%s)", tmp_path,
                                                    exc.strerror or exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (colours and styles some libraries put into exception messages)."""
    return _ANSI.sub("", str(text))


class _DropMessages(logging.Filter):
    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        raw, message = str(record.msg), record.getMessage()
        return not any(t in raw or t in message for t in self.texts)


@contextlib.contextmanager
def drop_log_messages(rules: dict[str, tuple[str, ...]]) -> Iterator[None]:
    """Within the block, drop the records of logger ``name`` whose message (raw or formatted) contains one of
    ``rules[name]``: known messages that say nothing about the user's run."""
    filters = [(logging.getLogger(name), _DropMessages(texts)) for name, texts in rules.items()]
    for logger, flt in filters:
        logger.addFilter(flt)
    try:
        yield
    finally:
        for logger, flt in filters:
            logger.removeFilter(flt)


def route_library_logger(name: str) -> None:
    """Remove the stream handlers a library installed on its own logger ``name`` (nibabel writes to stderr from
    ``nibabel.global`` itself), so its records reach the application's handlers like any library's: one line,
    no traceback, under the application's level."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)
