"""What every layout reader returns (:class:`Scan` of :class:`Record` and :class:`Problem`), the layout registry,
and the helpers the readers share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DataError
from ...registry import Registry
from ..readers import strip_suffix

SPLITS = ("train", "val", "test")

#: Problem kinds. All are fatal (exit 2 unless --skip-bad) except those in WARNING_KINDS.
PROBLEM_KINDS = {
    "missing_mask": "the mask file does not exist",
    "unreadable": "the file cannot be decoded",
    "size_mismatch": "image and mask differ in size",
    "empty_note": "the note is empty",
    "missing_note": "the note column is missing a value",
    "duplicate_id": "two rows describe the same image",
    "note_without_image": "a note names an image that does not exist",
    "image_without_note": "an image has no note",
    "outside_source": "a path resolves outside the source folder",
    "bad_split": "the split is not train, val or test",
    "non_binary_mask": "the mask holds more than two values; binarised as > 0",
    "exif_orientation": "image and mask carry different EXIF orientations; each is read upright",
}
WARNING_KINDS = frozenset({"non_binary_mask", "exif_orientation"})

_SPLIT_ALIASES = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "ts": "test",
}


@dataclass
class Problem:
    """One thing wrong with the source, named with its file."""

    kind: str  # (str) a key of PROBLEM_KINDS
    path: str  # (str) the file (or sheet row) the problem is about
    message: str  # (str) what is wrong, in words
    id: str | None = None  # (str) affected record id, when there is one
    fatal: bool = True  # (bool) False for warnings (non-binary masks)

    def line(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "path": self.path, "message": self.message, "id": self.id,
                "severity": "error" if self.fatal else "warning"}


@dataclass
class Record:
    """One image (or one volume, for nifti/dicom) with its mask and note."""

    id: str  # (str) unique id; becomes the output file stem
    split: str  # (str) train | val | test
    image: Path  # (Path) image file, DICOM file, DICOM series folder or NIfTI volume
    mask: Path | None  # (Path) mask file/volume/SEG
    note: str  # (str) the clinical note ("" for volumes whose notes are all per slice)
    source: str  # (str) image path relative to the source folder (for the manifest)
    lesion_labels: Path | None = None  # (Path) zone-coded lesion label map (synthetic data)
    slice_notes: dict[int, str] = field(default_factory=dict)  # (dict) volumes: per-slice notes by index


@dataclass
class Scan:
    """What a layout reader found."""

    layout: str
    root: Path
    records: list[Record]
    problems: list[Problem]
    split_rule: str  # how records were assigned to train/val/test, recorded in dataset.json
    note_files: list[str] = field(default_factory=list)
    volumes: bool = False  # records are volumes (nifti/dicom), sliced to 2-D by prepare and notes


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------

#: ``scan(src, notes_optional)``: read a source folder in one layout. ``notes_optional``: a layout whose notes
#: live in notes.csv accepts its absence and images without a row (``reclmis notes`` writes them).
ScanFn = Callable[[Path, bool], Scan]


@dataclass(frozen=True)
class LayoutSpec:
    """One source layout in the registry."""

    scan: ScanFn  # (callable) scan(src, notes_optional) -> Scan
    detect: Callable[[Path], bool]  # (callable) does this folder look like the layout (auto-detection)
    expects: str  # (str) what detection looks for, e.g. "prompt/" (named when nothing fits)
    fallback: bool = False  # (bool) asked only after every other layout declined (a catch-all like folder)


LAYOUTS: Registry[LayoutSpec] = Registry("layout", error=DataError, hint="or --layout auto to detect it")


def register_layout(name: str, *, detect: Callable[[Path], bool], expects: str,
                    fallback: bool = False) -> Callable[[ScanFn], ScanFn]:
    """Decorator registering a scan function as the layout ``name`` (``prepare``/``notes --layout name``).

    Example:
        >>> @register_layout("mylab", detect=lambda src: (src / "cases.json").is_file(), expects="cases.json")
        ... def scan_mylab(src: Path, notes_optional: bool = False) -> Scan: ...
    """

    def add(fn: ScanFn) -> ScanFn:
        LAYOUTS.register(name)(LayoutSpec(fn, detect, expects, fallback))
        return fn

    return add


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def is_inside(path: Path, root: Path) -> bool:
    """True when ``path`` (after resolving symlinks and ``..``) lies inside ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def list_files(folder: Path, exts: Iterable[str]) -> dict[str, Path]:
    """Visible files of ``folder`` whose names end with one of ``exts``, by name (empty if no folder)."""
    exts = tuple(exts)
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(exts)
            and not p.name.startswith(".")}


def hash_split(key: str, val_pct: int = 10, test_pct: int = 10) -> str:
    """Deterministic split from a stable hash of ``key``: 80 % train, 10 % val, 10 % test by default."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < 100 - val_pct - test_pct:
        return "train"
    return "val" if bucket < 100 - test_pct else "test"


HASH_SPLIT_RULE = "no split column: split by sha1(id) % 100 -> <80 train, <90 val, else test"


def norm_split(value: str) -> str | None:
    """``train``/``val``/``test`` from a split cell and its aliases (``validation``, ``dev``, ...); None if unknown."""
    return _SPLIT_ALIASES.get(value.strip().lower())


def dedupe(records: list[Record], problems: list[Problem]) -> list[Record]:
    """Report ids that occur more than once; all their rows are affected (dropped with --skip-bad)."""
    seen: dict[str, list[Record]] = {}
    for rec in records:
        seen.setdefault(rec.id, []).append(rec)
    for rid, recs in seen.items():
        if len(recs) > 1:
            where = ", ".join(f"{r.split}:{r.source}" for r in recs)
            problems.append(Problem("duplicate_id", str(recs[1].image),
                                    f"id '{rid}' occurs {len(recs)} times ({where})", id=rid))
    return records


def find_companion(folder: Path, image: Path, exts: tuple[str, ...]) -> Path | None:
    """The file in ``folder`` that belongs to ``image``: same name, same stem with one of ``exts``,
    ``mask_<name>`` or ``<stem>_mask<ext>`` (masks, lung masks)."""
    stem = strip_suffix(image.name)
    for cand in (folder / image.name, *(folder / f"{stem}{e}" for e in exts), folder / f"mask_{image.name}",
                 *(folder / f"{stem}_mask{e}" for e in exts)):
        if cand.exists():
            return cand
    return None
