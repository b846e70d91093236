"""Intensity: named CT windows, windowing and 8-bit display images from any reader's output."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .meta import ImageMeta

#: Named intensity windows (center, width) in Hounsfield units.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft-tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
DEFAULT_CT_WINDOW = "lung"

Window = str | tuple[float, float] | None


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


def scale_to_uint8(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
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
            arr = scale_to_uint8(arr)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return np.ascontiguousarray(arr[..., 0])
        return np.ascontiguousarray(arr)
    if meta.kind == "raster":
        if arr.dtype == np.uint8:
            return arr
        if arr.dtype == np.bool_:
            return arr.astype(np.uint8) * 255
        return scale_to_uint8(arr)
    win = parse_window(window)
    if win is None and meta.window is not None:
        win = meta.window
    if win is None and (meta.modality == "CT" or (meta.kind == "nifti" and float(np.min(arr)) < -500)):
        win = WINDOW_PRESETS[DEFAULT_CT_WINDOW]
    if win is not None:
        out = apply_window(arr, *win)
    elif meta.is_volume:
        lo, hi = np.percentile(arr, [0.5, 99.5])
        out = scale_to_uint8(arr, float(lo), float(hi))
    else:
        out = scale_to_uint8(arr)
    if meta.photometric == "MONOCHROME1":
        out = 255 - out
    return out
