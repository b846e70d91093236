"""What ``reclmis predict`` is given: inputs (files, folders, globs, DICOM series) and a notes table.

``collect_inputs(args) -> (specs, failures)`` expands the arguments into :class:`InputSpec` items with unique
output stems; :class:`NoteTable` maps each input to its note from a CSV/XLSX.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.readers import detect_kind
from ..data.readers.dicom import DICOM_EXTS, is_dicom
from ..data.readers.nifti import NIFTI_EXTS
from ..data.readers.raster import RASTER_EXTS
from ..errors import DataError

log = logging.getLogger(__name__)


@dataclass
class InputSpec:
    """One thing to predict: a 2-D image, a DICOM file, a DICOM series folder or a NIfTI volume."""

    path: Path  # (Path) file or series folder
    kind: str  # (str) raster | dicom | dicom-series | nifti
    given: str  # (str) the argument it came from (for messages)
    stem: str = ""  # (str) unique output name stem in this run


@dataclass
class Failure:
    """An input that produced nothing, and why (one line)."""

    input: str
    error: str
    stem: str | None = None


def _stem_of(path: Path) -> str:
    name = path.name
    low = name.lower()
    for ext in (".nii.gz", *NIFTI_EXTS, *RASTER_EXTS, *DICOM_EXTS):
        if low.endswith(ext):
            return name[: -len(ext)] or name
    return path.stem or name


def _dicom_folder_kind(folder: Path) -> tuple[str, list[Path]]:
    """``series`` if the DICOM files of ``folder`` form one positioned series, else ``files`` (e.g. CR/DX)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = [p for p in sorted(folder.iterdir()) if p.is_file() and is_dicom(p)]
    if len(files) < 2:
        return "files", files
    uids, positioned, readable = set(), True, 0
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError):
            continue  # a broken file does not decide; it is reported when it is read
        readable += 1
        uids.add(str(ds.get("SeriesInstanceUID", "")))
        positioned &= "ImagePositionPatient" in ds and int(ds.get("NumberOfFrames", 1) or 1) == 1
    return ("series" if readable >= 2 and len(uids) == 1 and positioned else "files"), files


def _expand_folder(folder: Path, given: str) -> list[InputSpec]:
    entries = sorted(folder.iterdir())
    dicoms = [p for p in entries if p.is_file() and is_dicom(p)]
    others = [p for p in entries if p.is_file() and p not in dicoms]
    specs: list[InputSpec] = []
    if dicoms:
        how, files = _dicom_folder_kind(folder)
        if how == "series" and not any(p.suffix.lower() in RASTER_EXTS or _is_nifti(p) for p in others):
            return [InputSpec(folder, "dicom-series", given)]
        specs += [InputSpec(p, "dicom", given) for p in files]
    for p in others:
        if p.name.startswith("."):
            continue
        if p.suffix.lower() in RASTER_EXTS:
            specs.append(InputSpec(p, "raster", given))
        elif _is_nifti(p):
            specs.append(InputSpec(p, "nifti", given))
        else:
            log.debug("skipping %s (not an image type reclmis reads)", p)
    for sub in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        if any(is_dicom(p) for p in sorted(sub.iterdir())[:50] if p.is_file()):
            specs += _expand_folder(sub, given)
    return sorted(specs, key=lambda s: str(s.path))


def _is_nifti(path: Path) -> bool:
    low = path.name.lower()
    return low.endswith(".nii") or low.endswith(".nii.gz")


