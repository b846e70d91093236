"""Sample inputs that need no data: phantom chest images and QaTa-style notes, for export tracing and
verification, bench's inputs, int8 calibration without ``--calib``, and a preset-only model's vocabulary."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..config import RunConfig
from ..data.preprocess import normalise_batch

# QaTa-COV19-style notes (LViT's extended annotations): used as examples for export tracing, verification, the
# bench's text input and the vocabulary of a preset-only `tiny` model.
SAMPLE_NOTES = [
    "Bilateral pulmonary infection, two infected areas, upper left lung and upper right lung.",
    "Unilateral pulmonary infection, one infected area, lower right lung.",
    "Bilateral pulmonary infection, three infected areas, middle left lung and lower left lung and lower right lung.",
    "Unilateral pulmonary infection, two infected areas, middle left lung and lower left lung.",
    "Bilateral pulmonary infection, four infected areas, upper left lung and middle left lung and upper right lung "
    "and lower right lung.",
    "Unilateral pulmonary infection, one infected area, upper right lung.",
    "Bilateral pulmonary infection, two infected areas, lower left lung and lower right lung.",
    "Unilateral pulmonary infection, one infected area, middle left lung.",
]


def sample_images(cfg: RunConfig, n: int, seed: int = 0) -> Tensor:
    """Deterministic phantom chest-radiograph-like images, normalised like the data pipeline: (n, C, S, S)."""
    s, c = cfg.model.image_size, cfg.model.in_channels
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    out = np.empty((n, 1, s, s), dtype=np.float32)
    for i in range(n):
        img = 60 + 40 * yy  # soft vertical gradient
        for cx in (0.3, 0.7):  # two lung fields
            img += 90 * np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.28) ** 2))
        for _ in range(rng.integers(1, 4)):  # lesions
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.8), rng.uniform(0.03, 0.08)
            img += 50 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / r**2))
        img += rng.normal(0, 6, size=img.shape)
        img = np.clip(img, 0, 255)
        out[i] = img[None]
    return torch.from_numpy(normalise_batch(out, c, cfg.data.mean, cfg.data.std))
