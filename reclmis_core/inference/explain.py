"""``--explain`` view (the paper's Fig. 13): W_poi as a heat map over the image, W_woi as per-word bars.

Rendered with PIL only (no matplotlib dependency). ``W_poi`` lives on the (image_size/16)^2 patch grid; it is
brought back to the input's pixel grid with the same geometry inversion as the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.preprocess import Geometry, restore_map
from .restore import to_rgb

# A perceptually ordered dark-blue -> cyan -> yellow -> red ramp (close to "turbo"), as anchor colours.
_RAMP = np.asarray(
    [(48, 18, 59), (65, 105, 225), (27, 208, 213), (98, 252, 108), (254, 200, 50), (240, 90, 20), (122, 4, 3)],
    dtype=np.float32,
)
SPECIAL_TOKENS = {"<sot>", "<eot>", "[BOS]", "[EOS]", "[CLS]", "[SEP]", "<s>", "</s>", "[PAD]", "<pad>"}


@dataclass
class Explanation:
    """Interest weights of one image/slice."""

    w_poi: np.ndarray  # (g, g) float32, sums to 1 over the patch grid
    tokens: list[str]  # token strings of the note (special tokens included)
    w_woi: np.ndarray  # (len(tokens),) float32, sums to 1 over the valid tokens

    def word_weights(self) -> list[dict[str, float | str]]:
        return [{"token": t, "weight": round(float(w), 6)} for t, w in zip(self.tokens, self.w_woi)]

    def top_words(self, k: int = 5) -> list[str]:
        order = np.argsort(-self.w_woi)
        return [self.tokens[i] for i in order if self.tokens[i] not in SPECIAL_TOKENS][:k]


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 with the ramp above."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(v).astype(np.int64)
    hi = np.minimum(lo + 1, len(_RAMP) - 1)
    t = (v - lo)[..., None]
    return np.clip(_RAMP[lo] * (1 - t) + _RAMP[hi] * t + 0.5, 0, 255).astype(np.uint8)


def heatmap_overlay(img8: np.ndarray, w_poi: np.ndarray, geom: Geometry, alpha: float = 0.5) -> np.ndarray:
    """W_poi (g, g) on the input's pixel grid, min-max scaled, alpha-blended over the image (RGB uint8)."""
    grid = np.asarray(w_poi, dtype=np.float32)
    # nearest-upsample to the model grid first so each patch stays a patch, then undo the geometry bilinearly
    patch = np.asarray(Image.fromarray(grid, mode="F").resize((geom.size, geom.size), Image.Resampling.NEAREST))
    heat = restore_map(patch, geom)
    lo, hi = float(heat.min()), float(heat.max())
    heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    rgb = to_rgb(img8).astype(np.float32)
    out = (1 - alpha) * rgb + alpha * colormap(heat).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def render_explanation(img8: np.ndarray, mask: np.ndarray | None, exp: Explanation, geom: Geometry,
                       note: str, panel: int = 384) -> np.ndarray:
    """One RGB figure: [image + W_poi heat map | word-weight bar chart], the note as the title.

    Args:
        img8: the input's 8-bit display image (H, W) or (H, W, 3).
        mask: optional binary mask (H, W) whose contour is drawn on the heat map.
        exp: the interest weights.
        geom: geometry of the image (to put W_poi on its pixel grid).
        note: the note, printed above the panels.
        panel: height of the image panel in pixels.
    """
    heat = heatmap_overlay(img8, exp.w_poi, geom)
    if mask is not None and np.any(mask):
        from PIL import ImageFilter

        m = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
        edge = (np.asarray(m) > 0) & ~(np.asarray(m.filter(ImageFilter.MinFilter(3))) > 0)
        heat[edge] = (255, 255, 255)
    h, w = heat.shape[:2]
    scale = panel / h
    pw = max(1, round(w * scale))
    left = Image.fromarray(heat).resize((pw, panel), Image.Resampling.BILINEAR)

    font = _font(13)
    title_font = _font(14)
    rows = len(exp.tokens)
    row_h = 18
    label_w = 110
    bar_w = 200
    chart_w = label_w + bar_w + 60
    chart_h = max(panel, 28 + rows * row_h + 10)
    title_h = 28
    bar_gap = 64  # the W_poi colour bar between the two panels
    canvas = Image.new("RGB", (pw + bar_gap + chart_w + 20, title_h + max(panel, chart_h)), (255, 255, 255))
    canvas.paste(left, (0, title_h))
    draw = ImageDraw.Draw(canvas)
    shown = note if len(note) <= 110 else note[:107] + "..."
    draw.text((6, 6), f"note: {shown}", fill=(0, 0, 0), font=title_font)
    # colour bar of the heat map: its colours from low (bottom) to high (top) interest
    cb_x, cb_top, cb_h = pw + 8, title_h + 16, panel - 40
    ramp = colormap(np.linspace(1.0, 0.0, cb_h))
    for i, colour in enumerate(ramp):
        draw.line([(cb_x, cb_top + i), (cb_x + 12, cb_top + i)], fill=tuple(int(c) for c in colour))
    draw.rectangle([cb_x, cb_top, cb_x + 12, cb_top + cb_h], outline=(0, 0, 0))
    draw.text((cb_x + 16, cb_top - 2), "high", fill=(0, 0, 0), font=font)
    draw.text((cb_x + 16, cb_top + cb_h - 12), "low", fill=(0, 0, 0), font=font)
    draw.text((cb_x, title_h), "W_poi", fill=(0, 0, 0), font=font)
    x0, y0 = pw + bar_gap + 20, title_h
    draw.text((x0, y0), "W_woi (words of interest)", fill=(0, 0, 0), font=font)
    wmax = float(exp.w_woi.max()) if len(exp.w_woi) else 1.0
    colours = colormap(exp.w_woi / wmax if wmax > 0 else exp.w_woi)
    for i, (tok, wt) in enumerate(zip(exp.tokens, exp.w_woi)):
        y = y0 + 24 + i * row_h
        label = tok if len(tok) <= 14 else tok[:13] + "~"
        special = tok in SPECIAL_TOKENS
        draw.text((x0, y), label, fill=(150, 150, 150) if special else (0, 0, 0), font=font)
        length = int(round(bar_w * (float(wt) / wmax))) if wmax > 0 else 0
        draw.rectangle([x0 + label_w, y + 2, x0 + label_w + max(length, 1), y + row_h - 4],
                       fill=tuple(int(c) for c in colours[i]))
        draw.text((x0 + label_w + length + 4, y), f"{float(wt):.3f}", fill=(60, 60, 60), font=font)
    draw.text((4, title_h + panel - 18), "W_poi (patches of interest)", fill=(255, 255, 255), font=font)
    return np.asarray(canvas)
