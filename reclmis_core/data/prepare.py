"""``prepare``: any source layout -> one validated, self-contained DATA_DIR.

DATA_DIR after a successful run::

    manifest.csv           id, split, image, mask, note, height, width, source[, lesion_labels]
    dataset.json           layout, counts per split, problems, dropped ids, split rule, leaks, tool version
    images/<split>/<id>.png        8-bit gray or RGB: native size (default, --size 0) or --size x --size
    masks/<split>/<id>.png         0/255, same grid (nearest)
    lesion_labels/<split>/<id>.png zone codes (only when the source has them)

Native size keeps each image's own pixel grid, with only the size-independent part of the model's geometry
applied (square pixels and a zero-padded square field of view when the spacing is known): the Dataset then
resizes once to the model's side, exactly as predict does from the original file. ``--size N`` stores N x N
images instead (smaller folders); such a DATA_DIR serves models of side N only.

Everything is written into a hidden temp folder beside DATA_DIR and renamed at the end: a failed run leaves
nothing. Pixel work runs in a process pool.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..version import __version__
from ..errors import DataError
from .arrays import binarize, n_values
from .data_dir import check_out_dir, commit_staging_dir, make_staging_dir, write_dataset_json, write_manifest
from .intensity import parse_window, to_uint8
from .layouts import PROBLEM_KINDS, SPLITS, Problem, Record, Scan, scan_source
from .leaks import find_leaks, leak_summary
from .meta import ImageMeta
from .pool import ProgressFn, pool_map
from .preprocess import input_spacing, plan_geometry, to_model_pixels, to_native_pixels
from .readers import read_image, read_mask, read_mask_volume
from .writers import encode_png

log = logging.getLogger(__name__)

@dataclass
class PrepareOptions:
    """Knobs of :func:`prepare_dataset` (mirrors the CLI flags)."""

    layout: str = "auto"  # (str) auto (detected) or a name registered in data.layouts.LAYOUTS
    size: int = 0  # (int) 0: native size (one resize, in the Dataset); N: images resized to N x N
    skip_bad: bool = False  # (bool) drop rows with problems instead of failing
    window: str | None = None  # (str) CT window "C,W" or a preset (lung, mediastinum, bone...); default lung
    keep_empty: bool = False  # (bool) volumes: keep slices without lesion (volume-wide notes only)
    overwrite: bool = False  # (bool) replace a non-empty existing DATA_DIR
    workers: int = 0  # (int) processes for pixel work; 0 = all CPU cores, 1 = in-process
    allow_uneven_slices: bool = False  # (bool) DICOM series: accept a gap/uneven spacing with a warning
    fail_on_leaks: bool = False  # (bool) refuse (write nothing) when images/patients/studies cross splits


@dataclass
class PrepareReport:
    """What :func:`prepare_dataset` did (also written to ``dataset.json``)."""

    layout: str
    source: str
    out: str
    size: int
    counts: dict[str, int]
    problems: list[Problem]
    dropped: list[str]
    split_rule: str
    seconds: float = 0.0
    lesion_labels: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.fatal]

    def problem_counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "source": self.source,
            "size": self.size,
            "native": self.size == 0,
            "counts": {s: self.counts.get(s, 0) for s in SPLITS},
            "n_images": self.n_images,
            "split_rule": self.split_rule,
            "problem_counts": self.problem_counts(),
            "problems": [p.to_dict() for p in self.problems],
            "dropped": self.dropped,
            "lesion_labels": self.lesion_labels,
            "seconds": round(self.seconds, 2),
            "tool": "reclmis",
            "version": __version__,
            **self.extra,
        }


class PrepareError(DataError):
    """Fatal problems were found; ``report`` holds the full list. Nothing was written."""

    def __init__(self, message: str, report: PrepareReport) -> None:
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------------
# Pixel work (runs in worker processes)
# --------------------------------------------------------------------------------------------------


def _emit(task: dict[str, Any], rid: str, img8: np.ndarray, mask01: np.ndarray, labels: np.ndarray | None,
          spacing: tuple[float, float] | None = None, copy_from: dict[str, str] | None = None) -> dict[str, str]:
    """Write image/mask/labels at size x size (native size for size 0) into the staging folder; returns
    manifest paths.

    The geometry is the one predict uses and inverts (:func:`reclmis_core.data.preprocess.plan_geometry`):
    with a known ``spacing``, square pixels and a zero-padded square field of view; without, a direct resize.

    ``copy_from`` names source PNGs that are already exactly what would be written (8-bit, right size, mask
    0/255): they are copied byte for byte instead of re-encoded (the common QaTa case, and most of the speed).
    """
    size = task["size"]
    copy_from = copy_from or {}
    geom = plan_geometry(img8.shape[:2], spacing, size)
    staging, split = Path(task["staging"]), task["split"]
    rel = {"image": f"images/{split}/{rid}.png", "mask": f"masks/{split}/{rid}.png"}
    if labels is not None:
        rel["lesion_labels"] = f"lesion_labels/{split}/{rid}.png"
    arrays = {"image": (img8, False, 1), "mask": (mask01, True, 255)}
    if labels is not None:
        arrays["lesion_labels"] = (labels, True, 1)
    for key, (arr, nearest, scale) in arrays.items():
        target = staging / rel[key]
        if key in copy_from:
            shutil.copyfile(copy_from[key], target)
            continue
        small = to_model_pixels(arr, geom, nearest) if size else to_native_pixels(arr, geom, nearest)
        target.write_bytes(encode_png(small * np.uint8(scale) if scale != 1 else small))
    return rel


def _copyable(path: str, arr: np.ndarray, meta: ImageMeta, size: int, values: tuple[int, ...] | None = None) -> bool:
    """True when the source PNG already is the 8-bit file we would write (size x size, or any 2-D shape for
    native size: a raster image has no spacing, so its native geometry changes nothing)."""
    if not path.lower().endswith(".png") or meta.kind != "raster" or arr.dtype != np.uint8:
        return False
    if (size and arr.shape != (size, size)) or arr.ndim != 2 or meta.bit_depth != 8:
        return False
    if values is not None:
        present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
        return set(present.tolist()) <= set(values)
    return True


def _problem(kind: str, path: Any, message: str, rid: str, fatal: bool = True) -> dict[str, Any]:
    return {"kind": kind, "path": str(path), "message": message, "id": rid, "fatal": fatal}


def _process_2d(task: dict[str, Any]) -> dict[str, Any]:
    rid = task["id"]
    out: dict[str, Any] = {"id": rid, "rows": [], "problems": []}
    try:
        arr, meta = read_image(task["image"])
        if meta.is_volume and meta.kind in ("raster", "dicom"):  # a multi-page TIFF, a multi-frame DICOM
            raise DataError(f"{task['image']}: holds {meta.shape[0]} frames/pages; a row of this layout is one 2-D "
                            "image: split the file into one image per frame")
        if meta.is_volume:
            raise DataError(f"{task['image']}: is a volume; use the nifti/dicom layout")
        img8 = to_uint8(arr, meta, task["window"])
    except DataError as exc:
        out["problems"].append(_problem("unreadable", task["image"], str(exc).split(": ", 1)[-1], rid))
        return out
    try:
        marr, mmeta = read_mask(task["mask"])
        if mmeta.is_volume:
            raise DataError(f"{task['mask']}: mask is a volume")
    except DataError as exc:
        out["problems"].append(_problem("unreadable", task["mask"], str(exc).split(": ", 1)[-1], rid))
        return out
    h, w = img8.shape[:2]
    if marr.shape[:2] != (h, w):
        out["problems"].append(_problem("size_mismatch", task["mask"],
                                        f"mask is {marr.shape[1]}x{marr.shape[0]}, image {task['image']} is {w}x{h}",
                                        rid))
        return out
    if meta.exif_orientation != mmeta.exif_orientation:  # both read upright; a mask drawn on stored pixels is not
        out["problems"].append(_problem("exif_orientation", task["mask"], f"EXIF orientation {mmeta.exif_orientation}"
                                        f", image {meta.exif_orientation}; both read upright", rid, False))
    mask01, non_binary = binarize(marr)
    if non_binary:
        out["problems"].append(_problem("non_binary_mask", task["mask"],
                                        f"{n_values(marr)} distinct values; binarised as > 0", rid, False))
    labels = None
    if task.get("lesion_labels"):
        try:
            larr, lmeta = read_image(task["lesion_labels"])
        except DataError as exc:
            out["problems"].append(_problem("unreadable", task["lesion_labels"], str(exc).split(": ", 1)[-1], rid))
            return out
        if larr.shape[:2] != (h, w):
            out["problems"].append(_problem("size_mismatch", task["lesion_labels"],
                                            f"lesion label map differs in size from image {task['image']}", rid))
            return out
        labels = larr.astype(np.uint8) if larr.ndim == 2 else larr[..., 0].astype(np.uint8)
    size = task["size"]
    copy_from = {}
    if _copyable(task["image"], arr, meta, size) and img8 is arr:
        copy_from["image"] = task["image"]
    if _copyable(task["mask"], marr, mmeta, size, (0, 255)):
        copy_from["mask"] = task["mask"]
    if labels is not None and _copyable(task["lesion_labels"], larr, lmeta, size):
        copy_from["lesion_labels"] = task["lesion_labels"]
    rel = _emit(task, rid, img8, mask01, labels, input_spacing(meta), copy_from)
    out["rows"].append({"id": rid, "split": task["split"], "note": task["note"], "height": h, "width": w,
                        "source": task["source"], **rel})
    return out


def _process_volume(task: dict[str, Any]) -> dict[str, Any]:
    vid = task["id"]
    out: dict[str, Any] = {"id": vid, "rows": [], "problems": []}
    try:
        vol, meta = read_image(task["image"], task["allow_uneven_slices"])
        if not meta.is_volume:
            vol = vol[None] if vol.ndim == 2 else vol
        img8 = to_uint8(vol, meta, task["window"])
        if img8.ndim == 2:
            img8 = img8[None]
    except DataError as exc:
        out["problems"].append(_problem("unreadable", task["image"], str(exc).split(": ", 1)[-1], vid))
        return out
    try:
        mvol = read_mask_volume(task["mask"], meta, task["allow_uneven_slices"])
        if mvol.ndim == 2:
            mvol = mvol[None]
    except DataError as exc:
        out["problems"].append(_problem("unreadable", task["mask"], str(exc).split(": ", 1)[-1], vid))
        return out
    if mvol.shape != img8.shape:
        out["problems"].append(_problem("size_mismatch", task["mask"],
                                        f"mask volume {mvol.shape} differs from image volume {img8.shape} "
                                        f"({task['image']}) after reorientation to axial slices", vid))
        return out
    mask01, non_binary = binarize(mvol)
    if non_binary:
        out["problems"].append(_problem("non_binary_mask", task["mask"], "binarised as > 0", vid, False))
    slice_notes: dict[int, str] = task["slice_notes"]
    for z in sorted(slice_notes):
        if not 0 <= z < len(img8):
            out["problems"].append(_problem("note_without_image", task["image"],
                                            f"note for slice {z}, volume has {len(img8)} slices", f"{vid}_s{z:03d}"))
    if any(p["fatal"] for p in out["problems"]):
        return out
    for z in range(len(img8)):
        has_lesion = bool(mask01[z].any())
        if z in slice_notes:
            note = slice_notes[z]
        elif task["note"] and (has_lesion or task["keep_empty"]):
            note = task["note"]
        else:
            continue
        rid = f"{vid}_s{z:03d}"
        rel = _emit(task, rid, img8[z], mask01[z], None, input_spacing(meta))
        out["rows"].append({"id": rid, "split": task["split"], "note": note, "height": img8.shape[1],
                            "width": img8.shape[2], "source": f"{task['source']}#slice={z}", **rel})
    return out


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def _summary(problems: list[Problem], src: Path) -> str:
    fatal = [p for p in problems if p.fatal]
    counts = Counter(p.kind for p in fatal)
    kinds = ", ".join(f"{n} {k}" for k, n in counts.most_common())
    first = fatal[0]
    return (f"{len(fatal)} problem{'s' if len(fatal) != 1 else ''} in {src} ({kinds}); first: {first.path}: "
            f"{first.message}. Nothing was written; fix them or rerun with --skip-bad to drop the affected rows")


def prepare_dataset(
    src: str | Path,
    out: str | Path,
    options: PrepareOptions | None = None,
    progress: ProgressFn | None = None,
) -> PrepareReport:
    """Read ``src`` in its layout, validate it, and write a self-contained DATA_DIR at ``out``.

    ``src``: a source folder in any layout of :data:`reclmis_core.data.layouts.LAYOUTS`; ``out``: the DATA_DIR
    to create (absent or empty unless ``options.overwrite``); ``progress(stage, done, total)``: optional callback.
    Images, patients and studies found in more than one split are reported (:mod:`reclmis_core.data.leaks`).

    Returns:
        The :class:`PrepareReport` (also in ``out/dataset.json``).

    Raises:
        PrepareError: fatal problems and not ``skip_bad`` (``exc.report.problems`` lists them all); nothing is
            written. DataError: unreadable source structure, bad options, leaks with ``fail_on_leaks``.
    """
    t0 = time.perf_counter()
    opt = options or PrepareOptions()
    src, out = Path(src), Path(out)
    if opt.size != 0 and opt.size < 16:
        raise DataError(f"--size must be 0 (native size) or >= 16, got {opt.size}")
    parse_window(opt.window)  # validate early
    check_out_dir(out, opt.overwrite)
    scan = scan_source(src, opt.layout)
    volumes = scan.volumes
    problems = list(scan.problems)
    bad_ids = {p.id for p in problems if p.fatal and p.id is not None}
    records = [r for r in scan.records if r.mask is not None and (r.id not in bad_ids or not opt.skip_bad)]
    try:
        staging = make_staging_dir(out)
    except OSError as exc:  # parent is a file, read-only, full disk...
        raise DataError(f"{out}: cannot create the output folder ({exc})") from None
    try:
        # Pixel checks run even when structural problems were found, so one run lists everything.
        rows, pixel_problems = _run_pixels(scan, records, staging, opt, progress, volumes)
        problems += pixel_problems
        if any(p.fatal for p in problems) and not opt.skip_bad:
            raise PrepareError(_summary(problems, src), _report(scan, src, out, opt, problems, [], {}, t0))
        bad_ids = {p.id for p in problems if p.fatal and p.id is not None}

        def affected(rid: str) -> bool:
            return rid in bad_ids or (volumes and rid.rsplit("_s", 1)[0] in bad_ids)

        dropped = sorted(bad_ids | {r.id for r in scan.records if r.mask is None})
        rows = [r for r in rows if not affected(r["id"])]
        if not rows:
            raise DataError(f"{src}: no usable images left" + (" after dropping bad rows" if opt.skip_bad else ""))
        counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
        report = _report(scan, src, out, opt, problems, dropped, counts, t0)
        report.lesion_labels = any(r.get("lesion_labels") for r in rows)
        report.extra["leaks"] = leaks = find_leaks(staging, rows, src, opt.workers)  # data/leaks.py
        if leaks["counts"]["total"] and opt.fail_on_leaks:
            raise DataError(leak_summary(leaks, fatal=True))
        write_manifest(staging, rows)
        report.seconds = time.perf_counter() - t0
        write_dataset_json(staging, report.to_dict())
        commit_staging_dir(staging, out)
    except OSError as exc:  # full disk, quota, permissions changed mid-run: nothing is kept
        raise DataError(f"{out}: cannot write the prepared data ({exc}); nothing was written") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if leaks["counts"]["total"]:
        log.warning("%s", leak_summary(leaks))
    for p in report.warnings[:5]:
        log.warning("%s", p.line())
    if len(report.warnings) > 5:
        log.warning("... and %d more warnings (see dataset.json)", len(report.warnings) - 5)
    log.info("prepared %d images (%s) in %.1fs -> %s", report.n_images,
             ", ".join(f"{k} {v}" for k, v in counts.items()), report.seconds, out)
    return report


def _report(scan: Scan, src: Path, out: Path, opt: PrepareOptions, problems: list[Problem], dropped: list[str],
            counts: dict[str, int], t0: float) -> PrepareReport:
    return PrepareReport(
        layout=scan.layout, source=str(src), out=str(out), size=opt.size, counts=counts, problems=problems,
        dropped=dropped, split_rule=scan.split_rule, seconds=time.perf_counter() - t0,
        extra={"window": opt.window, "keep_empty": opt.keep_empty} if scan.volumes else {},
    )


def _run_pixels(scan: Scan, records: list[Record], staging: Path, opt: PrepareOptions,
                progress: ProgressFn | None, volumes: bool) -> tuple[list[dict[str, Any]], list[Problem]]:
    for sub in ("images", "masks") + (("lesion_labels",) if any(r.lesion_labels for r in records) else ()):
        for split in SPLITS:
            (staging / sub / split).mkdir(parents=True, exist_ok=True)
    tasks = [
        {"id": r.id, "split": r.split, "image": str(r.image), "mask": str(r.mask), "note": r.note,
         "source": r.source, "lesion_labels": str(r.lesion_labels) if r.lesion_labels else None,
         "slice_notes": dict(r.slice_notes), "staging": str(staging), "size": opt.size, "window": opt.window,
         "keep_empty": opt.keep_empty, "allow_uneven_slices": opt.allow_uneven_slices}
        for r in records
    ]
    fn = _process_volume if volumes else _process_2d
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    total = len(tasks)
    step = max(1, total // 100)
    if progress:
        progress("images", 0, total)
    for done, res in enumerate(pool_map(fn, tasks, opt.workers, chunksize=32), start=1):
        rows.extend(res["rows"])
        problems.extend(Problem(**p) for p in res["problems"])
        if progress and (done % step == 0 or done == total):
            progress("images", done, total)
    assert all(p.kind in PROBLEM_KINDS for p in problems)
    return rows, problems
