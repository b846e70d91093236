"""PNG/JPEG/TIFF/BMP: ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA in the stored dtype.

An EXIF Orientation tag (phone photos, some scanners: 6 = stored sideways) is applied on read, so the model sees
the image upright as a viewer shows it; ``meta.exif_orientation`` keeps it and the mask writers undo it. A
multi-page TIFF is read as ``(F, H, W)`` frames, like a multi-frame DICOM."""

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
#: Largest multi-page TIFF read, in pixels over all pages (4 x the 2-D limit, e.g. 600 pages of 512 x 512 + margin).
MAX_STACK_PIXELS = 4 * MAX_RASTER_PIXELS


def _expand_mode(img: Image.Image) -> Image.Image:
    """Palette, 1-bit, LA and colour spaces other than RGB -> gray, RGB or RGBA."""
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("1", "LA"):
        return img.convert("L")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    if img.mode == "PA":
        return img.convert("RGBA")
    return img


def _pages(img: Image.Image, path: Path, n_pages: int) -> np.ndarray:
    """Every page of a multi-page TIFF as ``(F, H, W)`` gray (colour pages -> luminance), like the frames of a
    multi-frame DICOM; pages of different sizes are an error."""
    pages = []
    for i in range(n_pages):
        img.seek(i)
        page = _expand_mode(img)
        arr = np.asarray(page.convert("L") if page.mode in ("RGB", "RGBA") else page)
        if arr.ndim != 2:
            raise DataError(f"{path}: page {i + 1} has an unsupported layout {arr.shape} (mode {img.mode})")
        if pages and arr.shape != pages[0].shape:
            raise DataError(f"{path}: page {i + 1} is {arr.shape[1]}x{arr.shape[0]}, page 1 "
                            f"{pages[0].shape[1]}x{pages[0].shape[0]}; a multi-page TIFF is read as one stack of "
                            "equal pages (split it into one file per page)")
        pages.append(arr.astype(np.uint16) if arr.dtype == np.dtype(">u2") else arr)
    return np.stack(pages)


#: EXIF Orientation -> the numpy operation that shows the stored pixels upright (what viewers do), and its inverse.
_EXIF_APPLY = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1), 7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1), 8: lambda a: np.rot90(a, 1),
}
_EXIF_UNDO = {**_EXIF_APPLY, 6: _EXIF_APPLY[8], 8: _EXIF_APPLY[6]}


def _exif_orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(0x0112, 1) or 1)
    except (TypeError, ValueError, SyntaxError):
        return 1
    return value if value in _EXIF_APPLY else 1


def apply_exif_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels -> the upright image an EXIF-aware viewer shows (orientation 1..8; 1 and unknown: as is)."""
    fn = _EXIF_APPLY.get(int(orientation))
    return arr if fn is None else np.ascontiguousarray(fn(arr))


def undo_exif_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Inverse of :func:`apply_exif_orientation`: an upright (H, W[, C]) array -> the input's stored pixel grid."""
    fn = _EXIF_UNDO.get(int(orientation))
    return arr if fn is None else np.ascontiguousarray(fn(arr))


def _stored_shape(shape: tuple[int, ...], orientation: int) -> tuple[int, ...]:
    return (shape[1], shape[0], *shape[2:]) if orientation in (5, 6, 7, 8) else tuple(shape)


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
            n_pages = int(getattr(img, "n_frames", 1) or 1)
            if n_pages > 1 and w * h * n_pages > MAX_STACK_PIXELS:
                raise DataError(f"{path}: {n_pages} pages of {w}x{h} ({w * h * n_pages / 1e6:.0f} MP) exceed the "
                                f"{MAX_STACK_PIXELS / 1e6:.0f} MP that reclmis reads from one file; split it first")
            img.load()
            stored_mode = img.mode
            orientation = _exif_orientation(img)
            if n_pages > 1:
                arr = _pages(img, path, n_pages)
            else:
                arr = apply_exif_orientation(np.asarray(_expand_mode(img)), orientation)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image is above the {MAX_RASTER_PIXELS / 1e6:.0f} MP limit (8192x8192 pixels) that "
                        "reclmis reads safely; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None
    if arr.ndim == 3 and n_pages > 1:
        require_finite(arr, path)
        meta = ImageMeta(path=str(path), kind="raster", shape=tuple(arr.shape), original_shape=tuple(arr.shape),
                         dtype=str(arr.dtype), mode="gray", bit_depth=8 * arr.dtype.itemsize, is_volume=True)
        return arr, meta
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
        original_shape=tuple(_stored_shape(arr.shape, orientation)),
        dtype=str(arr.dtype),
        mode=mode,
        bit_depth=bits,
        exif_orientation=orientation,
    )
    return arr, meta
