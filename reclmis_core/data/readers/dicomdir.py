"""DICOMDIR: the index of a DICOM CD/USB export (``DICOMDIR`` + nested ``PT*/ST*/SE*/IM*`` folders).

The files of such an export have no ending and sit several folders deep, so a folder scan finds nothing; the
DICOMDIR lists every patient, study, series and image. :func:`dicomdir_files` reads it as that index: the image
files it lists (``predict`` then groups them by series, each series one input).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError

DICOMDIR = "DICOMDIR"
#: Directory record types that reference a stored image (not SR, presentation states, waveforms, ...).
IMAGE_RECORDS = ("IMAGE", "RT DOSE", "RT IMAGE", "STEREOMETRIC")


def find_dicomdir(path: Path) -> Path | None:
    """``path`` itself when it is a DICOMDIR file, the DICOMDIR at the top of the folder ``path``, else None."""
    if path.is_file():
        return path if path.name.upper() == DICOMDIR else None
    if path.is_dir():
        return next((p for p in sorted(path.iterdir()) if p.is_file() and p.name.upper() == DICOMDIR), None)
    return None


def dicomdir_files(path: str | Path) -> list[Path]:
    """The image files the DICOMDIR at ``path`` lists (every record with a ReferencedFileID), in its order;
    DataError naming the file when it cannot be read, lists none, or lists a file missing from the export."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        records = list(ds.DirectoryRecordSequence)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError) as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise DataError(f"{path}: unreadable DICOMDIR ({detail})") from None
    files: list[Path] = []
    for rec in records:
        ref = rec.get("ReferencedFileID")
        if ref is None or str(rec.get("DirectoryRecordType", "")).upper() not in IMAGE_RECORDS:
            continue
        parts = [str(ref)] if isinstance(ref, str) else [str(p) for p in ref]
        file = path.parent.joinpath(*parts)
        if not file.is_file():
            raise DataError(f"{path}: lists {'/'.join(parts)}, which is missing from the export")
        files.append(file)
    if not files:
        raise DataError(f"{path}: the DICOMDIR lists no images")
    return files
