"""DICOM: one file (``(H, W)`` float32 modality values; colour as ``(H, W, 3)`` uint8; multi-frame ``(F, H, W)``),
a series folder (``(Z, H, W)`` slices, inferior -> superior) and DICOM SEG masks aligned with either."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from ...utils import drop_log_messages
from ..intensity import scale_to_uint8
from ..meta import DicomRef, ImageMeta
from .base import ReadOptions, register_reader

log = logging.getLogger(__name__)

DICOM_EXTS = (".dcm", ".dicom", ".ima")


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom(path: str | Path) -> bool:
    """A DICOM file: a DICOM ending, or the ``DICM`` preamble marker whatever the name."""
    path = Path(path)
    if path.name.upper() == "DICOMDIR":  # the index of a CD/USB export, no image (see readers.dicomdir)
        return False
    return path.is_file() and (path.suffix.lower() in DICOM_EXTS or _looks_like_dicom(path))


def is_dicom_series(folder: Path) -> bool:
    """A folder holding DICOM files (among its first 50 files)."""
    return folder.is_dir() and any(is_dicom(p) for p in sorted(folder.iterdir())[:50] if p.is_file())


def _dcmread(path: Path, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=path.suffix.lower() in DICOM_EXTS)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError) as exc:
        raise DataError(f"{path}: unreadable DICOM file ({exc})") from None


def _syntax_name(ds: Any) -> str:
    """The transfer syntax's name (``JPEG 2000 Image Compression``), for messages."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return str(getattr(uid, "name", uid) or "no transfer syntax")


def _float_pair(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        seq = list(value) if not isinstance(value, (int, float, str)) else [value]
        return float(seq[0]), float(seq[1] if len(seq) > 1 else seq[0])
    except (TypeError, ValueError, IndexError):
        return None


def _first_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value[0]) if not isinstance(value, (int, float, str)) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _str_tuple(value: Any) -> tuple[str, ...] | None:
    if not value:
        return None
    seq = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip().upper() for v in seq)


def _dicom_pixels(ds: Any, path: Path) -> tuple[np.ndarray, ImageMeta]:
    """Modality values of one DICOM dataset (rescale applied) and its meta."""
    from pydicom.pixels import apply_modality_lut

    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = ds.get("SOPClassUID")
        what = f"SOP class {getattr(sop, 'name', sop)}" if sop else "no SOP class"
        raise DataError(f"{path}: DICOM file has no pixel data ({what}): it is not an image")
    try:
        # pydicom logs each decoder's failure with its traceback before raising one error that lists them all;
        # that error is what the user gets (one line), so the per-decoder records are dropped ("" matches all)
        with drop_log_messages({"pydicom.pixels.decoders.base": ("",)}):
            raw = ds.pixel_array
    except (AttributeError, ValueError, RuntimeError, NotImplementedError, KeyError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = " ".join([lines[0], "; ".join(lines[1:])]).strip()  # "... all available plugins: a: x; b: y"
        raise DataError(f"{path}: DICOM file has no readable pixel data ({_syntax_name(ds)}: {detail})") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1))
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if samples == 1:
        try:
            arr = np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: cannot apply the DICOM modality LUT ({exc})") from None
        mode = "gray"
    else:
        arr = np.asarray(raw)
        if arr.dtype != np.uint8:
            arr = scale_to_uint8(arr.astype(np.float32))
        mode = "rgb"
    spacing = _float_pair(ds.get("PixelSpacing")) or _float_pair(ds.get("ImagerPixelSpacing"))
    ref = DicomRef(
        study_instance_uid=str(ds.get("StudyInstanceUID", "")) or None,
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")) or None,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")) or None,
        sop_class_uid=str(ds.get("SOPClassUID", "")) or None,
        sop_instance_uids=[str(ds.get("SOPInstanceUID", ""))],
        image_positions=[tuple(float(v) for v in ds.ImagePositionPatient)] if "ImagePositionPatient" in ds else [],
        image_orientation=tuple(float(v) for v in ds.ImageOrientationPatient)
        if "ImageOrientationPatient" in ds
        else None,
        patient_orientation=_str_tuple(ds.get("PatientOrientation")),
        per_frame_positions="PerFrameFunctionalGroupsSequence" in ds,
    )
    if arr.ndim == 4:  # frames of colour pixels: no stack of colour slices has a geometry we can restore
        raise DataError(f"{path}: a colour multi-frame DICOM ({arr.shape[0]} frames of {arr.shape[2]}x{arr.shape[1]} "
                        "RGB) is not supported; export its frames as PNG files and predict those")
    meta = ImageMeta(
        path=str(path),
        kind="dicom",
        shape=tuple(arr.shape),
        original_shape=tuple(raw.shape),
        dtype=str(raw.dtype),
        mode=mode,
        bit_depth=int(ds.get("BitsStored", ds.get("BitsAllocated", 8 * raw.dtype.itemsize))),
        is_volume=arr.ndim == 3 and samples == 1,
        spacing=spacing,
        slice_spacing=_first_float(ds.get("SpacingBetweenSlices")) or _first_float(ds.get("SliceThickness")),
        modality=str(ds.get("Modality", "")) or None,
        photometric=photometric,
        rescale=(slope, intercept),
        window=_float_pair(
            (_first_float(ds.get("WindowCenter")), _first_float(ds.get("WindowWidth")))
            if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
            else None
        ),
        dicom=ref,
        source_files=[str(path)],
    )
    return arr, meta


