"""Readers and writers that keep geometry: 2-D rasters, DICOM files and series, NIfTI volumes.

Every reader returns ``(array, ImageMeta)``. The array is what the file holds, in a fixed orientation:

* raster (PNG/JPEG/TIFF/BMP): ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, in the stored dtype
  (``uint8``, ``uint16`` for 16-bit PNG/TIFF, ...). Palette and 1-bit images are expanded.
* DICOM file: ``(H, W)`` float32 modality values (rescale slope/intercept applied, e.g. Hounsfield units for
  CT); colour DICOM comes back as ``(H, W, 3)`` uint8; a multi-frame file as ``(F, H, W)``.
* DICOM series folder / NIfTI volume: ``(Z, H, W)`` float32 *axial display slices*: slice 0 is the most
  inferior, rows run anterior -> posterior and columns patient right -> patient left (radiological view: the
  patient's left is on the image's right, as in a chest radiograph).

:func:`to_uint8` turns any of these into 8-bit display images (windowing for CT, MONOCHROME1 inversion, 16-bit
scaling). The writers undo what the reader did: :func:`write_mask_png` writes a binary mask at the input's own
resolution, :func:`write_nifti_mask` writes display slices back as a volume with the input's affine and header.

Example:
    >>> arr, meta = read_image("scan.nii.gz")          # (Z, H, W) axial slices
    >>> slices = to_uint8(arr, meta, window="lung")      # uint8, lung window
    >>> write_nifti_mask("scan_mask.nii.gz", pred > 0.5, meta)
"""

from __future__ import annotations

import gzip
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..utils import atomic_write_bytes

log = logging.getLogger(__name__)

RASTER_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_EXTS = (".nii", ".nii.gz")
DICOM_EXTS = (".dcm", ".dicom", ".ima")

#: Named intensity windows (center, width) in Hounsfield units.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft-tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
DEFAULT_CT_WINDOW = "lung"

#: Largest 2-D raster read, in pixels: 8192 x 8192 (67 MP, about 3x a large digital mammogram). Larger files
#: are refused from their header, before any pixel is decoded, so a 10000 x 10000 export cannot exhaust memory
#: (decoding plus float conversion would need several GB); downscale such images first.
MAX_RASTER_PIXELS = 8192 * 8192

Window = str | tuple[float, float] | None


@dataclass
class DicomRef:
    """Identifiers a DICOM SEG writer needs to reference its source (one entry per slice for a series)."""

    study_instance_uid: str | None = None  # (str) StudyInstanceUID
    series_instance_uid: str | None = None  # (str) SeriesInstanceUID
    frame_of_reference_uid: str | None = None  # (str) FrameOfReferenceUID
    sop_class_uid: str | None = None  # (str) SOPClassUID of the source images
    sop_instance_uids: list[str] = field(default_factory=list)  # (list) per returned slice, in slice order
    image_positions: list[tuple[float, float, float]] = field(default_factory=list)  # (list) per slice, mm
    image_orientation: tuple[float, ...] | None = None  # (tuple) ImageOrientationPatient (6 values)
    patient_orientation: tuple[str, ...] | None = None  # (tuple) PatientOrientation (rows, cols), e.g. (L, F)


@dataclass
class ImageMeta:
    """Where an array came from and what undoes the reader's reorientation.

    ``shape`` is the returned array's shape; ``original_shape`` the array as stored on disk (NIfTI voxel order).
    ``spacing`` is the pixel size (row, col) in mm of the returned images/slices, ``None`` when unknown.
    """

    path: str  # (str) file or folder read
    kind: str  # (str) raster | dicom | dicom-series | nifti
    shape: tuple[int, ...]  # (tuple) shape of the returned array
    original_shape: tuple[int, ...]  # (tuple) shape as stored (before reorientation)
    dtype: str  # (str) dtype as stored (uint8, uint16, int16, ...)
    mode: str = "gray"  # (str) gray | rgb | rgba
    bit_depth: int = 8  # (int) bits per sample as stored
    is_volume: bool = False  # (bool) the returned array is (Z, H, W) axial slices
    spacing: tuple[float, float] | None = None  # (tuple) (row, col) pixel size in mm of the returned slices
    slice_spacing: float | None = None  # (float) distance between slices in mm (volumes)
    modality: str | None = None  # (str) DICOM Modality (CT, CR, DX, ...)
    photometric: str | None = None  # (str) DICOM PhotometricInterpretation as stored
    rescale: tuple[float, float] = (1.0, 0.0)  # (tuple) DICOM (slope, intercept) applied by the reader
    window: tuple[float, float] | None = None  # (tuple) (center, width) stored in the DICOM file, if any
    affine: np.ndarray | None = None  # (ndarray) NIfTI 4x4 voxel-to-world affine of the stored volume
    header: Any = None  # (nibabel header) NIfTI header of the input, reused by write_nifti_mask
    axcodes: tuple[str, ...] | None = None  # (tuple) NIfTI orientation codes of the stored axes, e.g. (L, A, S)
    dicom: DicomRef | None = None  # (DicomRef) source identifiers (DICOM only)
    source_files: list[str] = field(default_factory=list)  # (list) DICOM files of a series, in slice order

    @property
    def display_shape(self) -> tuple[int, int]:
        """(H, W) of one returned 2-D image or slice."""
        return (self.shape[-2], self.shape[-1]) if self.is_volume else (self.shape[0], self.shape[1])


