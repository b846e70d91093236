"""Zones: which image side is the patient's left, which slice is superior, the zone code of every pixel, and
the infected areas of a mask with the zones they cover (pure functions on arrays)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...errors import DataError
from ..meta import ImageMeta
from ..note_text import SIDES
from .lungs import LungGeometry


def left_on_image_right(meta: ImageMeta) -> bool:
    """True when the patient's left lies on the image's right (columns run patient right -> left).

    * NIfTI: always (the reader turns every volume into radiological display slices using the affine).
    * DICOM: from ImageOrientationPatient (the row direction's LPS x; +x is the patient's left), else from
      PatientOrientation (the direction of the rows, ``L`` or ``R``), else the radiographic convention.
    * PNG/JPEG/TIFF: the radiographic convention (patient's left on the image's right), as in QaTa-COV19.

    Raises:
        DataError: the geometry puts the patient's left-right axis along the rows (e.g. a sagittal image).
    """
    if meta.kind == "nifti":
        return True
    ref = meta.dicom
    if ref is not None and ref.image_orientation is not None:
        row_dir = np.asarray(ref.image_orientation[:3], dtype=np.float64)
        if abs(row_dir[0]) < 0.5:
            raise DataError(f"{meta.path}: ImageOrientationPatient {list(ref.image_orientation)} does not run the "
                            "image columns along the patient's left-right axis; cannot name the side")
        return bool(row_dir[0] > 0)
    if ref is not None and ref.patient_orientation:
        first = ref.patient_orientation[0][:1]
        if first in ("L", "R"):
            return first == "L"
        raise DataError(f"{meta.path}: PatientOrientation {list(ref.patient_orientation)} does not run the image "
                        "rows left-right; cannot name the side")
    return True


def superior_positions(meta: ImageMeta, n: int) -> np.ndarray:
    """Position of each display slice along the patient's foot -> head axis (larger = more superior)."""
    if meta.kind == "dicom-series" and meta.dicom is not None and len(meta.dicom.image_positions) == n:
        z = np.asarray([p[2] for p in meta.dicom.image_positions], dtype=np.float64)  # LPS: +z = superior
        if n > 1 and np.ptp(z) == 0:
            raise DataError(f"{meta.path}: all slices share one ImagePositionPatient z; the series is not axial, "
                            "so lung levels cannot be taken along the slices (use --volume-mode slice on 2-D "
                            "exports instead)")
        return z
    return np.arange(n, dtype=np.float64)  # NIfTI display slices run inferior -> superior


def _levels(pos: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Level index 0/1/2 (upper/middle/lower) of positions measured from the top ``lo`` to the bottom ``hi``."""
    span = max(hi - lo, 1e-9)
    return np.clip(np.floor((pos - lo) / span * 3.0), 0, 2).astype(np.int64)


def zone_map_2d(shape: tuple[int, int], geo: LungGeometry, left_on_right: bool,
                levels: np.ndarray | int | None = None) -> np.ndarray:
    """Zone code of every pixel (0 where its half has no lung). ``levels`` overrides the per-row level
    (volumes: one level per slice, from the cranio-caudal position)."""
    h, w = shape
    out = np.zeros((h, w), dtype=np.uint8)
    cols = np.arange(w)
    for right_half, ext in zip((False, True), geo.extents, strict=True):
        if ext is None:
            continue
        half = (cols >= geo.midline) if right_half else (cols < geo.midline)
        side = "left" if right_half == left_on_right else "right"
        if levels is None:
            lv = _levels(np.arange(h, dtype=np.float64), ext[0], ext[1] + 1)
        else:
            lv = np.broadcast_to(np.asarray(levels, dtype=np.int64), (h,))
        codes = (1 + 3 * SIDES.index(side) + lv).astype(np.uint8)
        out[:, half] = codes[:, None]
    return out


def min_area_pixels(min_area: float, shape: tuple[int, ...]) -> int:
    """``min_area`` as pixels: as given when >= 1, else that share of one image (slice)."""
    if min_area >= 1:
        return int(round(min_area))
    return max(1, int(round(min_area * shape[-1] * shape[-2])))


def describe_areas(mask: np.ndarray, zones: np.ndarray, min_pixels: int, span_share: float = 0.5
                   ) -> tuple[list[list[int]], int]:
    """Infected areas of a 2-D or 3-D mask given the zone code of every pixel.

    Each connected component (8-/26-connectivity) of at least ``min_pixels`` pixels is one area; it covers
    the zone holding most of its pixels and any zone holding at least ``span_share`` of them.

    Returns:
        (areas, unplaced): the zone codes of each area (in component order) and the number of areas whose
        pixels mostly lie where no lung was found (those are not in ``areas``).
    """
    mask = np.asarray(mask) > 0
    lab, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    areas: list[list[int]] = []
    unplaced = 0
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        inside = lab[sl] == i
        size = int(inside.sum())
        if size < min_pixels:
            continue
        counts = np.bincount(zones[sl][inside].ravel(), minlength=7)[:7]
        if counts[0] * 2 > size:
            unplaced += 1
            continue
        placed = counts[1:]
        share = placed / max(placed.sum(), 1)
        codes = {int(np.argmax(placed)) + 1} | {int(c) + 1 for c in np.flatnonzero(share >= span_share)}
        areas.append(sorted(codes))
    return areas, unplaced
