"""Readers that keep geometry: 2-D rasters, DICOM files and series, NIfTI volumes, picked through one registry.

Every reader returns ``(array, ImageMeta)``. The array is what the file holds, in a fixed orientation:

* raster (PNG/JPEG/TIFF/BMP): ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, in the stored dtype
  (``uint8``, ``uint16`` for 16-bit PNG/TIFF, ...). Palette and 1-bit images are expanded.
* DICOM file: ``(H, W)`` float32 modality values (rescale slope/intercept applied, e.g. Hounsfield units for
  CT); colour DICOM comes back as ``(H, W, 3)`` uint8; a multi-frame file as ``(F, H, W)``.
* DICOM series folder / NIfTI volume: ``(Z, H, W)`` float32 *axial display slices*: slice 0 is the most
  inferior, rows run anterior -> posterior and columns patient right -> patient left (radiological view: the
  patient's left is on the image's right, as in a chest radiograph).

:func:`detect_kind` picks the reader from :data:`READERS` by the name's ending (the longest one registered),
then by content (a DICOM file without an ending); a folder goes to the reader that reads folders.
:func:`reclmis_core.data.intensity.to_uint8` turns any of these into 8-bit display images, and
:mod:`reclmis_core.data.writers` undoes what the reader did.

Example:
    >>> arr, meta = read_image("scan.nii.gz")          # (Z, H, W) axial slices
    >>> slices = to_uint8(arr, meta, window="lung")      # uint8, lung window
    >>> write_nifti_mask("scan_mask.nii.gz", pred > 0.5, meta)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..meta import ImageMeta

# The built-in readers register on import, in this order (the order an unsupported-file error lists them in):
# one import per line, so that a sorter cannot reorder them.
from . import raster  # noqa: F401, I001
from . import dicom  # noqa: F401, I001
from . import nifti  # noqa: F401, I001
from .base import READERS, ReaderSpec, ReadOptions, register_reader
from .dicom import read_dicom_seg


def detect_kind(path: str | Path) -> str:
    """The registered reader for ``path`` (``raster``, ``dicom``, ``dicom-series``, ``nifti``, ...); DataError
    naming the formats that are readable otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    specs = [(name, spec) for name, spec in READERS.items() if spec.folder == path.is_dir()]
    if path.is_dir():
        for name, spec in specs:
            if spec.sniff is not None and spec.sniff(path):
                return name
        expected = " or ".join(spec.describe for _, spec in specs) or "nothing: no reader takes folders"
        raise DataError(f"{path}: folder holds no image series that can be read (expected a {expected})")
    name, claim = max(((name, spec.claims_suffix(path.name)) for name, spec in specs), key=lambda t: t[1],
                      default=("", 0))
    if claim:
        return name
    for name, spec in specs:
        if spec.sniff is not None and spec.sniff(path):
            return name
    raise DataError(
        f"{path}: unsupported file type '{path.suffix}' (use {', '.join(spec.describe for _, spec in specs)})"
    )


def strip_suffix(name: str) -> str:
    """``name`` without the longest ending a registered reader reads (``scan.nii.gz`` -> ``scan``)."""
    n = max((spec.claims_suffix(name) for _, spec in READERS.items()), default=0)
    return name[: len(name) - n]


def read_image(path: str | Path, allow_uneven_slices: bool = False, options: ReadOptions | None = None
               ) -> tuple[np.ndarray, ImageMeta]:
    """Read a 2-D image, a DICOM file, a DICOM series folder or a NIfTI volume (see the module docstring).

    Args:
        path: file or DICOM series folder.
        allow_uneven_slices: DICOM series: accept a gap or uneven slice spacing with a warning (the affine is
            then approximate) instead of a DataError.
        options: every reader option at once (its ``allow_uneven_slices`` wins over the argument).

    Returns:
        ``(array, meta)``; volumes come back as ``(Z, H, W)`` axial display slices with ``meta.is_volume``.

    Raises:
        DataError: missing, unreadable or unsupported file, naming the path.
    """
    spec = READERS.get(detect_kind(path))
    return spec.read(Path(path), options or ReadOptions(allow_uneven_slices=allow_uneven_slices))


def read_mask(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read a mask file with :func:`read_image`; colour masks are reduced to their max over channels."""
    arr, meta = read_image(path)
    if arr.ndim == 3 and not meta.is_volume:
        arr = arr.max(axis=2) if meta.mode == "rgb" else arr[..., :3].max(axis=2)
    return arr, meta


def read_mask_volume(path: str | Path, meta: ImageMeta, allow_uneven_slices: bool = False) -> np.ndarray:
    """The mask volume (NIfTI, DICOM series or DICOM SEG) of the volume ``meta`` describes, as its slices."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".dcm":
        return read_dicom_seg(p, meta)
    arr, _ = read_image(p, allow_uneven_slices)
    return arr


__all__ = ["READERS", "ReadOptions", "ReaderSpec", "detect_kind", "read_image", "read_mask", "read_mask_volume",
           "register_reader", "strip_suffix"]
