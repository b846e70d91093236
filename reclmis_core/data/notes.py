"""``notes``: QaTa-style notes from masks, so a segmentation dataset with masks only becomes a guided one.

For every image with a lesion mask the note names the side(s) (patient's left/right), the zones (upper /
middle / lower third of each lung) and the number of infected areas (connected components of the mask of at
least ``min_area`` pixels). Zones need lung fields:

* ``lungs="auto"``: estimated from the image (:func:`estimate_lung_field`): the dark regions inside the body
  after Otsu's threshold (lung window for CT), with the lesion pixels added (a lesion lies in a lung even
  when it hides the lung's darkness). Deterministic, no model.
* ``lungs=<folder>``: lung masks, one per image, found by name like the lesion masks.
* ``lungs="none"``: the image frame itself (left/right halves, thirds of the image height).

Each lung field is split into thirds of its vertical extent; a lesion pixel's side is the half of the image
(left or right of the midline between the two lungs) it lies in, turned into the patient's side from the
file's geometry (:func:`left_on_image_right`). Volumes are described slice by slice or as one volume; both
take the *level* along the patient's cranio-caudal axis (thirds of the lung's extent over the slices), not
the anterior-posterior rows of an axial slice.

Masks that cannot be placed (a lesion on a side where no lung was found, an unknown orientation) are reported
as problems and left out, never guessed.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import DataError
from ..utils import atomic_write_text
from .arrays import binarize, resize_array
from .intensity import to_uint8
from .meta import ImageMeta
from .readers import read_image, read_mask
from .readers.nifti import NIFTI_EXTS
from .readers.raster import RASTER_EXTS
from .layouts import Problem, Record, find_companion, scan_source
from .note_text import (
    LEVELS,
    SIDES,
    STYLES,
    format_note,
    parse_note,
    parse_zones_field,
    zone_code,
    zones_field,
)
from .prepare import ProgressFn, pool_map, read_mask_volume

log = logging.getLogger(__name__)

LUNG_MODES = ("auto", "none")  # or a folder of lung masks
EMPTY_MODES = ("note", "skip")
VOLUME_MODES = ("slice", "volume")
#: Columns of notes.csv, in this order (``slice`` only for volume sources described per slice).
NOTES_COLUMNS = ("image", "mask", "note", "zones", "areas", "lungs", "split")
_WORK = 256  # lung-field estimation works at this side (pixels): fast and independent of the input size
_ERODE = 5  # disk radius (pixels at _WORK) that cuts thin necks between a lung and the outside air
_MIN_LUNG_SHARE = 0.01  # a dark region counts as lung when it covers at least this share of the image


@dataclass
class NotesOptions:
    """Knobs of :func:`write_notes` (mirrors the CLI flags)."""

    layout: str = "auto"  # (str) source layout: auto | qata | mosmed | ariadne | folder | nifti | dicom
    style: str = "qata"  # (str) qata | mosmed | plain (see note_text)
    lungs: str = "auto"  # (str) auto (estimated from the image) | none (image frame) | a folder of lung masks
    min_area: float = 0.001  # (float) smallest infected area: pixels, or a share of the image when < 1
    span_share: float = 0.3  # (float) an area also covers a zone holding at least this share of its pixels
    empty: str = "note"  # (str) images with an empty mask: note ("No pulmonary infection.") | skip
    volume_mode: str = "slice"  # (str) volumes: slice (one note per slice) | volume (one note per volume)
    window: str | None = None  # (str) CT window for the lung estimate (default: the lung window)
    workers: int = 0  # (int) processes; 0 = all CPU cores, 1 = in-process

    def validate(self) -> None:
        for name, value, allowed in (("style", self.style, STYLES), ("empty", self.empty, EMPTY_MODES),
                                     ("volume mode", self.volume_mode, VOLUME_MODES)):
            if value not in allowed:
                raise DataError(f"unknown {name} '{value}'; choose one of {', '.join(allowed)}")
        if self.lungs not in LUNG_MODES and not Path(self.lungs).is_dir():
            raise DataError(f"--lungs '{self.lungs}' is neither auto, none nor a folder of lung masks")
        if self.min_area < 0:
            raise DataError(f"--min-area must be >= 0, got {self.min_area}")
        if not 0.0 < self.span_share <= 1.0:
            raise DataError(f"--span-share must lie in (0, 1], got {self.span_share}")


@dataclass
class NoteRow:
    """One generated note (one image, one volume slice, or one volume)."""

    id: str
    split: str
    image: str  # (str) image path as found in the source
    mask: str  # (str) mask path
    note: str
    areas: list[list[int]]  # (list) zone codes of each infected area
    lungs: str  # (str) estimated | given | none
    slice: int | None = None  # (int) display slice index (volumes described per slice)
    source_note: str = ""  # (str) the source's own note, if any (only --check reads it)

    @property
    def zones(self) -> set[int]:
        return {c for a in self.areas for c in a}


@dataclass
class NotesResult:
    """What :func:`generate_notes` found."""

    layout: str
    source: str
    rows: list[NoteRow]
    problems: list[Problem]
    skipped_empty: int = 0
    seconds: float = 0.0
    check: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, "source": self.source, "n_notes": len(self.rows),
                "skipped_empty": self.skipped_empty, "problems": [p.to_dict() for p in self.problems],
                "seconds": round(self.seconds, 2), **({"check": self.check} if self.check else {}), **self.extra}


# --------------------------------------------------------------------------------------------------
# Geometry: which image side is the patient's left, which slice is superior
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Lung fields and zones (pure functions on arrays)
# --------------------------------------------------------------------------------------------------


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
    dark pixel then joins its nearest eroded region, and the kept regions' holes are filled. Returns a bool array of the input's
    size (all False when no lung is found).
    """
    img = np.asarray(image8)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2).astype(np.uint8)
    h, w = img.shape
    scale = _WORK / max(h, w)
    small = resize_array(img, (max(8, round(h * scale)), max(8, round(w * scale))))
    smooth = ndimage.uniform_filter(small.astype(np.float32), size=3)
    dark = smooth < otsu_threshold(smooth.clip(0, 255).astype(np.uint8))
    disk = _disk(_ERODE)
    core = ndimage.binary_erosion(dark, structure=disk, border_value=1)
    lab, n = ndimage.label(core, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((h, w), dtype=bool)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= _MIN_LUNG_SHARE * lab.size
    keep[border] = False
    keep[0] = False
    # every dark pixel joins its nearest eroded region, so a neck splits between the lung and the outside air
    _, (iy, ix) = ndimage.distance_transform_edt(lab == 0, return_indices=True)
    field_small = ndimage.binary_fill_holes(dark & keep[lab[iy, ix]])
    if field_small.shape != (h, w):
        return resize_array(field_small.astype(np.uint8), (h, w), nearest=True).astype(bool)
    return field_small


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


def describe_areas(mask: np.ndarray, zones: np.ndarray, min_pixels: int, span_share: float = 0.3
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


# --------------------------------------------------------------------------------------------------
# Per record (runs in worker processes)
# --------------------------------------------------------------------------------------------------


def _problem(kind: str, path: Any, message: str, rid: str) -> dict[str, Any]:
    return {"kind": kind, "path": str(path), "message": message, "id": rid, "fatal": True}


def _find_lung_mask(folder: Path, image: Path, rid: str) -> Path | None:
    exts = RASTER_EXTS + NIFTI_EXTS + (".dcm",)
    return find_companion(folder, image, exts) or find_companion(folder, Path(rid), exts)


def _no_lung_message(which: str) -> str:
    return (f"lesion on the image's {which} half but no lung field found there; give lung masks with --lungs DIR "
            "or use --lungs none (image frame) if the images are cropped to the chest")


def _row(task: dict[str, Any], rid: str, areas: list[list[int]], lungs: str, z: int | None,
         source_note: str) -> dict[str, Any]:
    return {"id": rid, "split": task["split"], "image": task["image"], "mask": task["mask"],
            "note": format_note(areas, task["style"]), "areas": areas, "lungs": lungs, "slice": z,
            "source_note": source_note}


def _notes_2d(task: dict[str, Any]) -> dict[str, Any]:
    rid = task["id"]
    out: dict[str, Any] = {"rows": [], "problems": [], "empty": 0}
    try:
        arr, meta = read_image(task["image"])
        if meta.is_volume:
            raise DataError(f"{task['image']}: is a volume; use the nifti/dicom layout")
        img8 = to_uint8(arr, meta, task["window"])
        marr, mmeta = read_mask(task["mask"])
        if mmeta.is_volume:
            raise DataError(f"{task['mask']}: mask is a volume")
        left_on_right = left_on_image_right(meta)
    except DataError as exc:
        out["problems"].append(_problem("unreadable", task["image"], str(exc), rid))
        return out
    if marr.shape[:2] != img8.shape[:2]:
        out["problems"].append(_problem("size_mismatch", task["mask"],
                                        f"mask is {marr.shape[1]}x{marr.shape[0]}, image is "
                                        f"{img8.shape[1]}x{img8.shape[0]}", rid))
        return out
    mask01, _ = binarize(marr)
    if not mask01.any():
        if task["empty"] == "skip":
            out["empty"] = 1
        else:
            out["rows"].append(_row(task, rid, [], "none", None, task["note"]))
        return out
    lung, lungs = _lung_2d(task, img8, rid, out)
    if lung is None:
        return out
    geo = lung_geometry(lung, mask01)
    zones = zone_map_2d(mask01.shape, geo, left_on_right)
    areas, unplaced = describe_areas(mask01, zones, min_area_pixels(task["min_area"], mask01.shape),
                                     task["span_share"])
    if unplaced:
        which = "left" if geo.extents[0] is None else "right"
        out["problems"].append(_problem("no_lung", task["image"], _no_lung_message(which), rid))
        return out
    out["rows"].append(_row(task, rid, areas, lungs, None, task["note"]))
    return out


def _lung_2d(task: dict[str, Any], img8: np.ndarray, rid: str, out: dict[str, Any]
             ) -> tuple[np.ndarray | None, str]:
    """The lung field of a 2-D image and how it was obtained; None (with a problem) when there is none."""
    if task["lungs"] == "none":
        return np.ones(img8.shape[:2], dtype=bool), "none"
    if task["lungs"] == "auto":
        lung = estimate_lung_field(img8)
        if not lung.any():
            out["problems"].append(_problem("no_lung", task["image"], "no lung field found in the image; give "
                                            "lung masks with --lungs DIR or use --lungs none", rid))
            return None, "estimated"
        return lung, "estimated"
    path = _find_lung_mask(Path(task["lungs"]), Path(task["image"]), rid)
    if path is None:
        out["problems"].append(_problem("no_lung", task["image"], f"no lung mask for it in {task['lungs']}", rid))
        return None, "given"
    try:
        larr, _ = read_mask(path)
    except DataError as exc:
        out["problems"].append(_problem("unreadable", path, str(exc), rid))
        return None, "given"
    if larr.shape[:2] != img8.shape[:2]:
        out["problems"].append(_problem("size_mismatch", path, f"lung mask is {larr.shape[1]}x{larr.shape[0]}, "
                                        f"image is {img8.shape[1]}x{img8.shape[0]}", rid))
        return None, "given"
    return larr > 0, "given"


def _notes_volume(task: dict[str, Any]) -> dict[str, Any]:
    vid = task["id"]
    out: dict[str, Any] = {"rows": [], "problems": [], "empty": 0}
    try:
        vol, meta = read_image(task["image"])
        if not meta.is_volume:
            vol = vol[None] if vol.ndim == 2 else vol
        img8 = to_uint8(vol, meta, task["window"])
        img8 = img8[None] if img8.ndim == 2 else img8
        mvol = read_mask_volume(task["mask"], meta)
        mvol = mvol[None] if mvol.ndim == 2 else mvol
        left_on_right = left_on_image_right(meta)
        sup = superior_positions(meta, len(img8))
        lungs_vol = None
        if task["lungs"] not in LUNG_MODES:
            path = _find_lung_mask(Path(task["lungs"]), Path(task["image"]), vid)
            if path is None:
                out["problems"].append(_problem("no_lung", task["image"], f"no lung mask for it in {task['lungs']}",
                                                vid))
                return out
            lungs_vol = read_mask_volume(path, meta) > 0
            if lungs_vol.shape != img8.shape:
                raise DataError(f"{path}: lung mask volume {lungs_vol.shape} differs from the image {img8.shape}")
    except DataError as exc:
        out["problems"].append(_problem("unreadable", task["image"], str(exc), vid))
        return out
    if mvol.shape != img8.shape:
        out["problems"].append(_problem("size_mismatch", task["mask"], f"mask volume {mvol.shape} differs from "
                                        f"image volume {img8.shape}", vid))
        return out
    mask01 = (mvol > 0).astype(np.uint8)
    lungs = {"auto": "estimated", "none": "none"}.get(task["lungs"], "given")
    if task["lungs"] == "none":
        fields = np.ones(img8.shape, dtype=bool)
    elif lungs_vol is not None:
        fields = lungs_vol
    else:
        fields = np.stack([estimate_lung_field(s) for s in img8])
    has_lung = fields.reshape(len(fields), -1).any(axis=1)
    if not has_lung.any():
        if mask01.any():
            out["problems"].append(_problem("no_lung", task["image"], "no lung field found in any slice; give lung "
                                            "masks with --lungs DIR or use --lungs none", vid))
            return out
    # level of each slice: thirds of the lungs' cranio-caudal extent, upper = most superior
    lz = sup[has_lung] if has_lung.any() else sup
    top, bottom = float(lz.max()), float(lz.min())
    slice_level = np.clip(np.floor((top - sup) / max(top - bottom, 1e-9) * 3.0), 0, 2).astype(int)
    if np.ptp(sup) == 0:
        slice_level[:] = 1  # one slice: no cranio-caudal extent to split
    geos = [lung_geometry(fields[z], mask01[z]) for z in range(len(img8))]
    mids = [g.midline for z, g in enumerate(geos) if has_lung[z]]
    midline = float(np.median(mids)) if mids else img8.shape[2] / 2.0
    full = ((0, img8.shape[1] - 1), (0, img8.shape[1] - 1))
    zones = np.stack([
        zone_map_2d(img8.shape[1:], LungGeometry(geos[z].midline if has_lung[z] else midline, full),
                    left_on_right, levels=int(slice_level[z]))
        for z in range(len(img8))
    ])
    if task["lungs"] != "none":  # a lesion must lie in a half of the volume where a lung was found
        halves = np.zeros(img8.shape, dtype=bool)
        cols = np.arange(img8.shape[2])
        for z in np.flatnonzero(has_lung):
            for k, ext in enumerate(geos[z].extents):
                if ext is not None:
                    halves[z][:, (cols >= geos[z].midline) if k else (cols < geos[z].midline)] = True
        zones[~halves] = 0
    min_px = min_area_pixels(task["min_area"], mask01.shape)
    if task["volume_mode"] == "volume":
        if not mask01.any() and task["empty"] == "skip":
            out["empty"] = 1
            return out
        areas, unplaced = describe_areas(mask01, zones, min_px, task["span_share"])
        if unplaced:
            out["problems"].append(_problem("no_lung", task["image"], _no_lung_message("left or right"), vid))
            return out
        out["rows"].append(_row(task, vid, areas, lungs, None, task["note"]))
        return out
    for z in range(len(img8)):
        rid = f"{vid}_s{z:03d}"
        note = task["slice_notes"].get(z, task["note"])
        if not mask01[z].any():
            if task["empty"] == "skip":
                out["empty"] += 1
            else:
                out["rows"].append(_row(task, rid, [], lungs, z, note))
            continue
        areas, unplaced = describe_areas(mask01[z], zones[z], min_px, task["span_share"])
        if unplaced:
            out["problems"].append(_problem("no_lung", task["image"], f"slice {z}: " + _no_lung_message(
                "left or right"), rid))
            continue
        out["rows"].append(_row(task, rid, areas, lungs, z, note))
    return out


# --------------------------------------------------------------------------------------------------
# Driver, CSV, --check
# --------------------------------------------------------------------------------------------------


def generate_notes(src: str | Path, options: NotesOptions | None = None,
                   progress: ProgressFn | None = None) -> NotesResult:
    """Notes for every image with a mask in ``src`` (any layout ``prepare`` reads, or images/ + masks/).

    Args:
        src: source folder; its own notes are kept in ``NoteRow.source_note`` (for :func:`check_notes`).
        options: style, lungs, min_area, span_share, empty, volume_mode, window, workers.
        progress: optional ``progress(stage, done, total)``.

    Returns:
        A :class:`NotesResult`; images that could not be read or placed are in ``problems``.
    """
    t0 = time.perf_counter()
    opt = options or NotesOptions()
    opt.validate()
    src = Path(src)
    scan = scan_source(src, opt.layout, notes_optional=True)
    volumes = scan.volumes
    keep = {"missing_mask", "duplicate_id", "outside_source", "unreadable", "image_without_note"}
    problems = [p for p in scan.problems if p.kind in keep]
    bad = {p.id for p in problems if p.id is not None}
    records: list[Record] = [r for r in scan.records if r.mask is not None and r.id not in bad]
    tasks = [{"id": r.id, "split": r.split, "image": str(r.image), "mask": str(r.mask), "note": r.note,
              "slice_notes": dict(r.slice_notes), "style": opt.style, "lungs": opt.lungs,
              "min_area": opt.min_area, "span_share": opt.span_share, "empty": opt.empty,
              "volume_mode": opt.volume_mode, "window": opt.window} for r in records]
    fn = _notes_volume if volumes else _notes_2d
    rows: list[NoteRow] = []
    empty = 0
    if progress:
        progress("notes", 0, len(tasks))
    step = max(1, len(tasks) // 100)
    for done, res in enumerate(pool_map(fn, tasks, opt.workers, chunksize=16), start=1):
        rows.extend(NoteRow(**r) for r in res["rows"])
        problems.extend(Problem(**p) for p in res["problems"])
        empty += res["empty"]
        if progress and (done % step == 0 or done == len(tasks)):
            progress("notes", done, len(tasks))
    rows.sort(key=lambda r: (r.id, -1 if r.slice is None else r.slice))
    extra = {"style": opt.style, "lungs": opt.lungs, "volume_mode": opt.volume_mode if volumes else None,
             "min_area": opt.min_area, "span_share": opt.span_share}
    return NotesResult(scan.layout, str(src), rows, problems, empty, time.perf_counter() - t0, extra=extra)


def _rel(path: str, base: Path) -> str:
    """``path`` relative to ``base`` when it lies inside it (what ``prepare --layout folder`` needs), else absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)


def notes_csv_text(result: NotesResult, out: Path) -> str:
    """The notes.csv text: image/mask relative to the CSV's folder, zones, areas, lungs, split[, slice]."""
    with_slice = any(r.slice is not None for r in result.rows)
    cols = list(NOTES_COLUMNS) + (["slice"] if with_slice else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    base = out.parent
    for r in result.rows:
        row = {"image": _rel(r.image, base), "mask": _rel(r.mask, base), "note": r.note,
               "zones": zones_field(sorted(r.zones)), "areas": len(r.areas), "lungs": r.lungs, "split": r.split}
        if with_slice:
            row["slice"] = "" if r.slice is None else r.slice
        writer.writerow(row)
    return buf.getvalue()


def write_notes(src: str | Path, out: str | Path, options: NotesOptions | None = None, overwrite: bool = False,
                check: bool = False, progress: ProgressFn | None = None) -> NotesResult:
    """Generate notes for ``src`` and write ``out`` (notes.csv) atomically; see :func:`generate_notes`.

    Raises:
        DataError: ``out`` exists and not ``overwrite``; no note could be generated; unreadable source.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: exists; choose another --out or pass --overwrite")
    if out.is_dir():
        raise DataError(f"{out}: is a folder; --out names the CSV file to write")
    result = generate_notes(src, options, progress)
    if not result.rows:
        first = f"; first problem: {result.problems[0].line()}" if result.problems else ""
        raise DataError(f"{src}: no note could be generated ({len(result.problems)} problems, "
                        f"{result.skipped_empty} empty masks skipped){first}")
    if check:
        result.check = check_notes(result.rows)
    if not Path(src).resolve().is_relative_to(out.parent.resolve()):
        log.warning("%s is not in %s or a folder above it: image paths are written absolute, which "
                    "`prepare --layout folder` refuses; write the CSV into the source folder to prepare it", out, src)
    atomic_write_text(out, notes_csv_text(result, out))
    log.info("wrote %d notes to %s in %.1fs (%d problems, %d empty skipped)", len(result.rows), out,
             result.seconds, len(result.problems), result.skipped_empty)
    return result


def _share(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def check_notes(rows: list[NoteRow], mismatches: int = 50) -> dict[str, Any]:
    """Agreement of generated notes with the source's own notes (parsed with :func:`parse_note`).

    Returns:
        ``n_notes``, ``n_compared`` (source notes that name zones or say "no infection"), ``n_unparsed``,
        ``side`` / ``zones`` / ``count`` (shares of compared notes with the same set of sides, the exact same
        zone set, the same area count; ``count`` over notes that state one), ``n_count_compared`` and the
        first ``mismatches`` disagreements.
    """
    side, zones, count, bad = [], [], [], []
    unparsed = 0
    for r in rows:
        parsed = parse_note(r.source_note) if r.source_note else None
        if parsed is None:
            unparsed += bool(r.source_note)
            continue
        gen_sides = {SIDES[(c - 1) // 3] for c in r.zones}
        ok_side, ok_zones = gen_sides == parsed.sides, r.zones == parsed.zones
        side.append(ok_side)
        zones.append(ok_zones)
        ok_count = True
        if parsed.count is not None:
            ok_count = len(r.areas) == parsed.count
            count.append(ok_count)
        if not (ok_side and ok_zones and ok_count) and len(bad) < mismatches:
            bad.append({"id": r.id, "source_note": r.source_note, "note": r.note,
                        "source_zones": zones_field(sorted(parsed.zones)), "zones": zones_field(sorted(r.zones))})
    return {"n_notes": len(rows), "n_compared": len(side), "n_unparsed": unparsed, "side": _share(side),
            "zones": _share(zones), "count": _share(count), "n_count_compared": len(count), "mismatches": bad}


__all__ = [
    "NotesOptions", "NoteRow", "NotesResult", "generate_notes", "write_notes", "check_notes", "notes_csv_text",
    "estimate_lung_field", "lung_geometry", "zone_map_2d", "describe_areas", "otsu_threshold",
    "left_on_image_right", "superior_positions", "min_area_pixels", "LungGeometry", "parse_zones_field",
    "zone_code", "LEVELS",
]
