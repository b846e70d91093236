"""Geometry round trip for inference: input pixels -> model square -> back to the input's own grid.

Preprocessing mirrors ``reclmis prepare`` + the training dataset exactly, and records what undoes each step:

1. 8-bit display image (:func:`reclmis_core.data.io.to_uint8`: windowing, MONOCHROME1, 16-bit scaling);
2. when the pixel spacing is known (DICOM, NIfTI/series slices): resample to square pixels, then zero-pad to a
   square field of view, so anatomy keeps its true shape (as ``prepare`` does);
3. bilinear resize to ``image_size`` x ``image_size`` (PIL, as ``io.resize_array``);
4. gray repeated to the model's channels, ``(x / 255 - mean) / std``.

:func:`restore_map` runs steps 3 and 2 backwards on a probability (or W_poi) map, so a mask comes back at
the input's resolution, pixel for pixel. The writers here put results in the input's geometry (PNG at its
size, NIfTI with its affine/header, DICOM SEG referencing its instances) and write every file atomically.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..data.io import ImageMeta, encode_png, resize_array, write_mask_png, write_nifti_mask
from ..errors import DataError
from ..utils import atomic_path, atomic_write_bytes

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def plan_geometry(shape: tuple[int, int], spacing: tuple[float, float] | None, size: int) -> Geometry:
    """The geometry ``prepare`` applies to an image of ``shape`` (H, W) with ``spacing`` (row, col) mm."""
    h, w = int(shape[0]), int(shape[1])
    sh, sw = h, w
    if spacing is not None and abs(spacing[0] - spacing[1]) > 0.01 * max(spacing):
        s = min(spacing)
        sh, sw = max(1, round(h * spacing[0] / s)), max(1, round(w * spacing[1] / s))
    side, top, left = 0, 0, 0
    if sh != sw and spacing is not None:
        side = max(sh, sw)
        top, left = (side - sh) // 2, (side - sw) // 2
    return Geometry(h, w, sh, sw, top, left, side, int(size))


def to_model_pixels(img8: np.ndarray, geom: Geometry) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3) display image -> uint8 (size, size[, 3]) as the model saw it in training."""
    img = img8
    if (geom.square_h, geom.square_w) != (geom.height, geom.width):
        img = resize_array(img, (geom.square_h, geom.square_w))
    if geom.padded:
        out = np.zeros((geom.side, geom.side, *img.shape[2:]), dtype=img.dtype)
        out[geom.pad_top : geom.pad_top + geom.square_h, geom.pad_left : geom.pad_left + geom.square_w] = img
        img = out
    return resize_array(img, (geom.size, geom.size))


def normalise(pixels: np.ndarray, in_channels: int, mean: float, std: float, colour: bool = False) -> np.ndarray:
    """uint8 (S, S) / (S, S, 3) -> float32 (C, S, S), as the training dataset does: colour is kept only for a
    model trained on colour data with 3 channels, else reduced to luminance (PIL "L"); gray is repeated to 3."""
    if pixels.ndim == 3 and (in_channels == 1 or not colour):
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))
    x = pixels.astype(np.float32) / 255.0
    x = x[None] if x.ndim == 2 else np.transpose(x, (2, 0, 1))
    if x.shape[0] == 1 and in_channels == 3:
        x = np.repeat(x, 3, axis=0)
    return (x - mean) / std


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


# --------------------------------------------------------------------------------------------------
# Images for people: overlays, probability maps
# --------------------------------------------------------------------------------------------------


def to_rgb(img8: np.ndarray) -> np.ndarray:
    """uint8 gray (H, W) or RGB (H, W, 3) -> RGB (H, W, 3)."""
    return np.repeat(img8[..., None], 3, axis=2) if img8.ndim == 2 else np.ascontiguousarray(img8[..., :3])


def overlay_image(img8: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40),
                  alpha: float = 0.35) -> np.ndarray:
    """Mask fill (semi-transparent) and a solid contour over the image, at the image's resolution."""
    rgb = to_rgb(img8).astype(np.float32)
    m = np.asarray(mask) > 0
    col = np.asarray(color, dtype=np.float32)
    rgb[m] = (1 - alpha) * rgb[m] + alpha * col
    if m.any():
        # contour = mask minus its erosion; thicker on large images so it stays visible
        k = 3 if max(m.shape) < 768 else 5
        eroded = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(k))) > 0
        rgb[m & ~eroded] = (255.0, 230.0, 0.0)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def prob_to_uint8(prob: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(prob, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Writers (each output atomically; OutputSet removes what an input already wrote if a later file fails)
# --------------------------------------------------------------------------------------------------


class OutputSet:
    """Tracks the files written for one input; ``discard()`` removes them (a bad input leaves nothing)."""

    def __init__(self, out_dir: Path, stem: str) -> None:
        self.out_dir = Path(out_dir)
        self.stem = stem
        self.files: dict[str, Path] = {}

    def path(self, key: str, suffix: str) -> Path:
        p = self.out_dir / f"{self.stem}{suffix}"
        self.files[key] = p
        return p

    def publish(self) -> None:
        """Give the files the usual permissions (temp files are created 0600; outputs are for sharing)."""
        mode = 0o666 & ~_umask()
        for p in self.files.values():
            try:
                os.chmod(p, mode)
            except OSError:
                log.debug("could not chmod %s", p)

    def discard(self) -> None:
        for p in self.files.values():
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        self.files.clear()


def write_png_mask(path: Path, mask: np.ndarray, meta: ImageMeta) -> None:
    """Binary mask (0/255) at the input's own (H, W)."""
    if tuple(mask.shape) != tuple(meta.display_shape):
        raise DataError(f"{meta.path}: mask {mask.shape} does not match the input size {meta.display_shape}")
    write_mask_png(path, mask, meta)


def write_volume_mask(path: Path, mask: np.ndarray, meta: ImageMeta) -> None:
    """(Z, H, W) display-slice mask -> NIfTI with the input's affine/header (NIfTI or DICOM series input)."""
    write_nifti_mask(path, mask, meta)


def write_png(path: Path, arr: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(arr))


def write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)


def volume_prob_in_stored_order(prob: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Display slices (Z, H, W) -> the input's own voxel order for NIfTI (aligned with ``nib.load(..).dataobj``)."""
    if meta.kind == "nifti" and meta.affine is not None:
        from ..data.io import display_to_nifti  # the inverse of the reader's reorientation

        return display_to_nifti(prob, meta.affine)
    return prob
