"""What ``reclmis notes`` is asked (:class:`NotesOptions`) and what it finds (:class:`NoteRow`, :class:`NotesResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..layouts import Problem
from ..note_text import STYLES

LUNG_MODES = ("auto", "none")  # or a folder of lung masks
EMPTY_MODES = ("note", "skip")
VOLUME_MODES = ("slice", "volume")


@dataclass
class NotesOptions:
    """Knobs of :func:`write_notes` (mirrors the CLI flags)."""

    layout: str = "auto"  # (str) source layout: auto (detected) or a name registered in data.layouts.LAYOUTS
    style: str = "qata"  # (str) qata | mosmed | plain (see note_text)
    lungs: str = "auto"  # (str) auto (estimated from the image) | none (image frame) | a folder of lung masks
    min_area: float = 0.001  # (float) smallest infected area: pixels, or a share of the image when < 1
    span_share: float = 0.5  # (float) an area also covers a zone holding at least this share of its pixels (0.5: its main zone only, both on a tie)
    empty: str = "note"  # (str) images with an empty mask: note ("No pulmonary infection.") | skip
    volume_mode: str = "slice"  # (str) volumes: slice (one note per slice) | volume (one note per volume)
    window: str | None = None  # (str) CT window for the lung estimate (default: the lung window)
    workers: int = 0  # (int) processes; 0 = all CPU cores, 1 = in-process

    def validate(self) -> None:
        for name, value, allowed in (("style", self.style, STYLES), ("empty", self.empty, EMPTY_MODES),
                                     ("volume mode", self.volume_mode, VOLUME_MODES)):
            if value not in allowed:
                raise DataError(f"unknown {name} '{value}'; choose one of {', '.join(allowed)}")
        if self.lungs not in LUNG_MODES and not Path(self.lungs).is_dir():
            raise DataError(f"--lungs '{self.lungs}' is neither auto, none nor a folder of lung masks")
        if self.min_area < 0:
            raise DataError(f"--min-area must be >= 0, got {self.min_area}")
        if not 0.0 < self.span_share <= 1.0:
            raise DataError(f"--span-share must lie in (0, 1], got {self.span_share}")


@dataclass
class NoteRow:
    """One generated note (one image, one volume slice, or one volume)."""

    id: str
    split: str
    image: str  # (str) image path as found in the source
    mask: str  # (str) mask path
    note: str
    areas: list[list[int]]  # (list) zone codes of each infected area
    lungs: str  # (str) estimated | given | none
    slice: int | None = None  # (int) display slice index (volumes described per slice)
    source_note: str = ""  # (str) the source's own note, if any (only --check reads it)

    @property
    def zones(self) -> set[int]:
        return {c for a in self.areas for c in a}


@dataclass
class NotesResult:
    """What :func:`generate_notes` found."""

    layout: str
    source: str
    rows: list[NoteRow]
    problems: list[Problem]
    skipped_empty: int = 0
    seconds: float = 0.0
    check: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, "source": self.source, "n_notes": len(self.rows),
                "skipped_empty": self.skipped_empty, "problems": [p.to_dict() for p in self.problems],
                "seconds": round(self.seconds, 2), **({"check": self.check} if self.check else {}), **self.extra}
