"""Array helpers shared by readers, prepare and notes: distinct values, binarising masks, resizing."""

from __future__ import annotations

import numpy as np
from PIL import Image


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