@register_reader("dicom", describe="DICOM .dcm", suffixes=DICOM_EXTS, sniff=_looks_like_dicom)
def read_dicom(path: str | Path, options: ReadOptions | None = None) -> tuple[np.ndarray, ImageMeta]:
    """One DICOM file: float32 modality values (H, W) (rescale slope/intercept applied), spacing and UIDs."""
    path = Path(path)
    return _dicom_pixels(_dcmread(path), path)


def _slice_position(ds: Any) -> float | None:
    """Position of a slice along the normal of its plane (mm), from ImagePositionPatient/ImageOrientationPatient."""
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    normal = np.cross(iop[:3], iop[3:])
    return float(ipp @ normal)


#: Slice positions may deviate from a uniform grid by this much (mm, or this fraction of the step if larger).
SLICE_TOLERANCE_MM = 0.01
SLICE_TOLERANCE_REL = 0.01


def _check_slice_geometry(folder: Path, metas: list[ImageMeta], allow_uneven: bool) -> float | None:
    """Same orientation on every slice, and uniform steps between positions (no gap, no uneven spacing).

    Returns the slice step (mm) along the first-to-last direction, None without positions. A mixed orientation
    is always an error; a gap or uneven spacing is one unless ``allow_uneven`` (then a warning: one affine
    cannot describe such a series, so the written NIfTI is approximate).
    """
    refs = [m.dicom for m in metas]
    orients = [r.image_orientation for r in refs if r is not None and r.image_orientation is not None]
    if len(orients) == len(metas) and len(metas) > 1:
        first = np.asarray(orients[0], dtype=np.float64)
        bad = [i for i, o in enumerate(orients) if np.abs(np.asarray(o, dtype=np.float64) - first).max() > 1e-4]
        if bad:
            raise DataError(f"{folder}: slices have different orientations (ImageOrientationPatient of "
                            f"{metas[bad[0]].path} differs from {metas[0].path}); put each stack in its own folder")
    pos = [r.image_positions[0] for r in refs if r is not None and r.image_positions]
    if len(pos) != len(metas) or len(metas) < 2:
        return None
    p = np.asarray(pos, dtype=np.float64)
    steps = np.diff(p, axis=0)
    mean = (p[-1] - p[0]) / (len(p) - 1)
    dist = np.linalg.norm(steps, axis=1)
    step = float(np.linalg.norm(mean))
    dev = np.linalg.norm(steps - mean, axis=1)
    tol = max(SLICE_TOLERANCE_MM, SLICE_TOLERANCE_REL * step)
    if step <= tol or dev.max() > tol:
        k = int(np.argmax(dev))
        what = ("duplicate slice positions" if dist.min() <= tol else
                f"a gap (step {dist.max():.3g} mm where the others are {np.median(dist):.3g} mm: a missing slice?)"
                if dist.max() > 1.5 * np.median(dist) else
                f"uneven slice spacing ({dist.min():.3g}..{dist.max():.3g} mm)")
        msg = (f"{folder}: {what} between {Path(metas[k].path).name} and {Path(metas[k + 1].path).name}; "
               "one NIfTI affine cannot describe this series")
        if not allow_uneven:
            raise DataError(msg + "; complete the series, or pass --allow-uneven-slices to accept an approximate "
                            "affine (mean step first to last)")
        log.warning("%s: accepted (--allow-uneven-slices), the affine uses the mean step %.4g mm", msg, step)
    return step


