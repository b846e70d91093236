"""Cheap checks of a DATA_DIR before any expensive work (no pandas, no torch)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError

MANIFEST = "manifest.csv"


def check_data_dir(data_dir: str | Path, flag: str = "--data") -> Path:
    """``data_dir`` if it is a prepared DATA_DIR (holds manifest.csv); DataError saying which case it is otherwise."""
    path = Path(data_dir)
    if not path.exists():
        raise DataError(f"{flag} {path}: folder not found; make it with 'reclmis prepare SRC --out {path}' "
                        f"(or 'reclmis prepare --synthetic --out {path}')")
    if not path.is_dir():
        raise DataError(f"{flag} {path} is a file; pass the DATA_DIR folder that holds {MANIFEST}")
    if not (path / MANIFEST).is_file():
        raise DataError(f"{path} has no {MANIFEST}; prepare it first: reclmis prepare SRC --out {path}")
    return path
