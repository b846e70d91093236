"""Outputs in the input's geometry: overlays, probability maps and the mask writers.

Preprocessing and its inverse (:func:`restore_map`) live in :mod:`reclmis_core.data.preprocess`, shared with
``prepare`` and the training Dataset. The writers here put results in the input's geometry (PNG at its size,
NIfTI with its affine/header, DICOM SEG referencing its instances) and write every file atomically.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..data.meta import ImageMeta
from ..data.arrays import resize_array
from ..data.writers import encode_png, write_mask_png, write_nifti_mask
from ..errors import DataError
from ..utils import atomic_path, atomic_write_bytes
from .figures import draw_lines, fit_text, font, font_size_for, line_height, upscale_factor, wrap_text

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Images for people: overlays, probability maps
# --------------------------------------------------------------------------------------------------


def to_rgb(img8: np.ndarray) -> np.ndarray:
    """uint8 gray (H, W) or RGB (H, W, 3) -> RGB (H, W, 3)."""
    return np.repeat(img8[..., None], 3, axis=2) if img8.ndim == 2 else np.ascontiguousarray(img8[..., :3])


LESION_FILL = (255, 40, 40)  # the overlay's mask colour, blended over the image
LESION_EDGE = (255, 230, 0)  # its contour
LESION_ALPHA = 0.35  # opacity of the fill
MAX_TILES = 9  # slices in a volume's overlay mosaic (3 x 3)


def overlay_image(img8: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = LESION_FILL,
                  alpha: float = LESION_ALPHA) -> np.ndarray:
    """Mask fill (semi-transparent) and a solid contour over the image, at the image's resolution."""
    rgb = to_rgb(img8).astype(np.float32)
    m = np.asarray(mask) > 0
    col = np.asarray(color, dtype=np.float32)
    rgb[m] = (1 - alpha) * rgb[m] + alpha * col
    if m.any():
        rgb[mask_edge(m)] = LESION_EDGE
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def mask_edge(mask: np.ndarray, width: int | None = None) -> np.ndarray:
    """The contour of a binary mask: the mask minus its erosion by a ``width`` x ``width`` square (default 3, or 5
    on images over 768 px so it stays visible)."""
    m = np.asarray(mask) > 0
    k = width or (3 if max(m.shape) < 768 else 5)
    eroded = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(k))) > 0
    return m & ~eroded


def view_slice(mask: np.ndarray) -> int:
    """The slice a 2-D view of a (Z, H, W) mask shows: the one with the largest lesion (the middle one if none)."""
    areas = np.asarray(mask).reshape(mask.shape[0], -1).sum(axis=1)
    return int(np.argmax(areas)) if areas.max() > 0 else mask.shape[0] // 2


def mosaic_slices(mask: np.ndarray, view: int, max_tiles: int = MAX_TILES) -> list[int]:
    """Slices of a volume's overlay: those with lesion (at most ``max_tiles``, evenly spread, ``view`` always in),
    or ``[view]`` when no slice has any."""
    with_lesion = np.flatnonzero(np.asarray(mask).reshape(mask.shape[0], -1).any(axis=1))
    if len(with_lesion) == 0:
        return [view]
    if len(with_lesion) <= max_tiles:
        return [int(z) for z in with_lesion]
    picked = {int(with_lesion[i]) for i in np.linspace(0, len(with_lesion) - 1, max_tiles).round().astype(int)}
    if view not in picked:
        picked.remove(min(picked, key=lambda z: abs(z - view)))
        picked.add(view)
    return sorted(picked)