def read_dicom_series(folder: str | Path, allow_uneven_slices: bool = False, files: Sequence[Path] | None = None,
                      series_uid: str | None = None) -> tuple[np.ndarray, ImageMeta]:
    """A folder with one DICOM series: ``(Z, H, W)`` float32, slices sorted inferior -> superior.

    Slices are ordered by their position along the plane normal (ImagePositionPatient), falling back to
    InstanceNumber. Files that are not DICOM are ignored; several series in one folder is an error unless
    ``series_uid`` picks one, and so are slices of different orientations. A gap (missing slice) or uneven spacing
    is a DataError unless ``allow_uneven_slices`` (then a warning and an approximate affine), never a silently
    wrong affine. ``files``: the series' files (e.g. listed by a DICOMDIR) instead of the folder's.
    """
    folder = Path(folder)
    if files is None:
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and is_dicom(p)]
    if not files:
        raise DataError(f"{folder}: no DICOM files in the series folder")
    datasets = [(_dcmread(Path(p)), Path(p)) for p in files]
    if series_uid is not None:
        datasets = [(ds, p) for ds, p in datasets if str(ds.get("SeriesInstanceUID", "")) == series_uid]
        if not datasets:
            raise DataError(f"{folder}: holds no DICOM series with SeriesInstanceUID {series_uid}")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds, _ in datasets}
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} DICOM series ({', '.join(sorted(series))}); put each "
                        "series in its own folder or pick one with --series UID")
    positions = [_slice_position(ds) for ds, _ in datasets]
    if all(p is not None for p in positions):
        order = np.argsort(np.asarray(positions, dtype=np.float64), kind="stable")
    else:
        order = np.argsort([int(ds.get("InstanceNumber", i)) for i, (ds, _) in enumerate(datasets)], kind="stable")
    slices, metas = [], []
    for i in order:
        ds, p = datasets[int(i)]
        arr, meta = _dicom_pixels(ds, p)
        if arr.ndim != 2:
            raise DataError(f"{p}: expected a single-frame grayscale slice in series {folder}, got {arr.shape}")
        slices.append(arr)
        metas.append(meta)
    shapes = {a.shape for a in slices}
    if len(shapes) > 1:
        raise DataError(f"{folder}: slices differ in size {sorted(shapes)}")
    vol = np.stack(slices).astype(np.float32)
    first = metas[0]
    slice_spacing = _check_slice_geometry(folder, metas, allow_uneven_slices)
    ref = first.dicom or DicomRef()
    ref.sop_instance_uids = [m.dicom.sop_instance_uids[0] for m in metas if m.dicom]
    ref.image_positions = [m.dicom.image_positions[0] for m in metas if m.dicom and m.dicom.image_positions]
    meta = ImageMeta(
        path=str(folder),
        kind="dicom-series",
        shape=tuple(vol.shape),
        original_shape=tuple(vol.shape),
        dtype=first.dtype,
        mode="gray",
        bit_depth=first.bit_depth,
        is_volume=True,
        spacing=first.spacing,
        slice_spacing=slice_spacing or first.slice_spacing,
        modality=first.modality,
        photometric=first.photometric,
        rescale=first.rescale,
        window=first.window,
        dicom=ref,
        source_files=[m.path for m in metas],
    )
    return vol, meta


@register_reader("dicom-series", describe="DICOM series folder", sniff=is_dicom_series, folder=True)
def _read_series(folder: Path, options: ReadOptions) -> tuple[np.ndarray, ImageMeta]:
    return read_dicom_series(folder, options.allow_uneven_slices, options.files, options.series_uid)


#: SOP classes of DICOM Segmentation objects: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


def read_dicom_seg(path: str | Path, reference: ImageMeta) -> np.ndarray:
    """A DICOM SEG file as a ``(Z, H, W)`` uint8 {0, 1} mask aligned with a DICOM image/series read by this module.

    Read with highdicom: binary, fractional and label-map SEGs, any segment numbers. All segments are merged
    (union). Frames are matched to the reference slices by the SOPInstanceUIDs they reference (frame numbers
    for a multi-frame source); slices the SEG does not reference are empty.
    """
    path = Path(path)
    try:
        import highdicom as hd
    except ImportError:
        raise DataError(f"{path}: reading a DICOM SEG mask needs highdicom: pip install 'reclmis[dicom]'") from None
    ds = _dcmread(path)
    if str(ds.get("SOPClassUID", "")) not in SEG_SOP_CLASSES:
        raise DataError(f"{path}: not a DICOM Segmentation Storage object")
    if reference.dicom is None or not reference.dicom.sop_instance_uids:
        raise DataError(f"{path}: a DICOM SEG mask needs a DICOM image series as reference")
    z, h, w = reference.shape if reference.is_volume else (1, *reference.shape[:2])
    uids = reference.dicom.sop_instance_uids
    opts = {"combine_segments": False, "assert_missing_frames_are_empty": True, "ignore_spatial_locations": True}
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        if len(uids) == 1 and z > 1:  # multi-frame source: frames of one instance
            arr = seg.get_pixels_by_source_frame(uids[0], list(range(1, z + 1)), **opts)
        else:
            arr = seg.get_pixels_by_source_instance(uids, **opts)
    except (ValueError, KeyError, AttributeError, TypeError, RuntimeError, IndexError) as exc:
        raise DataError(f"{path}: DICOM SEG does not match {reference.path} ({exc})") from None
    arr = np.asarray(arr)
    if arr.ndim == 4:  # (frames, H, W, segments)
        arr = arr.any(axis=-1)
    if arr.shape != (z, h, w):
        raise DataError(f"{path}: SEG size {arr.shape[1:]} differs from the image size {(h, w)}")
    return (arr > 0).astype(np.uint8)
