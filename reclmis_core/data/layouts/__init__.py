"""Source layouts: find image/mask/note triples in a folder and name every structural problem with its file.

Each layout registers itself in :data:`LAYOUTS` (``qata``, ``mosmed``, ``ariadne``, ``nifti``, ``dicom``,
``folder``); ``prepare --layout``, ``notes --layout`` and auto-detection all read that registry. A layout's scan
returns a :class:`Scan`: the :class:`Record` list (one per 2-D image, or one per volume for ``nifti``/``dicom``,
sliced later) plus the :class:`Problem` list found without decoding pixels (missing masks, empty notes, duplicate
ids, notes without image, images without note, paths escaping the source folder). Pixel-level checks (corrupt
files, size mismatch, non-binary masks) happen in :mod:`reclmis_core.data.prepare`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...errors import DataError

# The built-in layouts register on import, in this order (the order --help lists them and auto-detection asks
# them in): one import per line, so that a sorter cannot reorder them.
from . import lvit  # noqa: F401, I001
from . import ariadne  # noqa: F401, I001
from . import notes_csv  # noqa: F401, I001
from .base import (
    LAYOUTS,
    PROBLEM_KINDS,
    SPLITS,
    WARNING_KINDS,
    LayoutSpec,
    Problem,
    Record,
    Scan,
    find_companion,
    register_layout,
)

log = logging.getLogger(__name__)


def detect_layout(src: Path) -> str:
    """The first registered layout that claims ``src`` (fallback layouts last); DataError listing what each
    layout looks for when none does."""
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    ordered = sorted(LAYOUTS.items(), key=lambda item: item[1].fallback)  # stable: registration order kept
    for name, spec in ordered:
        if spec.detect(src):
            return name
    expected = "; ".join(f"{spec.expects} for {name}" for name, spec in ordered)
    raise DataError(f"{src}: cannot detect the layout (expected {expected}); pass --layout")


def scan_source(src: str | Path, layout: str = "auto", notes_optional: bool = False) -> Scan:
    """Read the source folder in the given (or detected) layout. Structural problems are in ``scan.problems``.

    ``notes_optional``: folder/nifti/dicom sources may lack notes.csv or some of its rows (``reclmis notes``
    writes them); images without a note become records with an empty note.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    if layout == "auto":
        layout = detect_layout(src)
        log.info("detected layout: %s", layout)
    return LAYOUTS.get(layout).scan(src, notes_optional)


__all__ = [
    "LAYOUTS", "LayoutSpec", "PROBLEM_KINDS", "Problem", "Record", "SPLITS", "Scan", "WARNING_KINDS",
    "detect_layout", "find_companion", "register_layout", "scan_source",
]
