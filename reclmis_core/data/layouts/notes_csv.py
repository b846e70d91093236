"""Layouts described by a notes table: ``images/``, ``masks/`` and ``notes.csv`` (columns ``image``, ``note``,
optional ``mask``, ``split``). ``folder`` holds 2-D images; ``nifti`` (``images/*.nii[.gz]``) and ``dicom``
(``images/<series folder>/``) hold volumes, with masks as NIfTI, DICOM SEG ``.dcm`` or a DICOM series, and an
optional ``slice`` column for per-slice notes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ...errors import DataError
from ..readers import strip_suffix
from ..readers.dicom import DICOM_EXTS, is_dicom
from ..readers.nifti import is_nifti
from ..readers.raster import RASTER_EXTS
from ..tables import clean, column, empty_table, read_table
from .base import (
    HASH_SPLIT_RULE,
    Problem,
    Record,
    Scan,
    dedupe,
    find_companion,
    hash_split,
    is_inside,
    list_files,
    norm_split,
    register_layout,
)

_NOTES_FILES = ("notes.csv", "notes.xlsx")
_VOLUME_MASK_EXTS = (".nii.gz", ".nii", ".dcm")


def _notes_csv(src: Path) -> Path:
    for name in _NOTES_FILES:
        if (src / name).is_file():
            return src / name
    raise DataError(f"{src}: no notes.csv (columns image, note, optional mask, split)")


def _resolve(src: Path, sub: str, value: str) -> Path:
    """A CSV path: relative to SRC/<sub>/ when it exists there, else to SRC."""
    cand = src / sub / value
    return cand if cand.exists() else src / value


def _auto_mask(src: Path, image: Path, exts: tuple[str, ...]) -> Path | None:
    return find_companion(src / "masks", image, exts)


def _read_notes_layout(src: Path, layout: str, volumes: bool, image_ok: Callable[[Path], bool],
                       mask_exts: tuple[str, ...], list_images: Callable[[Path], list[Path]],
                       notes_optional: bool = False) -> Scan:
    """Records from notes.csv (image, note, optional mask, split; volumes also slice) and the images listed."""
    if not (src / "images").is_dir():
        raise DataError(f"{src}: no images/ folder ({layout} layout: images/, masks/, notes.csv)")
    if notes_optional and not any((src / n).is_file() for n in _NOTES_FILES):
        sheet, df = src / "notes.csv", empty_table(["image", "note"])
    else:
        sheet = _notes_csv(src)
        df = read_table(sheet)
    c_img = column(df, sheet, "image", "volume", "series")
    c_note = column(df, sheet, "note", "description", "text")
    c_mask = column(df, sheet, "mask", required=False)
    c_split = column(df, sheet, "split", required=False)
    c_slice = column(df, sheet, "slice", required=False) if volumes else None
    problems: list[Problem] = []
    by_id: dict[str, Record] = {}
    records: list[Record] = []
    used: set[Path] = set()
    for i, row in enumerate(df.to_dict("records")):
        where = f"{sheet}:row {i + 2}"
        name = clean(row[c_img])
        note = clean(row[c_note])
        if not name:
            problems.append(Problem("note_without_image", where, "empty 'image' cell"))
            continue
        image = _resolve(src, "images", name)
        rid = strip_suffix(Path(name.rstrip("/")).name)
        if not is_inside(image, src):
            problems.append(Problem("outside_source", where, f"image '{name}' resolves outside {src}", rid))
            continue
        if not image.exists() or not image_ok(image):
            problems.append(Problem("note_without_image", where, f"no image {image}", rid))
            continue
        used.add(image.resolve())
        split_raw = clean(row[c_split]) if c_split else ""
        split = norm_split(split_raw) if split_raw else hash_split(rid)
        if split is None:
            problems.append(Problem("bad_split", where, f"split '{split_raw}' is not train, val or test", rid))
            split = "train"
        mask_raw = clean(row[c_mask]) if c_mask else ""
        mask: Path | None = _resolve(src, "masks", mask_raw) if mask_raw else _auto_mask(src, image, mask_exts)
        if mask is not None and not is_inside(mask, src):
            problems.append(Problem("outside_source", where, f"mask '{mask_raw}' resolves outside {src}", rid))
            continue
        if mask is None or not mask.exists():
            expected = mask if mask is not None else src / "masks" / image.name
            problems.append(Problem("missing_mask", str(expected), f"no mask for image {image}", rid))
            mask = None
        slice_raw = clean(row[c_slice]) if c_slice else ""
        if c_slice is not None and slice_raw:
            try:
                z = int(float(slice_raw))
            except ValueError:
                problems.append(Problem("note_without_image", where, f"slice '{slice_raw}' is not an integer", rid))
                continue
            if not note:
                problems.append(Problem("empty_note", where, f"empty note for slice {z} of {image.name}",
                                        f"{rid}_s{z:03d}"))
            rec = by_id.get(rid)
            if rec is None:
                rec = Record(rid, split, image, mask, "", str(image.relative_to(src)))
                by_id[rid] = rec
                records.append(rec)
            if z in rec.slice_notes:
                problems.append(Problem("duplicate_id", where, f"slice {z} of {image.name} has two notes",
                                        f"{rid}_s{z:03d}"))
            rec.slice_notes[z] = note
            continue
        if not note:
            problems.append(Problem("empty_note", where, f"empty note for image '{name}'", rid))
        if volumes and rid in by_id and not by_id[rid].note:
            by_id[rid].note = note  # volume-wide note next to per-slice rows
            continue
        rec = Record(rid, split, image, mask, note, str(image.relative_to(src)))
        by_id.setdefault(rid, rec)
        records.append(rec)
    for p in list_images(src):
        if p.resolve() in used:
            continue
        if notes_optional:  # an image with a mask but no note is what `reclmis notes` is for
            rid = strip_suffix(p.name)
            mask = _auto_mask(src, p, mask_exts)
            if mask is None:
                problems.append(Problem("missing_mask", str(src / "masks" / p.name), f"no mask for image {p}", rid))
            records.append(Record(rid, hash_split(rid), p, mask, "", str(p.relative_to(src))))
            continue
        problems.append(Problem("image_without_note", str(p), f"image has no row in {sheet.name}", strip_suffix(p.name)))
    dedupe(records, problems)
    rule = "split column of notes" if c_split else HASH_SPLIT_RULE
    if volumes and not c_split:
        rule += " (per volume, so slices of one scan stay in one split)"
    return Scan(layout, src, records, problems, rule, [str(sheet)], volumes=volumes)


def _nifti_volumes(src: Path) -> list[Path]:
    images = src / "images"
    return [p for p in sorted(images.iterdir()) if p.is_file() and is_nifti(p)] if images.is_dir() else []


def _dicom_series_dirs(src: Path) -> list[Path]:
    images = src / "images"
    if not images.is_dir():
        return []
    return [p for p in sorted(images.iterdir()) if p.is_dir() and any(is_dicom(f) for f in p.iterdir())]


@register_layout("nifti", detect=lambda src: bool(_nifti_volumes(src)), expects="images/*.nii[.gz] + notes.csv")
def scan_nifti(src: Path, notes_optional: bool = False) -> Scan:
    """NIfTI volumes in ``images/``, masks in ``masks/``, notes (per volume or per slice) in notes.csv."""
    return _read_notes_layout(src, "nifti", True, lambda p: p.is_file() and is_nifti(p), _VOLUME_MASK_EXTS,
                              _nifti_volumes, notes_optional)


@register_layout("dicom", detect=lambda src: bool(_dicom_series_dirs(src)),
                 expects="images/<DICOM series folder>/ + notes.csv")
def scan_dicom(src: Path, notes_optional: bool = False) -> Scan:
    """DICOM series folders in ``images/``, masks in ``masks/``, notes (per volume or per slice) in notes.csv."""
    return _read_notes_layout(src, "dicom", True, lambda p: p.is_dir() or is_dicom(p), _VOLUME_MASK_EXTS,
                              _dicom_series_dirs, notes_optional)


@register_layout("folder", detect=lambda src: (src / "images").is_dir(), expects="images/ + masks/ + notes.csv",
                 fallback=True)
def scan_folder(src: Path, notes_optional: bool = False) -> Scan:
    """``images/``, ``masks/`` (same name, ``mask_<name>`` or ``<stem>_mask``), ``notes.csv``.

    With ``notes_optional`` (``reclmis notes``) the notes file may be absent, and images without a row
    become records with an empty note instead of problems.
    """
    exts = RASTER_EXTS + DICOM_EXTS
    return _read_notes_layout(src, "folder", False, lambda p: p.is_file(), exts,
                              lambda s: list(list_files(s / "images", exts).values()), notes_optional)