# --------------------------------------------------------------------------------------------------
# Kind detection
# --------------------------------------------------------------------------------------------------


def is_nifti(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and (path.suffix.lower() in DICOM_EXTS or _looks_like_dicom(path))


def detect_kind(path: str | Path) -> str:
    """``raster``, ``dicom``, ``dicom-series`` (a folder of DICOM files) or ``nifti``; DataError otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        if any(is_dicom(p) for p in sorted(path.iterdir())[:50] if p.is_file()):
            return "dicom-series"
        raise DataError(f"{path}: folder holds no DICOM files (expected a DICOM series)")
    if is_nifti(path):
        return "nifti"
    if path.suffix.lower() in RASTER_EXTS:
        return "raster"
    if is_dicom(path):
        return "dicom"
    raise DataError(
        f"{path}: unsupported file type '{path.suffix}' (use PNG/JPEG/TIFF, DICOM .dcm, NIfTI .nii/.nii.gz)"
    )


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def read_image(path: str | Path, allow_uneven_slices: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read a 2-D image, a DICOM file, a DICOM series folder or a NIfTI volume (see the module docstring).

    Args:
        path: file or DICOM series folder.
        allow_uneven_slices: DICOM series: accept a gap or uneven slice spacing with a warning (the affine is
            then approximate) instead of a DataError.

    Returns:
        ``(array, meta)``; volumes come back as ``(Z, H, W)`` axial display slices with ``meta.is_volume``.

    Raises:
        DataError: missing, unreadable or unsupported file, naming the path.
    """
    kind = detect_kind(path)
    if kind == "raster":
        return read_raster(path)
    if kind == "dicom":
        return read_dicom(path)
    if kind == "dicom-series":
        return read_dicom_series(path, allow_uneven_slices)
    return read_nifti(path)


def read_raster(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """PNG/JPEG/TIFF/BMP as stored: gray (H, W), RGB (H, W, 3), RGBA (H, W, 4); 8- or 16-bit."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies
            opened = Image.open(path)  # lazy: reads the header only
        with opened as img:
            w, h = img.size
            if w * h > MAX_RASTER_PIXELS:
                raise DataError(
                    f"{path}: image is {w}x{h} ({w * h / 1e6:.0f} MP), above the {MAX_RASTER_PIXELS / 1e6:.0f} MP "
                    "limit (8192x8192 pixels) that reclmis reads safely; downscale it first"
                )
            img.load()
            stored_mode = img.mode
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("1", "LA"):
                img = img.convert("L")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            elif img.mode == "PA":
                img = img.convert("RGBA")
            arr = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image is too large to read safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None
    require_finite(arr, path)
    if arr.ndim == 3 and arr.shape[2] == 3:
        mode = "rgb"
    elif arr.ndim == 3 and arr.shape[2] == 4:
        mode = "rgba"
    elif arr.ndim == 2:
        mode = "gray"
    else:
        raise DataError(f"{path}: unsupported image layout {arr.shape} (mode {stored_mode})")
    if arr.dtype == np.dtype(">u2"):
        arr = arr.astype(np.uint16)
    bits = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32, "1": 1}.get(stored_mode, 8 * arr.dtype.itemsize)
    meta = ImageMeta(
        path=str(path),
        kind="raster",
        shape=tuple(arr.shape),
        original_shape=tuple(arr.shape),
        dtype=str(arr.dtype),
        mode=mode,
        bit_depth=bits,
    )
    return arr, meta


def require_finite(arr: np.ndarray, path: str | Path) -> None:
    """DataError when a float array holds NaN or inf: windowing and scaling would turn them into garbage."""
    if arr.dtype.kind not in "fc":
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(finite.size - finite.sum()) - n_nan
    raise DataError(
        f"{path}: {n_nan} NaN and {n_inf} inf value(s) in the pixel data; replace them with a finite value "
        "(e.g. the background intensity) and retry"
    )


def _dcmread(path: Path, stop_before_pixels: bool = False) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=path.suffix.lower() in DICOM_EXTS)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError) as exc:
        raise DataError(f"{path}: unreadable DICOM file ({exc})") from None


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

    try:
        raw = ds.pixel_array
    except (AttributeError, ValueError, RuntimeError, NotImplementedError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: DICOM file has no readable pixel data ({exc})") from None
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
            arr = _scale_to_uint8(arr.astype(np.float32))
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
    )
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


def read_dicom(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
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


def read_dicom_series(folder: str | Path, allow_uneven_slices: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """A folder with one DICOM series: ``(Z, H, W)`` float32, slices sorted inferior -> superior.

    Slices are ordered by their position along the plane normal (ImagePositionPatient), falling back to
    InstanceNumber. Files that are not DICOM are ignored; several series in one folder is an error, and so are
    slices of different orientations. A gap (missing slice) or uneven spacing is a DataError unless
    ``allow_uneven_slices`` (then a warning and an approximate affine), never a silently wrong affine.
    """
    folder = Path(folder)
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and is_dicom(p)]
    if not files:
        raise DataError(f"{folder}: no DICOM files in the series folder")
    datasets = [(_dcmread(p), p) for p in files]
    series = {str(ds.get("SeriesInstanceUID", "")) for ds, _ in datasets}
    if len(series) > 1:
        raise DataError(f"{folder}: holds {len(series)} DICOM series; put each series in its own folder")
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


def _nifti_to_display(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Stored voxel order -> (Z, H, W) axial display slices (see module docstring)."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    ornt = ornt_transform(io_orientation(affine), axcodes2ornt(("R", "A", "S")))
    ras = apply_orientation(data, ornt)  # (X: ->R, Y: ->A, Z: ->S)
    # display[z, r, c] = ras[X-1-c, Y-1-r, z]: rows anterior->posterior, cols right->left.
    return np.ascontiguousarray(np.transpose(ras[::-1, ::-1, :], (2, 1, 0)))


def _display_to_nifti(slices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_nifti_to_display`: (Z, H, W) display slices -> stored voxel order."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    ras = np.transpose(slices, (2, 1, 0))[::-1, ::-1, :]
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(affine))
    return np.ascontiguousarray(apply_orientation(ras, ornt))


def display_to_nifti(slices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(Z, H, W) display slices (as :func:`read_image` returns a NIfTI volume) -> the stored voxel order of a
    volume with this ``affine``. Public name of the inverse reorientation used by :func:`write_nifti_mask`."""
    return _display_to_nifti(slices, affine)


def nifti_to_display(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A volume in stored voxel order -> (Z, H, W) axial display slices (what :func:`read_image` returns)."""
    return _nifti_to_display(data, affine)


def read_nifti(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
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
    slices = _nifti_to_display(np.asarray(data, dtype=np.float32), affine)
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


# --------------------------------------------------------------------------------------------------
# Intensity: windowing and 8-bit conversion
# --------------------------------------------------------------------------------------------------


def parse_window(window: Window) -> tuple[float, float] | None:
    """``"lung"`` / ``"-600,1500"`` / ``(c, w)`` -> ``(center, width)``; DataError on anything else."""
    if window is None:
        return None
    if isinstance(window, str):
        key = window.strip().lower()
        if key in WINDOW_PRESETS:
            return WINDOW_PRESETS[key]
        parts = key.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise DataError(
                f"window '{window}' must be CENTER,WIDTH (e.g. -600,1500) or one of {', '.join(WINDOW_PRESETS)}"
            ) from None
    else:
        center, width = float(window[0]), float(window[1])
    if width <= 0:
        raise DataError(f"window width must be > 0, got {width}")
    return center, width


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window (DICOM PS3.3 C.11.2.1.2 style, simplified): [c - w/2, c + w/2] -> [0, 255] uint8."""
    lo = center - width / 2.0
    out = (np.asarray(values, dtype=np.float32) - lo) * (255.0 / width)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _scale_to_uint8(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip((values - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def to_uint8(array: np.ndarray, meta: ImageMeta, window: Window = None) -> np.ndarray:
    """8-bit display image(s) from what a reader returned.

    * 8-bit rasters pass through; RGBA drops alpha; RGB with three equal channels becomes gray.
    * 16-bit/float rasters are scaled linearly from their min..max to 0..255.
    * DICOM/NIfTI: ``window`` (preset name, ``"C,W"`` or a pair) wins; else the file's own window (DICOM); else
      the lung window for CT; else min..max (0.5-99.5 percentiles for volumes). MONOCHROME1 is inverted after
      windowing so that dense tissue is bright.

    Returns:
        ``uint8`` array: ``(H, W)``, ``(H, W, 3)`` or ``(Z, H, W)`` for volumes.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 4 and not meta.is_volume:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 3 and not meta.is_volume:
        if arr.dtype != np.uint8:
            arr = _scale_to_uint8(arr)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return np.ascontiguousarray(arr[..., 0])
        return np.ascontiguousarray(arr)
    if meta.kind == "raster":
        if arr.dtype == np.uint8:
            return arr
        if arr.dtype == np.bool_:
            return arr.astype(np.uint8) * 255
        return _scale_to_uint8(arr)
    win = parse_window(window)
    if win is None and meta.window is not None:
        win = meta.window
    if win is None and (meta.modality == "CT" or (meta.kind == "nifti" and float(np.min(arr)) < -500)):
        win = WINDOW_PRESETS[DEFAULT_CT_WINDOW]
    if win is not None:
        out = apply_window(arr, *win)
    elif meta.is_volume:
        lo, hi = np.percentile(arr, [0.5, 99.5])
        out = _scale_to_uint8(arr, float(lo), float(hi))
    else:
        out = _scale_to_uint8(arr)
    if meta.photometric == "MONOCHROME1":
        out = 255 - out
    return out


# --------------------------------------------------------------------------------------------------
# Masks: reading, binarising, resizing
# --------------------------------------------------------------------------------------------------


def read_mask(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read a mask file with :func:`read_image`; colour masks are reduced to their max over channels."""
    arr, meta = read_image(path)
    if arr.ndim == 3 and not meta.is_volume:
        arr = arr.max(axis=2) if meta.mode == "rgb" else arr[..., :3].max(axis=2)
    return arr, meta


def n_values(arr: np.ndarray) -> int:
    """Number of distinct values (fast path for 8-bit arrays)."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return int(np.count_nonzero(np.bincount(arr.ravel(), minlength=256)))
    return int(len(np.unique(arr)))


def binarize(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """``mask > 0`` as uint8 {0, 1}, and whether the input was non-binary (more than two distinct values, or
    two values neither of which is 0)."""
    arr = np.asarray(mask)
    binary = (arr > 0).astype(np.uint8)
    if arr.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        present = np.unique(arr)
    non_binary = len(present) > 2 or (len(present) == 2 and present[0] != 0)
    return binary, bool(non_binary)


def resize_array(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize a 2-D (or H, W, C uint8) array to ``size`` = (H, W); nearest for masks/labels, bilinear else."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    if arr.dtype == np.uint8 or (arr.ndim == 2 and arr.dtype in (np.int32, np.float32)):
        return np.asarray(Image.fromarray(arr).resize((w, h), resample))
    out = np.asarray(Image.fromarray(arr.astype(np.float32)).resize((w, h), resample))
    return out.astype(arr.dtype) if nearest else out


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def encode_png(arr: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 (H, W) / (H, W, 3) / (H, W, 4) or uint16 (H, W) array."""
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
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def write_png(path: str | Path, arr: np.ndarray, compress_level: int = 1) -> None:
    """Atomically write a uint8/uint16 array as PNG (temp file, then rename)."""
    atomic_write_bytes(path, encode_png(arr, compress_level))


def write_mask_png(path: str | Path, mask: np.ndarray, meta: ImageMeta | None = None, value: int = 255) -> None:
    """Write a binary mask as an 8-bit PNG (background 0, foreground ``value``), atomically.

    Args:
        path: output file (``.png``).
        mask: (H, W) bool/int/float; foreground is ``> 0`` (threshold probabilities before calling).
        meta: when given, the mask is resized (nearest) to the input's own (H, W) if it differs, so the output
            overlays the original image pixel for pixel.
        value: foreground grey level (255 = visible; 1 = label style).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"{path}: a PNG mask must be 2-D, got shape {mask.shape}")
    out = (mask > 0).astype(np.uint8) * np.uint8(value)
    if meta is not None:
        out = resize_array(out, meta.display_shape, nearest=True)
    write_png(path, out)


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

    mask = np.asarray(mask)
    if meta.kind == "nifti" and meta.affine is not None:
        affine = meta.affine
        data = _display_to_nifti((mask > 0).astype(np.uint8), affine) if display else (mask > 0).astype(np.uint8)
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
    img = nib.Nifti1Image(data, affine, header=header)
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
