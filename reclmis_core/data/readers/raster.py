"""PNG/JPEG/TIFF/BMP: ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA in the stored dtype."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...errors import DataError
from ..meta import ImageMeta
from .base import ReadOptions, register_reader, require_finite

RASTER_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: Largest 2-D raster read, in pixels: 8192 x 8192 (67 MP, about 3x a large digital mammogram). Larger files
#: are refused from their header, before any pixel is decoded, so a 10000 x 10000 export cannot exhaust memory
#: (decoding plus float conversion would need several GB); downscale such images first.
MAX_RASTER_PIXELS = 8192 * 8192


@register_reader("raster", describe="PNG/JPEG/TIFF", suffixes=RASTER_EXTS)
def read_raster(path: str | Path, options: ReadOptions | None = None) -> tuple[np.ndarray, ImageMeta]:
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
