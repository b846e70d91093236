"""Seeded recipe shared by ``make_reference_golden.py`` and the golden test: weights, images and notes.

Everything here is deterministic from numbers and names only (no reference code): the reference-format state
dict is rebuilt from a key/shape list and a seed, with BatchNorm statistics supplied by the caller (the script
calibrates them once on the reference model; the fixture stores them) and sharpened CI attention, so the note
changes the output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

SEED = 1234
SHARPEN = 6.0  # CI attention query scale, so the note moves the output
#: Small CLIP for the committed fixture: text width 64, 2 layers (heads = width // 64 as the reference infers),
#: projection 512 (text_module4 needs 512), vocabulary and context as ViT-B/32; a one-layer visual tower.
SMALL_CLIP = dict(embed_dim=512, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=32,
                  context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                  transformer_layers=2)
FULL_CLIP = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                 context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                 transformer_layers=12)

#: Notes: 18 tokens exactly, short (padded), truncated, short of 9 words (read_text fills it, still padded).
NOTES = [
    "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
    "Unilateral pulmonary infection, one infected area, middle right lung.",
    "Bilateral pulmonary infection, three infected areas, all left lung and upper middle lower right lung with "
    "extra words that the eighteen token limit cuts",
    "Bilateral infection, two areas, lower left and right.",
]
#: Image sizes (H, W): three at 224, one not (resized by cv2.resize in the reference pipeline).
SIZES = [(224, 224), (224, 224), (300, 260), (224, 224)]


def _gen(name: str, seed: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def make_tensor(name: str, shape: tuple[int, ...], dtype: str, seed: int = SEED) -> torch.Tensor:
    """One reference tensor from its name and shape (BatchNorm statistics come from the caller)."""
    if dtype == "int64":
        return torch.zeros(shape, dtype=torch.long)
    g = _gen(name, seed)
    z = torch.randn(shape, generator=g)
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("logit_scale"):
        return torch.tensor(4.6052)
    if "norm" in name or "ln_" in name or "layer_norm" in name:
        return (1.0 + 0.1 * z) if leaf == "weight" else 0.1 * z
    if leaf in ("bias", "in_proj_bias") or name.endswith("class_embedding"):
        return 0.02 * z
    if "position" in name or "positional" in name:
        return 0.1 * z
    if "token_embedding" in name:
        return 0.5 * z
    if name.endswith("text_projection") or name.endswith("visual.proj"):
        return z / shape[0] ** 0.5
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    w = z * (2.0 / fan_in) ** 0.5
    if name.startswith("interact.attn_") and name.endswith("in_proj_weight"):
        d = shape[1]
        w[:d] *= SHARPEN  # queries: sharper CI attention
    return w


def make_state(keys: list[tuple[str, tuple[int, ...], str]], bn: dict[str, np.ndarray] | None = None,
               seed: int = SEED) -> dict[str, torch.Tensor]:
    """The reference state dict (reference names, no prefix) from the key list; ``bn`` overrides running stats."""
    state = {}
    for name, shape, dtype in keys:
        if bn is not None and name in bn:
            state[name] = torch.from_numpy(np.asarray(bn[name])).reshape(shape).clone()
        elif name.endswith("running_var"):
            state[name] = torch.ones(shape)
        elif name.endswith("running_mean"):
            state[name] = torch.zeros(shape)
        else:
            state[name] = make_tensor(name, tuple(shape), dtype, seed)
    return state


def make_images(folder: Path, seed: int = SEED) -> list[Path]:
    """Phantom chest-like 8-bit gray PNGs (one colour image among them) written into ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        yy, xx = yy / h, xx / w
        img = 40 + 50 * yy
        for cx in (0.3, 0.7):
            img += 100 * np.exp(-(((xx - cx) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2))
        for _ in range(3):
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.8), rng.uniform(0.03, 0.09)
            img += 60 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / r**2))
        img += rng.normal(0, 8, size=img.shape)
        img8 = np.clip(img, 0, 255).astype(np.uint8)
        if i == 1:  # one RGB image: the channel order (BGR in the reference) matters
            img8 = np.stack([img8, np.roll(img8, 7, axis=1), (255 - img8) // 2], axis=-1)
        path = folder / f"case{i}.png"
        Image.fromarray(img8).save(path)
        paths.append(path)
    return paths


def make_masks(folder: Path, seed: int = SEED) -> list[Path]:
    """Lesion masks (0/255) matching :func:`make_images` sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
        m = ((xx / w - cx) ** 2 + (yy / h - cy) ** 2 < r**2).astype(np.uint8) * 255
        path = folder / f"mask_case{i}.png"
        Image.fromarray(m).save(path)
        paths.append(path)
    return paths
