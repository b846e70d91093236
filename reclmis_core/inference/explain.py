"""``--explain`` view (the paper's Fig. 13): W_poi as a heat map over the image, W_woi as per-word bars.

Rendered with PIL only (no matplotlib dependency). ``W_poi`` lives on the (image_size/16)^2 patch grid; it is
brought back to the input's pixel grid with the same geometry inversion as the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..data.preprocess import Geometry, restore_map
from .figures import draw_lines, fit_text, font, line_height, text_width, wrap_text
from .restore import mask_edge, to_rgb

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


def interest_map(w_poi: np.ndarray, geom: Geometry) -> np.ndarray:
    """W_poi (g, g) on the input's pixel grid (H, W), float32, unscaled."""
    grid = np.asarray(w_poi, dtype=np.float32)
    # nearest-upsample to the model grid first so each patch stays a patch, then undo the geometry bilinearly
    patch = np.asarray(Image.fromarray(grid, mode="F").resize((geom.size, geom.size), Image.Resampling.NEAREST))
    return restore_map(patch, geom)


def heatmap_overlay(img8: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A map on the image's pixel grid (:func:`interest_map`), min-max scaled, alpha-blended over it (RGB uint8)."""
    lo, hi = float(heat.min()), float(heat.max())
    scaled = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    rgb = to_rgb(img8).astype(np.float32)
    out = (1 - alpha) * rgb + alpha * colormap(scaled).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_explanation(img8: np.ndarray, mask: np.ndarray | None, exp: Explanation, geom: Geometry,
                       note: str, panel: int = 384) -> np.ndarray:
    """One RGB figure: the note (wrapped) on top, then [image + W_poi heat map | its colour bar | word-weight bars],
    then a legend. No text is drawn over the image.

    Args:
        img8: the input's 8-bit display image (H, W) or (H, W, 3).
        mask: optional binary mask (H, W) whose contour is drawn (white) on the heat map.
        exp: the interest weights.
        geom: geometry of the image (to put W_poi on its pixel grid).
        note: the note, printed above the panels.
        panel: height of the image panel in pixels.
    """
    weights = interest_map(exp.w_poi, geom)
    heat = heatmap_overlay(img8, weights)
    outlined = mask is not None and bool(np.any(mask))
    if outlined:
        heat[mask_edge(mask, 3)] = (255, 255, 255)
    h, w = heat.shape[:2]
    pw = max(1, round(w * panel / h))
    left = Image.fromarray(heat).resize((pw, panel), Image.Resampling.BILINEAR)

    fnt, title_fnt = font(13), font(14)
    step, pad = line_height(fnt), 8
    # word chart: a label column as wide as the longest token (long ones end with an ellipsis), bars, values
    label_w = min(max((text_width(fnt, t) for t in exp.tokens), default=40), 180) + pad
    bar_w, value_w = 200, text_width(fnt, "0.000") + pad
    chart_w = label_w + bar_w + value_w
    row_h = max(18, step)
    chart_h = len(exp.tokens) * row_h
    # colour bar: as wide as its labels (the weights of this image's most and least interesting pixels)
    hi_label, lo_label = f"{float(weights.max()):.4g} high", f"{float(weights.min()):.4g} low"
    bar_gap = 12 + 4 + max(text_width(fnt, hi_label), text_width(fnt, lo_label), text_width(fnt, "W_poi")) + pad
    width = pad + pw + pad + bar_gap + pad + chart_w + pad
    title_lines = wrap_text(f"note: {note}" if note else "note: (none)", title_fnt, width - 2 * pad, max_lines=6)
    title_h = pad + line_height(title_fnt) * len(title_lines)
    legend = ["W_poi: each patch's share of the image's interest (colour bar: this image's lowest to highest)",
              "W_woi: bar length and colour = the word's weight relative to the top word (same colour scale)",
              "grey labels: special tokens, not words of the note"]
    if outlined:
        legend.append("white outline: predicted lesion")
    legend_lines = [line for text in legend for line in wrap_text(text, fnt, width - 2 * pad)]
    body_top = title_h + pad + step  # panel headers sit in the step above the panels
    body_h = max(panel, chart_h)
    height = body_top + body_h + pad + step * len(legend_lines) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw_lines(draw, (pad, pad // 2), title_lines, title_fnt)

    x_img = pad
    draw.text((x_img, body_top - step), fit_text("W_poi (patches of interest)", fnt, pw), fill=(0, 0, 0), font=fnt)
    canvas.paste(left, (x_img, body_top))

    # colour bar of the heat map: its colours from low (bottom) to high (top) interest
    cb_x, cb_top, cb_h = x_img + pw + pad, body_top, panel
    draw.text((cb_x, body_top - step), "W_poi", fill=(0, 0, 0), font=fnt)
    draw.rectangle([cb_x, cb_top, cb_x + 12, cb_top + cb_h - 1], outline=(0, 0, 0))
    for i, colour in enumerate(colormap(np.linspace(1.0, 0.0, cb_h - 2))):  # inside the frame, both ends shown
        draw.line([(cb_x + 1, cb_top + 1 + i), (cb_x + 11, cb_top + 1 + i)], fill=tuple(int(c) for c in colour))
    draw.text((cb_x + 16, cb_top), hi_label, fill=(0, 0, 0), font=fnt)
    draw.text((cb_x + 16, cb_top + cb_h - step), lo_label, fill=(0, 0, 0), font=fnt)

    x0 = cb_x + bar_gap + pad
    draw.text((x0, body_top - step), "W_woi (words of interest)", fill=(0, 0, 0), font=fnt)
    wmax = float(exp.w_woi.max()) if len(exp.w_woi) else 1.0
    colours = colormap(exp.w_woi / wmax if wmax > 0 else exp.w_woi)
    for i, (tok, wt) in enumerate(zip(exp.tokens, exp.w_woi)):
        y = body_top + i * row_h
        special = tok in SPECIAL_TOKENS
        draw.text((x0, y), fit_text(tok, fnt, label_w - pad), fill=(150, 150, 150) if special else (0, 0, 0),
                  font=fnt)
        length = int(round(bar_w * (float(wt) / wmax))) if wmax > 0 else 0
        draw.rectangle([x0 + label_w, y + 2, x0 + label_w + max(length, 1), y + row_h - 4],
                       fill=tuple(int(c) for c in colours[i]))
        draw.text((x0 + label_w + length + 4, y), f"{float(wt):.3f}", fill=(60, 60, 60), font=fnt)

    draw_lines(draw, (pad, body_top + body_h + pad), legend_lines, fnt, fill=(60, 60, 60))
    return np.asarray(canvas)