def collect_inputs(args: Sequence[str | Path]) -> tuple[list[InputSpec], list[Failure]]:
    """Expand files, folders and glob patterns into input specs with unique stems.

    Folders: images/volumes/DICOM files at the top level (sorted), DICOM series in sub-folders; a folder whose
    DICOM files form one positioned series is one input. A missing path or an empty glob is a failure, as is a
    file of an unknown type named explicitly; unknown files inside folders are skipped.
    """
    specs: list[InputSpec] = []
    failures: list[Failure] = []
    for arg in args:
        text = str(arg)
        paths = [Path(text)]
        if not Path(text).exists() and any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                failures.append(Failure(text, f"{text}: no files match this pattern"))
                continue
            paths = [Path(m) for m in matches]
        for path in paths:
            if path.is_dir():
                found = _expand_folder(path, text)
                if not found:
                    failures.append(Failure(str(path), f"{path}: folder holds no PNG/JPEG/TIFF, DICOM or NIfTI files"))
                specs += found
                continue
            try:
                kind = detect_kind(path)
            except DataError as exc:
                failures.append(Failure(str(path), str(exc)))
                continue
            specs.append(InputSpec(path, kind, text))
    seen: set[Path] = set()
    unique = []
    for s in specs:
        key = s.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(s)
    assign_stems(unique)
    return unique, failures


def assign_stems(specs: list[InputSpec]) -> None:
    """Give every spec a unique stem: the file's stem; collisions get their parent folders prefixed
    (``a/scan.png`` -> ``a_scan``), then ``_2``, ``_3``... in input order. Deterministic for a given input list."""
    base = [_stem_of(s.path) for s in specs]
    names = list(base)
    for depth in (1, 2, 3):
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        if all(c == 1 for c in counts.values()):
            break
        for i, s in enumerate(specs):
            if counts[names[i]] > 1:
                parents = [p.name for p in s.path.resolve().parents][:depth][::-1]
                names[i] = "_".join([*(p for p in parents if p), base[i]])
    used: dict[str, int] = {}
    for i, s in enumerate(specs):
        name = names[i]
        if name in used:
            used[name] += 1
            while f"{name}_{used[name]}" in used:
                used[name] += 1
            name = f"{name}_{used[name]}"
        used.setdefault(name, 1)
        s.stem = name


class NoteTable:
    """Notes per input from a CSV/XLSX with an image column (``image``/``input``/``Image``/``path``) and a note
    column (``note``/``Description``/``text``). Rows match an input by path (relative to the CSV's folder or
    absolute), then by file name, then by stem."""

    IMAGE_COLUMNS = ("image", "input", "path", "file", "Image")
    NOTE_COLUMNS = ("note", "notes", "Description", "description", "text")

    def __init__(self, path: str | Path) -> None:
        import pandas as pd

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"notes file not found: {self.path}")
        try:
            if self.path.suffix.lower() in (".xlsx", ".xls"):
                df = pd.read_excel(self.path, dtype=str)
            else:
                df = pd.read_csv(self.path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except UnicodeDecodeError as exc:
            from ..data.tables import not_utf8

            raise DataError(f"{self.path}: {not_utf8(exc)}") from None
        except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"{self.path}: cannot read the notes table ({exc})") from None
        cols = [str(c).strip() for c in df.columns]
        df.columns = cols
        img_col = next((c for c in self.IMAGE_COLUMNS if c in cols), None)
        note_col = next((c for c in self.NOTE_COLUMNS if c in cols), None)
        if img_col is None or note_col is None:
            raise DataError(
                f"{self.path}: needs columns 'image' and 'note' (found: {', '.join(cols) or 'none'})"
            )
        self.by_path: dict[Path, str] = {}
        by_name: dict[str, list[str]] = {}
        by_stem: dict[str, list[str]] = {}
        for key, note in zip(df[img_col].fillna(""), df[note_col].fillna("")):
            key = str(key).strip()
            if not key:
                continue
            note = str(note).strip()
            p = Path(key)
            full = p if p.is_absolute() else self.path.parent / p
            self.by_path[full.resolve()] = note
            self.by_path.setdefault(Path(key).resolve(), note)  # relative to the working directory too
            by_name.setdefault(p.name.rstrip("/"), []).append(note)
            by_stem.setdefault(_stem_of(p), []).append(note)
        self.by_name = {k: v[0] for k, v in by_name.items() if len(v) == 1}
        self.by_stem = {k: v[0] for k, v in by_stem.items() if len(v) == 1}

    def get(self, spec: InputSpec) -> str | None:
        hit = self.by_path.get(spec.path.resolve())
        if hit is None:
            hit = self.by_name.get(spec.path.name)
        if hit is None:
            hit = self.by_stem.get(_stem_of(spec.path))
        return hit
