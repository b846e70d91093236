"""Lung fields of chest radiographs and lung-windowed CT slices, and where the two lungs lie (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..arrays import resize_array

_WORK = 256  # lung-field estimation works at this side (pixels): fast and independent of the input size
_ERODE = 5  # disk radius (pixels at _WORK) that cuts thin necks between a lung and the outside air
_MIN_LUNG_SHARE = 0.01  # a dark region counts as lung when it covers at least this share of the image


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of 8-bit values (the level that maximises the between-class variance)."""
    hist = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    between[~np.isfinite(between)] = -1.0
    return float(np.argmax(between)) + 0.5


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy**2 + xx**2) <= radius**2


def estimate_lung_field(image8: np.ndarray) -> np.ndarray:
    """Binary lung field of a chest radiograph or a lung-windowed CT slice (uint8, dark lungs).

    The image is resized to 256 px (long side), smoothed (3x3 mean) and thresholded at Otsu's level. The dark
    mask is eroded by a disk of radius 5 (cutting thin necks between a lung and the air around the body);
    eroded regions touching the image border are dropped, those covering >= 1 % of the image are kept; every
    dark pixel then joins its nearest eroded region, and the kept regions' holes are filled. The air around the
    body may be darker than the lungs, so that Otsu's level falls between the two and a lung is lost: the same
    steps run again with Otsu's level of the pixels inside the body (those not joined to the border-touching
    dark air), and that field is taken when it holds more separate regions. Returns a bool array of the input's size (all False when no lung is found).
    """
    img = np.asarray(image8)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2).astype(np.uint8)
    h, w = img.shape
    scale = _WORK / max(h, w)
    small = resize_array(img, (max(8, round(h * scale)), max(8, round(w * scale))))
    smooth = ndimage.uniform_filter(small.astype(np.float32), size=3)
    dark = smooth < otsu_threshold(smooth.clip(0, 255).astype(np.uint8))
    field_small, outside = _dark_regions(dark)
    if outside.any() and (~outside).any():
        body = smooth[~outside]
        inner, _ = _dark_regions((smooth < otsu_threshold(body.clip(0, 255).astype(np.uint8))) & ~outside)
        if _n_regions(inner) > _n_regions(field_small):
            field_small = inner
    if field_small.shape != (h, w):
        return resize_array(field_small.astype(np.uint8), (h, w), nearest=True).astype(bool)
    return field_small


def _n_regions(field: np.ndarray) -> int:
    return int(ndimage.label(field, structure=np.ones((3, 3)))[1])


def _dark_regions(dark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lung field, outside air) of a dark mask: see :func:`estimate_lung_field`."""
    core = ndimage.binary_erosion(dark, structure=_disk(_ERODE), border_value=1)
    lab, n = ndimage.label(core, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros(dark.shape, dtype=bool), np.zeros(dark.shape, dtype=bool)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= _MIN_LUNG_SHARE * lab.size
    keep[border] = False
    keep[0] = False
    outer = np.zeros(n + 1, dtype=bool)
    outer[border] = True
    outer[0] = False
    # every dark pixel joins its nearest eroded region, so a neck splits between the lung and the outside air
    _, (iy, ix) = ndimage.distance_transform_edt(lab == 0, return_indices=True)
    nearest = lab[iy, ix]
    return ndimage.binary_fill_holes(dark & keep[nearest]), dark & outer[nearest]


@dataclass
class LungGeometry:
    """Where the two lungs of one 2-D image are: the midline column and each image half's row extent."""

    midline: float  # (float) column separating the image-left and image-right lungs
    extents: tuple[tuple[int, int] | None, tuple[int, int] | None]  # (tuple) (top, bottom) rows per image half


def lung_geometry(lung: np.ndarray, lesion: np.ndarray | None = None) -> LungGeometry:
    """Midline and per-half vertical extents from a lung field (the lesion pixels belong to their lung).

    The midline is halfway between the centroids of the two largest lung regions (the image centre when only
    one region is found); on each half the largest lung region (plus the lesion pixels there) gives the rows.
    """
    lung = np.asarray(lung, dtype=bool)
    h, w = lung.shape
    lab, n = ndimage.label(lung, structure=np.ones((3, 3)))
    midline = w / 2.0
    if n >= 2:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        a, b = (np.argsort(-sizes, kind="stable")[:2] + 1).tolist()
        ca = ndimage.center_of_mass(lung, lab, a)[1]
        cb = ndimage.center_of_mass(lung, lab, b)[1]
        if (ca - w / 2.0) * (cb - w / 2.0) < 0 and sizes[b - 1] >= 0.2 * sizes[a - 1]:
            midline = (ca + cb) / 2.0
    cols = np.arange(w)[None, :]
    extents: list[tuple[int, int] | None] = []
    for right_half in (False, True):
        half = (cols >= midline) if right_half else (cols < midline)
        part = lung & half
        lab_p, n_p = ndimage.label(part, structure=np.ones((3, 3)))
        sel = np.zeros_like(part)
        if n_p:
            sizes = np.bincount(lab_p.ravel(), minlength=n_p + 1)
            sizes[0] = 0
            sel = lab_p == int(np.argmax(sizes))
        if not sel.any():
            extents.append(None)
            continue
        if lesion is not None:
            sel = sel | (np.asarray(lesion, dtype=bool) & half)
        rows = np.flatnonzero(sel.any(axis=1))
        extents.append((int(rows[0]), int(rows[-1])))
    return LungGeometry(float(midline), (extents[0], extents[1]))
