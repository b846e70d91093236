"""Writers that undo what the readers did: PNG masks at the input's resolution, NIfTI masks with its affine.

Prediction outputs (overlays, probability maps, DICOM SEG) are written by :mod:`reclmis_core.inference`.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from ..utils import atomic_write_bytes, route_library_logger
from .arrays import resize_array
from .meta import ImageMeta
from .readers.nifti import display_to_nifti
from .readers.raster import undo_exif_orientation


def encode_png(arr: np.ndarray, compress_level: int = 1, exif_orientation: int = 1) -> bytes:
    """PNG bytes of a uint8 (H, W) / (H, W, 3) / (H, W, 4) or uint16 (H, W) array; an ``exif_orientation`` other
    than 1 is stored as the PNG's EXIF Orientation (viewers that honour it then turn it as they turn the input)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        img = Image.fromarray(arr) if arr.ndim == 2 else None
        if img is None:
            raise DataError("16-bit PNGs must be single-channel")
    elif arr.dtype == np.uint8:
        img = Image.fromarray(arr)
    elif arr.dtype == np.bool_:
        img = Image.fromarray(arr.astype(np.uint8) * 255)
    else:
        raise DataError(f"cannot write dtype {arr.dtype} as PNG (use uint8 or uint16)")
    buf = io.BytesIO()
    extra = {}
    if exif_orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = int(exif_orientation)
        extra["exif"] = exif
    img.save(buf, format="PNG", compress_level=compress_level, **extra)
    return buf.getvalue()


def write_png(path: str | Path, arr: np.ndarray, compress_level: int = 1) -> None:
    """Atomically write a uint8/uint16 array as PNG (temp file, then rename)."""
    atomic_write_bytes(path, encode_png(arr, compress_level))


def to_stored_orientation(arr: np.ndarray, meta: ImageMeta | None) -> np.ndarray:
    """An upright (H, W[, C]) map of a raster input -> its stored pixel grid (undoes the EXIF Orientation the
    reader applied; other inputs unchanged)."""
    if meta is None or meta.exif_orientation == 1:
        return arr
    return undo_exif_orientation(arr, meta.exif_orientation)


def write_map_png(path: str | Path, arr: np.ndarray, meta: ImageMeta | None) -> None:
    """A per-pixel map (mask, probabilities) of a 2-D input as PNG on the input's stored pixel grid, carrying its
    EXIF Orientation so that viewers show it turned like the input."""
    orientation = meta.exif_orientation if meta is not None else 1
    atomic_write_bytes(path, encode_png(to_stored_orientation(arr, meta), exif_orientation=orientation))


def write_mask_png(path: str | Path, mask: np.ndarray, meta: ImageMeta | None = None, value: int = 255) -> None:
    """Write a binary mask as an 8-bit PNG (background 0, foreground ``value``), atomically.

    Args:
        path: output file (``.png``).
        mask: (H, W) bool/int/float; foreground is ``> 0`` (threshold probabilities before calling).
        meta: when given, the mask is resized (nearest) to the input's own (H, W) if it differs and put back on
            its stored pixel grid (EXIF Orientation undone, and written into the PNG), so the output overlays the
            original image pixel for pixel.
        value: foreground grey level (255 = visible; 1 = label style).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"{path}: a PNG mask must be 2-D, got shape {mask.shape}")
    out = (mask > 0).astype(np.uint8) * np.uint8(value)
    if meta is not None:
        out = resize_array(out, meta.display_shape, nearest=True)
    write_map_png(path, out, meta)


def nifti_bytes(img: Any, gz: bool) -> bytes:
    """Serialise a nibabel Nifti1/Nifti2 image to bytes (gzip-compressed when ``gz``)."""
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=4) if gz else raw


def write_nifti_mask(path: str | Path, mask: np.ndarray, meta: ImageMeta, display: bool = True) -> tuple[int, ...]:
    """Write a mask volume with the input's affine and header (uint8, 0/1), atomically.

    Args:
        path: ``.nii`` or ``.nii.gz``.
        mask: ``(Z, H, W)`` display slices as :func:`read_image` returned them (``display=True``), or a volume
            already in the stored voxel order (``display=False``). Foreground is ``> 0``.
        meta: the meta of the NIfTI input (``meta.affine`` is required). For a DICOM series, an affine is
            derived from the slice positions (LPS -> RAS) so the volume overlays the series in any viewer.

    Returns:
        the shape of the written volume in the file's own voxel order (what ``nib.load(path).shape`` gives): the
        input's stored order for a NIfTI input, (columns, rows, slices) for a DICOM series.
    """
    import nibabel as nib

    route_library_logger("nibabel.global")
    mask = np.asarray(mask)
    if meta.kind == "nifti" and meta.affine is not None:
        affine = meta.affine
        data = display_to_nifti((mask > 0).astype(np.uint8), affine) if display else (mask > 0).astype(np.uint8)
        stored = tuple(meta.original_shape[:3]) if len(meta.original_shape) >= 3 else None
        if stored and data.shape != stored:
            raise DataError(f"{path}: mask volume {data.shape} does not match the input volume {stored}")
        if len(meta.original_shape) == 4:
            data = data[..., None]
        header = meta.header.copy() if meta.header is not None else None
    elif meta.kind == "dicom-series":
        affine = dicom_series_affine(meta)
        # display (Z, H, W) -> (X=cols, Y=rows, Z) in DICOM LPS index order
        data = np.ascontiguousarray(np.transpose((mask > 0).astype(np.uint8), (2, 1, 0)))
        header = None
    else:
        raise DataError(f"{path}: write_nifti_mask needs a NIfTI or DICOM series input, got {meta.kind}")
    # a NIfTI-2 input gets a NIfTI-2 mask: its header cannot go into a NIfTI-1 image
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(data, affine, header=header)
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["descrip"] = b"reclmis mask"
    path = Path(path)
    atomic_write_bytes(path, nifti_bytes(img, gz=str(path).lower().endswith(".gz")))
    return tuple(int(s) for s in img.shape)


def dicom_series_affine(meta: ImageMeta) -> np.ndarray:
    """RAS voxel-to-world affine for (col, row, slice) indices of a DICOM series read by this module."""
    ref = meta.dicom
    if ref is None or ref.image_orientation is None or not ref.image_positions or meta.spacing is None:
        raise DataError(f"{meta.path}: DICOM series lacks orientation/position/spacing; cannot build an affine")
    iop = np.asarray(ref.image_orientation, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]
    dr, dc = meta.spacing
    first = np.asarray(ref.image_positions[0], dtype=np.float64)
    if len(ref.image_positions) > 1:
        step = (np.asarray(ref.image_positions[-1]) - first) / (len(ref.image_positions) - 1)
    else:
        step = np.cross(row_dir, col_dir) * (meta.slice_spacing or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = step
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
