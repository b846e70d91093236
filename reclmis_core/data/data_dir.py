"""Writing a DATA_DIR: a hidden staging folder renamed into place, ``manifest.csv`` and ``dataset.json`` (used by
``prepare``, the synthetic generator and the bundled sample)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import DataError
from .layouts import SPLITS

#: Manifest columns every DATA_DIR has, in this order; ``lesion_labels`` and ``pair`` are optional.
MANIFEST_COLUMNS = ("id", "split", "image", "mask", "note", "height", "width", "source")
OPTIONAL_COLUMNS = ("lesion_labels", "pair")


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty existing DATA_DIR unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: folder exists and is not empty; choose another --out or pass --overwrite")


def make_staging_dir(out: Path) -> Path:
    """A hidden temp folder beside ``out`` (same filesystem, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; the final DATA_DIR gets normal permissions
    return staging


def commit_staging_dir(staging: Path, out: Path) -> None:
    """Move the finished staging folder onto ``out`` (replacing an old one) with renames only."""
    trash = None
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(out, trash)
    os.replace(staging, out)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def write_manifest(staging: Path, rows: list[dict[str, Any]]) -> None:
    """``manifest.csv``: the contract columns, the optional ones some row fills, sorted by split then id."""
    import pandas as pd

    cols = list(MANIFEST_COLUMNS) + [c for c in OPTIONAL_COLUMNS if any(r.get(c) for r in rows)]
    df = pd.DataFrame(rows, columns=cols)
    order = {s: i for i, s in enumerate(SPLITS)}
    df = df.sort_values(by=["split", "id"], key=lambda c: c.map(order) if c.name == "split" else c, kind="stable")
    df.to_csv(staging / "manifest.csv", index=False)


def write_dataset_json(staging: Path, data: dict[str, Any]) -> None:
    """``dataset.json``: the report of how the DATA_DIR was made."""
    (staging / "dataset.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