def overlay_figure(img8: np.ndarray, mask: np.ndarray, note: str, threshold: float,
                   view: int | None = None) -> np.ndarray:
    """The ``<stem>_overlay.png`` people read: the mask over the image, then a caption band below it with a legend
    (mask colour = predicted lesion, the threshold) and the note, wrapped.

    A 2-D image keeps its aspect and is shown at least at its own size: k times, k the smallest integer giving a
    shortest side of at least :data:`~.figures.MIN_VIEW_SIDE` px (image bilinear, mask nearest, so each input
    pixel stays a k x k block). A volume (Z, H, W) becomes a mosaic of its slices with lesion (up to
    :data:`MAX_TILES`, each labelled with its index; ``view``, the slice with the largest lesion by default, is
    always one), each tile upscaled the same way.

    Args:
        img8: 8-bit display image (H, W) / (H, W, 3), or display slices (Z, H, W).
        mask: binary mask of the same (H, W) / (Z, H, W).
        note: the note the mask answers (printed in full, wrapped; very long notes end with an ellipsis).
        threshold: the probability threshold that made the mask (printed in the legend).
        view: for volumes, the slice always shown (default :func:`view_slice`).
    """
    img8, mask = np.asarray(img8), np.asarray(mask) > 0
    volume = mask.ndim == 3
    if volume:
        view = view_slice(mask) if view is None else view
        slices = mosaic_slices(mask, view)
        frames = [(img8[z], mask[z]) for z in slices]
    else:
        slices, frames = [], [(img8, mask)]
    h, w = frames[0][1].shape
    k = upscale_factor(h, w)
    tiles = [overlay_image(resize_array(to_rgb(im), (h * k, w * k)),
                           resize_array(m.astype(np.uint8), (h * k, w * k), nearest=True)) for im, m in frames]
    th, tw = tiles[0].shape[:2]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    gap = 4 if volume else 0
    width = cols * tw + (cols - 1) * gap
    fnt = font(font_size_for(width))
    tile_fnt = font(font_size_for(tw))
    label_h = line_height(tile_fnt) + 2 if volume else 0
    pad = max(6, line_height(fnt) // 2)

    # the caption: legend (swatch + what it is, the threshold, which slices), then the note
    step = line_height(fnt)
    swatch = step - 4
    text_w = width - 2 * pad
    legend = ["predicted lesion" if mask.any() else "no lesion predicted", f"mask: probability > {threshold:g}"]
    if volume:
        n_lesion = int(mask.reshape(mask.shape[0], -1).any(axis=1).sum())
        shown = f"{len(slices)} shown" if n_lesion else "the middle one shown"
        legend.append(f"{n_lesion} of {mask.shape[0]} slices with lesion, {shown}")
    indent = swatch + pad if mask.any() else 0
    legend_lines = [line for text in legend for line in wrap_text(text, fnt, text_w - indent)]
    note_lines = wrap_text(f"note: {note}" if note else "note: (none)", fnt, text_w, max_lines=8)
    band_h = pad + step * len(legend_lines) + pad // 2 + step * len(note_lines) + pad
    grid_h = rows * (label_h + th) + (rows - 1) * gap
    canvas = Image.new("RGB", (width, grid_h + band_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        x, y = (i % cols) * (tw + gap), (i // cols) * (label_h + th + gap)
        if volume:
            z = slices[i]
            label = f"slice {z}/{mask.shape[0] - 1}" + (" (largest)" if z == view and mask.any() else "")
            draw.text((x + 2, y + 1), fit_text(label, tile_fnt, tw - 4), fill=(0, 0, 0), font=tile_fnt)
        canvas.paste(Image.fromarray(tile), (x, y + label_h))
    y = grid_h + pad
    if mask.any():
        draw.rectangle([pad, y + 2, pad + swatch, y + 2 + swatch], fill=_blend(LESION_FILL), outline=LESION_EDGE,
                       width=max(2, swatch // 6))
    y = draw_lines(draw, (pad + indent, y), legend_lines, fnt)
    draw_lines(draw, (pad, y + pad // 2), note_lines, fnt, fill=(30, 30, 30))
    return np.asarray(canvas)


def _blend(color: tuple[int, int, int], alpha: float = LESION_ALPHA, base: int = 128) -> tuple[int, int, int]:
    """The overlay's fill colour over a mid-gray pixel: what the legend swatch shows."""
    return tuple(int(round((1 - alpha) * base + alpha * c)) for c in color)  # type: ignore[return-value]


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
            if not p.exists():  # registered, never written (unlink would fail on a read-only file system)
                continue
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # a read-only or failing file system: say what is left, never raise here
                log.warning("%s: could not remove this partial output (%s)", p, exc.strerror or exc)
        self.files.clear()


#: Axis names of predictions.json's ``shape`` (the mask as predict holds it: display slices, rows, columns).
SHAPE_ORDER = {2: ["row", "column"], 3: ["slice", "row", "column"]}


def write_png_mask(path: Path, mask: np.ndarray, meta: ImageMeta) -> tuple[int, int]:
    """Binary mask (0/255) at the input's own (H, W), on its stored pixel grid (an EXIF Orientation undone);
    returns the PNG's (rows, columns)."""
    if tuple(mask.shape) != tuple(meta.display_shape):
        raise DataError(f"{meta.path}: mask {mask.shape} does not match the input size {meta.display_shape}")
    write_mask_png(path, mask, meta)
    rows, cols = int(mask.shape[0]), int(mask.shape[1])
    return (cols, rows) if meta.exif_orientation in (5, 6, 7, 8) else (rows, cols)


def write_volume_mask(path: Path, mask: np.ndarray, meta: ImageMeta) -> tuple[int, ...]:
    """(Z, H, W) display-slice mask -> NIfTI with the input's affine/header (NIfTI or DICOM series input); returns
    the file's shape in its own voxel order (see :func:`~reclmis_core.data.writers.write_nifti_mask`)."""
    return write_nifti_mask(path, mask, meta)


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
