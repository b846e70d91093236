"""Outputs in the input's geometry: overlays, probability maps and the mask writers.

Preprocessing and its inverse (:func:`restore_map`) live in :mod:`reclmis_core.data.preprocess`, shared with
``prepare`` and the training Dataset. The writers here put results in the input's geometry (PNG at its size,
NIfTI with its affine/header, DICOM SEG referencing its instances) and write every file atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..data.meta import ImageMeta
from ..data.writers import encode_png, write_mask_png, write_nifti_mask
from ..errors import DataError
from ..utils import atomic_path, atomic_write_bytes

log = logging.getLogger(__name__)


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
    """Tracks the files written for one input; ``discard()`` removes them (a bad input leaves nothing).

    Each file is written with :func:`reclmis_core.utils.atomic_path`, which also gives it normal permissions."""

    def __init__(self, out_dir: Path, stem: str) -> None:
        self.out_dir = Path(out_dir)
        self.stem = stem
        self.files: dict[str, Path] = {}

    def path(self, key: str, suffix: str) -> Path:
        p = self.out_dir / f"{self.stem}{suffix}"
        self.files[key] = p
        return p

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
        from ..data.readers.nifti import display_to_nifti  # the inverse of the reader's reorientation

        return display_to_nifti(prob, meta.affine)
    return prob
