"""What ``reclmis predict`` is given: inputs (files, folders, globs, DICOM series) and a notes table.

``collect_inputs(args) -> (specs, failures)`` expands the arguments into :class:`InputSpec` items with unique
output stems; :class:`NoteTable` maps each input to its note from a CSV/XLSX.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.readers import detect_kind
from ..data.readers.dicom import DICOM_EXTS, is_dicom
from ..data.readers.dicomdir import dicomdir_files, find_dicomdir
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
    files: list[Path] | None = None  # (list) dicom-series: its files when not all of the folder's (a DICOMDIR's)
    series: str | None = None  # (str) dicom-series: the SeriesInstanceUID to read when the folder holds several


@dataclass
class Failure:
    """An input that produced nothing, and why (one line)."""

    input: str
    error: str
    stem: str | None = None


def stem_of(path: Path) -> str:
    name = path.name
    low = name.lower()
    for ext in (".nii.gz", *NIFTI_EXTS, *RASTER_EXTS, *DICOM_EXTS):
        if low.endswith(ext):
            return name[: -len(ext)] or name
    return path.stem or name


def _series_of(files: list[Path]) -> tuple[dict[str, list[Path]], set[str], list[Path]]:
    """Headers of DICOM ``files``: files per SeriesInstanceUID, the UIDs whose files are all positioned single
    frames (a volume's slices), and the files whose header cannot be read (they fail alone when read)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[str, list[Path]] = {}
    unpositioned: set[str] = set()
    broken: list[Path] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError):
            broken.append(f)  # a broken file does not decide; it is reported when it is read
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        groups.setdefault(uid, []).append(f)
        if "ImagePositionPatient" not in ds or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            unpositioned.add(uid)
    volumes = {uid for uid, fs in groups.items() if len(fs) >= 2 and uid not in unpositioned}
    return groups, volumes, broken


def _dicom_specs(where: Path, files: list[Path], given: str, series: str | None, mixed: bool,
                 indexed: bool = False) -> tuple[list[InputSpec], list[Failure]]:
    """Inputs from the DICOM files of one folder (or the files a DICOMDIR lists, ``indexed``): one series of
    positioned slices is one volume input; in a folder, several series of which one is a volume are an error (as
    docs/dicom.md says) unless ``series`` picks one, while a DICOMDIR gives each series as an input; other files
    (CR/DX radiographs, multi-frame) are one input each."""
    groups, volumes, broken = _series_of(files)
    if series is not None:
        groups = {uid: fs for uid, fs in groups.items() if uid == series}
        broken = []
    specs = [InputSpec(f, "dicom", given) for f in broken]
    if not indexed and len(groups) > 1 and volumes & set(groups):
        listing = ", ".join(f"{uid} ({len(fs)} files)" for uid, fs in sorted(groups.items()))
        return specs, [Failure(str(where), f"{where}: holds {len(groups)} DICOM series ({listing}); put each series "
                               "in its own folder or pick one with --series UID")]
    for uid, fs in sorted(groups.items()):
        if uid in volumes and (indexed or not mixed):
            folder = Path(os.path.commonpath([str(f.parent) for f in fs]))
            specs.append(InputSpec(folder, "dicom-series", given, files=fs if indexed else None,
                                   series=uid if (indexed or series is not None) else None))
        else:
            specs += [InputSpec(f, "dicom", given) for f in fs]
    return specs, []


def _expand_dicomdir(dicomdir: Path, given: str, series: str | None) -> tuple[list[InputSpec], list[Failure]]:
    try:
        files = dicomdir_files(dicomdir)
    except DataError as exc:
        return [], [Failure(str(dicomdir), str(exc))]
    return _dicom_specs(dicomdir, files, given, series, mixed=False, indexed=True)


def _expand_folder(folder: Path, given: str, series: str | None = None) -> tuple[list[InputSpec], list[Failure]]:
    dicomdir = find_dicomdir(folder)
    if dicomdir is not None:  # a CD/USB export: the DICOMDIR is the index of everything below
        return _expand_dicomdir(dicomdir, given, series)
    entries = sorted(folder.iterdir())
    dicoms = [p for p in entries if p.is_file() and is_dicom(p)]
    others = [p for p in entries if p.is_file() and p not in dicoms and not p.name.startswith(".")]
    specs: list[InputSpec] = []
    failures: list[Failure] = []
    if dicoms:
        mixed = any(p.suffix.lower() in RASTER_EXTS or _is_nifti(p) for p in others)
        found, failed = _dicom_specs(folder, dicoms, given, series, mixed)
        specs += found
        failures += failed
    for p in others if series is None else []:
        if p.suffix.lower() in RASTER_EXTS:
            specs.append(InputSpec(p, "raster", given))
        elif _is_nifti(p):
            specs.append(InputSpec(p, "nifti", given))
        else:
            log.debug("skipping %s (not an image type reclmis reads)", p)
    for sub in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        if find_dicomdir(sub) is not None or any(is_dicom(p) for p in sorted(sub.iterdir())[:50] if p.is_file()):
            found, failed = _expand_folder(sub, given, series)
            specs += found
            failures += failed
    return sorted(specs, key=lambda s: str(s.path)), failures


def _is_nifti(path: Path) -> bool:
    low = path.name.lower()
    return low.endswith(".nii") or low.endswith(".nii.gz")


def collect_inputs(args: Sequence[str | Path], series: str | None = None) -> tuple[list[InputSpec], list[Failure]]:
    """Expand files, folders and glob patterns into input specs with unique stems.

    Folders: images/volumes/DICOM files at the top level (sorted), DICOM series in sub-folders; a folder whose
    DICOM files form one positioned series is one input; a DICOMDIR (a CD/USB export; the file or its folder)
    gives every series it lists. ``series``: only the DICOM series with this SeriesInstanceUID (``--series``).
    A missing path or an empty glob is a failure, as is a file of an unknown type named explicitly; unknown
    files inside folders are skipped.
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
            if path.is_dir() or find_dicomdir(path) is not None:
                found, failed = (_expand_folder(path, text, series) if path.is_dir()
                                 else _expand_dicomdir(path, text, series))
                if not found and not failed:
                    what = (f"no DICOM series {series}" if series is not None
                            else "no PNG/JPEG/TIFF, DICOM or NIfTI files")
                    failed = [Failure(str(path), f"{path}: folder holds {what}")]
                specs += found
                failures += failed
                continue
            try:
                kind = detect_kind(path)
            except DataError as exc:
                failures.append(Failure(str(path), str(exc)))
                continue
            specs.append(InputSpec(path, kind, text))
    seen: set[tuple[Path, str | None]] = set()
    unique = []
    for s in specs:
        key = (s.path.resolve(), s.series)
        if key not in seen:
            seen.add(key)
            unique.append(s)
    assign_stems(unique)
    return unique, failures


def assign_stems(specs: list[InputSpec]) -> None:
    """Give every spec a unique stem: the file's stem; collisions get their parent folders prefixed
    (``a/scan.png`` -> ``a_scan``), then ``_2``, ``_3``... in input order. Deterministic for a given input list."""
    base = [stem_of(s.path) for s in specs]
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


__all__ = ["Failure", "InputSpec", "assign_stems", "collect_inputs"]
