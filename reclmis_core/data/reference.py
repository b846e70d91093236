"""The public RecLMIS code's input pipeline ("reference" preprocessing), in one place.

``data.preprocessing=reference`` makes predict, eval (the manifest Dataset), training, the ONNX export's runtime
and bench feed the network exactly what the authors' code feeds it, so their trained weights see the inputs they
were trained on:

- image: ``cv2.imread(path)`` (3 channels, **BGR** order; a gray file is repeated to 3 channels), then
  ``cv2.resize(img, (S, S))`` (bilinear, OpenCV's sampling), then ``x / 255`` with no mean/std;
- note: ``read_text``'s fill (a note of n < 9 words gets ``" EOF XXX"`` appended 9 - n times,
  ``model.text.eof_fill``), then CLIP BPE to a fixed 18 tokens, pad id 0, truncated keeping the end-of-text
  token (``model.text.max_length=18``, ``model.text.pad_to_max``).

OpenCV's resize differs from PIL's (in a test on chest radiographs, 17-22 % of pixels moved by more than 2/255),
so this path needs OpenCV: ``pip install 'reclmis[reference]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

#: Tokens per note in the reference code (``token_len``) and the word count below which ``read_text`` fills.
REFERENCE_TOKENS = 18
REFERENCE_EOF_FILL = 9
SIDECAR_DESCRIPTION = {
    "kind": "reference",
    "read": "cv2.imread(path, cv2.IMREAD_COLOR): 3 channels, BGR order",
    "resize": "cv2.resize(img, (S, S)), INTER_LINEAR",
    "scale": "x / 255, no mean/std",
    "layout": "NCHW float32, channels B, G, R",
}


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConfigError(
            "data.preprocessing=reference needs OpenCV (the reference code reads and resizes with it); "
            "install it with: pip install 'reclmis[reference]'"
        ) from None
    return cv2


def read_reference_image(path: str | Path) -> np.ndarray:
    """``cv2.imread(path)``: uint8 (H, W, 3), BGR, as the reference's Dataset reads a file."""
    cv2 = _cv2()
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: OpenCV cannot read this image (reference preprocessing reads with cv2.imread)")
    return img


def reference_pixels(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) gray or (H, W, 3) BGR -> uint8 (size, size, 3) BGR resized with ``cv2.resize``."""
    cv2 = _cv2()
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8:
        raise DataError(f"reference preprocessing takes 8-bit images, got {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"reference preprocessing takes (H, W) or (H, W, 3) images, got shape {img.shape}")
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size))
    return img


def reference_tensor(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., S, S, 3) BGR -> float32 (..., 3, S, S) = x / 255 (``torchvision``'s ``to_tensor``)."""
    x = np.asarray(pixels, dtype=np.float32) / 255.0
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """For display (overlays): the BGR array the model sees, in RGB order."""
    return np.ascontiguousarray(image[..., ::-1])


def fill_note(note: str, fill: int) -> str:
    """The reference's ``read_text``: a note of n < ``fill`` words gets ``" EOF XXX"`` appended ``fill - n`` times."""
    count = len(note.split())
    return note + " EOF XXX" * (fill - count) if 0 < fill and count < fill else note
