"""Plug-in points by name: one small registry class for layouts, readers, image and text encoders, datasets.

A registry maps a name to whatever its kind needs (a function, a class, a spec), in the spirit of timm's
``register_model``/``create_model`` and SMP's encoder table: components register themselves where they are
defined, callers look them up by name, and an unknown name fails with the names available and the nearest one.

Example:
    >>> LAYOUTS: Registry[Callable[[Path], Scan]] = Registry("layout", error=DataError)
    >>> @LAYOUTS.register("folder")
    ... def scan_folder(src: Path) -> Scan: ...
    >>> LAYOUTS.get("foldr")  # DataError: unknown layout 'foldr'. Did you mean 'folder'? Available: folder
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, ReclmisError

T = TypeVar("T")


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the option nearest to ``name`` (difflib), ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Names -> entries of one kind, in registration order.

    Args:
        kind: what the entries are, for messages ("layout", "image encoder").
        error: the exception an unknown name raises (a :class:`ReclmisError`, so the CLI exits 2).
        hint: appended to the unknown-name message, e.g. how to pass something that is not registered.
        label: how the unknown-name message lists an entry (default: its name), e.g. ``hf:<folder or hub id>``.
    """

    def __init__(self, kind: str, error: type[ReclmisError] = ConfigError, hint: str = "",
                 label: Callable[[str, T], str] | None = None) -> None:
        self.kind = kind
        self.error = error
        self.hint = hint
        self.label = label
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding its target under ``name``; a name registered twice raises ``ValueError``."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered ({self._entries[name]!r})")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The entry registered under ``name``; ``self.error`` naming the available ones otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            hint = f"; {self.hint}" if self.hint else ""
            raise self.error(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)} "
                f"Available: {', '.join(self.labels()) or 'none'}{hint}"
            ) from None

    def labels(self) -> list[str]:
        """Registered entries as messages list them (``label``, else the names), in registration order."""
        return [self.label(n, e) if self.label else n for n, e in self._entries.items()]

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
