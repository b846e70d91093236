"""NIfTI volumes as ``(Z, H, W)`` float32 axial display slices; the affine and header stay in the meta."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...utils import route_library_logger
from ..meta import ImageMeta
from .base import ReadOptions, register_reader, require_finite

NIFTI_EXTS = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_EXTS)


def nifti_to_display(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A volume in stored voxel order -> (Z, H, W) axial display slices: slice 0 the most inferior, rows anterior
    -> posterior, columns patient right -> left (the patient's left on the image's right, as in a radiograph)."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    ornt = ornt_transform(io_orientation(affine), axcodes2ornt(("R", "A", "S")))
    ras = apply_orientation(data, ornt)  # (X: ->R, Y: ->A, Z: ->S)
    # display[z, r, c] = ras[X-1-c, Y-1-r, z]: rows anterior->posterior, cols right->left.
    return np.ascontiguousarray(np.transpose(ras[::-1, ::-1, :], (2, 1, 0)))


def display_to_nifti(slices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nifti_to_display`: (Z, H, W) display slices -> the stored voxel order of a volume with
    this ``affine`` (what the NIfTI mask writer needs)."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    ras = np.transpose(slices, (2, 1, 0))[::-1, ::-1, :]
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(affine))
    return np.ascontiguousarray(apply_orientation(ras, ornt))


def _load(path: Path) -> Any:
    """The NIfTI image at ``path``. A ``.gz`` file is inflated to its end first, so gzip's CRC and length check
    runs: nibabel alone reads only the bytes the header asks for and never reaches them, and a corrupted file
    that still inflates to the right length would give garbage voxels without an error."""
    import nibabel as nib

    route_library_logger("nibabel.global")
    if not path.name.lower().endswith(".gz"):
        return nib.load(str(path))
    raw = gzip.decompress(path.read_bytes())
    if len(raw) < 4:
        raise ValueError("file too short for a NIfTI header")
    nifti2 = 540 in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))  # sizeof_hdr
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    return cls.from_bytes(raw)


def check_affine(affine: np.ndarray, path: str | Path) -> None:
    """DataError unless ``affine`` maps voxels to the world: finite, and each voxel axis with a length and a
    direction of its own (a zero pixdim or a collapsed sform/qform cannot be reoriented)."""
    lin = affine[:3, :3]
    if not np.isfinite(affine).all():
        raise DataError(f"{path}: the NIfTI affine holds NaN or inf; fix the header's sform/qform")
    lengths = np.sqrt((lin**2).sum(axis=0))
    if (lengths <= 0).any():
        axes = ", ".join(str(i) for i in np.flatnonzero(lengths <= 0))
        raise DataError(f"{path}: the NIfTI affine gives voxel axis {axes} zero length (pixdim or sform/qform "
                        "is 0); fix the header")
    if abs(np.linalg.det(lin / lengths)) < 1e-6:
        raise DataError(f"{path}: the NIfTI affine maps two voxel axes onto one direction; fix the header's "
                        "sform/qform")


@register_reader("nifti", describe="NIfTI .nii/.nii.gz", suffixes=NIFTI_EXTS)
def read_nifti(path: str | Path, options: ReadOptions | None = None) -> tuple[np.ndarray, ImageMeta]:
    """A 3-D NIfTI volume as ``(Z, H, W)`` float32 axial display slices; affine and header kept in the meta.

    4-D volumes are refused unless the 4th axis has length 1.
    """
    path = Path(path)
    try:
        img = _load(path)
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:  # ImageFileError is a ValueError
        raise DataError(f"{path}: unreadable NIfTI file ({exc})") from None
    require_finite(data, path)
    stored_shape = tuple(int(s) for s in data.shape)
    if data.size == 0:
        raise DataError(f"{path}: the volume holds no voxels (stored shape {stored_shape})")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {stored_shape} (split 4-D series first)")
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(affine, path)
    slices = nifti_to_display(np.asarray(data, dtype=np.float32), affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # voxel size along each stored axis
    from nibabel.orientations import aff2axcodes, io_orientation

    ornt = io_orientation(affine)
    # stored axis that became R/L (columns), A/P (rows), S/I (slices)
    ax_of = {int(ornt_axis): i for i, ornt_axis in enumerate(ornt[:, 0])}
    meta = ImageMeta(
        path=str(path),
        kind="nifti",
        shape=tuple(slices.shape),
        original_shape=stored_shape,
        dtype=str(img.get_data_dtype()),
        mode="gray",
        bit_depth=8 * np.dtype(img.get_data_dtype()).itemsize,
        is_volume=True,
        spacing=(float(zooms[ax_of[1]]), float(zooms[ax_of[0]])),
        slice_spacing=float(zooms[ax_of[2]]),
        affine=affine,
        header=img.header.copy(),
        axcodes=tuple(aff2axcodes(affine)),
    )
    return slices, meta
