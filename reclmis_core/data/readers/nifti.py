"""NIfTI volumes as ``(Z, H, W)`` float32 axial display slices; the affine and header stay in the meta."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ...errors import DataError
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


@register_reader("nifti", describe="NIfTI .nii/.nii.gz", suffixes=NIFTI_EXTS)
def read_nifti(path: str | Path, options: ReadOptions | None = None) -> tuple[np.ndarray, ImageMeta]:
    """A 3-D NIfTI volume as ``(Z, H, W)`` float32 axial display slices; affine and header kept in the meta.

    4-D volumes are refused unless the 4th axis has length 1.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ImageFileError, OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: unreadable NIfTI file ({exc})") from None
    require_finite(data, path)
    stored_shape = tuple(int(s) for s in data.shape)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {stored_shape} (split 4-D series first)")
    affine = np.asarray(img.affine, dtype=np.float64)
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
