"""The array steps of the preprocessing shared by training and inference; :class:`~.preprocessor.Preprocessor`
is the object that applies them (prepare, the Dataset, eval, predict, the ONNX runtime wrapper, bench).

Every image the model sees, in training or at inference, goes through the same steps, each written once here:

1. 8-bit display image (:func:`reclmis_core.data.intensity.to_uint8`: windowing, MONOCHROME1, 16-bit scaling);
2. geometry (:func:`plan_geometry`): when the pixel spacing is known (DICOM, NIfTI and series slices), resample
   to square pixels, then zero-pad to a square field of view so anatomy keeps its aspect (as nnU-Net and most
   pipelines do; :func:`to_native_pixels`); a plain raster image (no spacing) is resized directly. Then
   bilinear resize (nearest for masks) to ``image_size`` x ``image_size`` (:func:`to_model_pixels`);
3. channels (:func:`normalise_batch`): colour is kept only for a model trained on colour data with 3 channels,
   else reduced to luminance (ITU-R 601, exactly as PIL's ``convert("L")``); gray is repeated to 3 channels;
4. normalisation ``(x / 255 - mean) / std``.

``prepare`` applies steps 1-2 up to :func:`to_native_pixels` (``--size 0``, the default) and stores the result;
the Dataset resizes once and applies 3-4; predict applies 1-4 on a user's file and :func:`restore_map` runs
step 2 backwards on the output, so a mask comes back on the input's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import resize_array
from .meta import ImageMeta

#: Two pixel spacings closer than this fraction of the larger are treated as square (no resampling).
SQUARE_TOLERANCE = 0.01

# ITU-R 601-2 luma in 16-bit fixed point, the integers PIL's convert("L") uses: (R*19595 + G*38470 + B*7471) >> 16
_LUMA = (19595, 38470, 7471)


@dataclass(frozen=True)
class Geometry:
    """What preprocessing did to one 2-D image/slice, so that it can be undone."""

    height: int  # (int) input rows
    width: int  # (int) input columns
    square_h: int  # (int) rows after resampling to square pixels (== height when not resampled)
    square_w: int  # (int) columns after resampling to square pixels
    pad_top: int  # (int) zero rows added above (square field of view)
    pad_left: int  # (int) zero columns added on the left
    side: int  # (int) side of the padded square (0 = not padded: the resampled image is resized directly)
    size: int  # (int) model input side

    @property
    def padded(self) -> bool:
        return self.side > 0


def input_spacing(meta: ImageMeta) -> tuple[float, float] | None:
    """The pixel spacing preprocessing uses: the file's for DICOM/NIfTI, none for raster images (their DPI is
    not an anatomical spacing)."""
    return None if meta.kind == "raster" else meta.spacing


def plan_geometry(shape: tuple[int, int], spacing: tuple[float, float] | None, size: int) -> Geometry:
    """The geometry for an image of ``shape`` (H, W) with ``spacing`` (row, col) mm, model side ``size``.

    Known spacing: square pixels, then a square field of view by zero padding (aspect kept). Unknown spacing:
    resized directly to ``size`` x ``size``.
    """
    h, w = int(shape[0]), int(shape[1])
    sh, sw = h, w
    if spacing is not None and abs(spacing[0] - spacing[1]) > SQUARE_TOLERANCE * max(spacing):
        s = min(spacing)
        sh, sw = max(1, round(h * spacing[0] / s)), max(1, round(w * spacing[1] / s))
    side, top, left = 0, 0, 0
    if sh != sw and spacing is not None:
        side = max(sh, sw)
        top, left = (side - sh) // 2, (side - sw) // 2
    return Geometry(h, w, sh, sw, top, left, side, int(size))


def to_native_pixels(img: np.ndarray, geom: Geometry, nearest: bool = False) -> np.ndarray:
    """The size-independent part of the geometry: square pixels, then the zero-padded square field of view;
    (H, W[, C]) -> (side, side[, C]) (or the resampled (H', W'[, C]) when not padded), same dtype.
    ``prepare --size 0`` stores this; the final resize to the model side then happens once, in the Dataset."""
    if (geom.square_h, geom.square_w) != (geom.height, geom.width):
        img = resize_array(img, (geom.square_h, geom.square_w), nearest=nearest)
    if geom.padded:
        out = np.zeros((geom.side, geom.side, *img.shape[2:]), dtype=img.dtype)
        out[geom.pad_top : geom.pad_top + geom.square_h, geom.pad_left : geom.pad_left + geom.square_w] = img
        img = out
    return img


def to_model_pixels(img: np.ndarray, geom: Geometry, nearest: bool = False) -> np.ndarray:
    """(H, W[, C]) image (or mask with ``nearest``) -> (size, size[, C]) as the model sees it, same dtype."""
    return resize_array(to_native_pixels(img, geom, nearest), (geom.size, geom.size), nearest=nearest)


def restore_map(values: np.ndarray, geom: Geometry) -> np.ndarray:
    """A float map on the model grid (any square size) -> float32 (H, W) on the input's pixel grid (bilinear)."""
    arr = np.asarray(values, dtype=np.float32)
    if geom.padded:
        arr = resize_array(arr, (geom.side, geom.side))
        arr = arr[geom.pad_top : geom.pad_top + geom.square_h, geom.pad_left : geom.pad_left + geom.square_w]
        arr = np.ascontiguousarray(arr)
    else:
        arr = resize_array(arr, (geom.square_h, geom.square_w))
    if (geom.square_h, geom.square_w) != (geom.height, geom.width):
        arr = resize_array(arr, (geom.height, geom.width))
    return np.asarray(arr, dtype=np.float32)


def luminance(rgb: np.ndarray, axis: int = -1) -> np.ndarray:
    """RGB (values 0..255 along ``axis``) -> gray, rounded as PIL's ``convert("L")`` (identical for uint8)."""
    rgb = np.asarray(rgb)
    r, g, b = (np.take(rgb, i, axis=axis) for i in range(3))
    if rgb.dtype == np.uint8:
        acc = r.astype(np.uint32) * _LUMA[0] + g.astype(np.uint32) * _LUMA[1] + b.astype(np.uint32) * _LUMA[2]
        return ((acc + 0x8000) >> 16).astype(np.uint8)
    acc = r.astype(np.float64) * _LUMA[0] + g.astype(np.float64) * _LUMA[1] + b.astype(np.float64) * _LUMA[2]
    return np.floor(acc / 65536.0 + 0.5).astype(np.float32)


def normalise_batch(images: np.ndarray, in_channels: int, mean: float, std: float, colour: bool = False
                    ) -> np.ndarray:
    """(B, C, S, S) values 0..255 (C = 1, 3 or 4) -> float32 (B, in_channels, S, S), ``(x / 255 - mean) / std``.

    Colour is kept only when ``colour`` (the model was trained on colour data) and ``in_channels == 3``; else it
    is reduced to luminance. Gray is repeated to 3 channels for a 3-channel model. Alpha is dropped.
    """
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] == 4:
        x = x[:, :3]
    if x.shape[1] == 3 and (in_channels == 1 or not colour):
        x = luminance(x, axis=1)[:, None]
    if x.shape[1] == 1 and in_channels == 3:
        x = np.repeat(x, 3, axis=1)
    out = x.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray((out - np.float32(mean)) / np.float32(std), dtype=np.float32)
