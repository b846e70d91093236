"""One record -> its note rows and problems (2-D image or volume); runs in worker processes, so tasks and
results are plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ..arrays import binarize
from ..intensity import to_uint8
from ..layouts import find_companion
from ..note_text import format_note
from ..readers import read_image, read_mask, read_mask_volume
from ..readers.nifti import NIFTI_EXTS
from ..readers.raster import RASTER_EXTS
from .lungs import LungGeometry, estimate_lung_field, lung_geometry
from .options import LUNG_MODES
from .zones import describe_areas, left_on_image_right, min_area_pixels, superior_positions, zone_map_2d


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


def notes_2d(task: dict[str, Any]) -> dict[str, Any]:
    """Rows and problems of one 2-D image (a task dict built by :func:`..generate.generate_notes`)."""
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


def notes_volume(task: dict[str, Any]) -> dict[str, Any]:
    """Rows and problems of one volume: a row per slice, or one for the volume (``volume_mode``)."""
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
