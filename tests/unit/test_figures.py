"""The PNGs people read: overlays (legend, note, readable volumes) and the ``--explain`` figure (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from reclmis_core.data.preprocess import plan_geometry
from reclmis_core.inference.explain import Explanation, colormap, render_explanation
from reclmis_core.inference.figures import ELLIPSIS, MIN_VIEW_SIDE, font, text_width, upscale_factor, wrap_text
from reclmis_core.inference.restore import (
    LESION_EDGE,
    MAX_TILES,
    mosaic_slices,
    overlay_figure,
    overlay_image,
    view_slice,
)

NOTE = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."
WHITE = (255, 255, 255)


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8)


def _has_ink(region: np.ndarray) -> bool:
    return bool((region.reshape(-1, 3) != WHITE).any(axis=1).any())


# -- text helpers -------------------------------------------------------------------------------------------


def test_wrap_keeps_every_word_within_the_width():
    fnt = font(13)
    lines = wrap_text(NOTE, fnt, 150)
    assert len(lines) > 1 and all(text_width(fnt, line) <= 150 for line in lines)
    assert " ".join(lines).split() == NOTE.split()


def test_wrap_splits_a_word_longer_than_a_line_and_marks_what_it_leaves_out():
    fnt = font(13)
    word = "pneumomediastinum" * 4
    lines = wrap_text(word, fnt, 80)
    assert "".join(lines) == word and all(text_width(fnt, line) <= 80 for line in lines)
    cut = wrap_text(NOTE * 10, fnt, 200, max_lines=3)
    assert len(cut) == 3 and cut[-1].endswith(ELLIPSIS) and text_width(fnt, cut[-1]) <= 200


# -- overlays -----------------------------------------------------------------------------------------------


def test_2d_overlay_has_the_image_then_a_caption_band_with_legend_and_note():
    img = np.add.outer(np.arange(50) * 2, np.arange(70) * 2).astype(np.uint8)  # a smooth gradient
    mask = _disc(50, 70, 20, 30, 9)
    fig = overlay_figure(img, mask, NOTE, 0.5)
    k = upscale_factor(50, 70)
    assert k == 6 and fig.shape[1] == 70 * k  # shortest side 50 -> 300 px >= 256, aspect kept
    picture, band = fig[: 50 * k], fig[50 * k:]
    # the picture is the overlay of the image brought up k times (image bilinear, mask nearest: k x k blocks)
    small = overlay_image(img, mask).astype(int)
    centres = picture[k // 2::k, k // 2::k].astype(int)
    inside = np.asarray(_disc(50, 70, 20, 30, 7), bool)  # away from the contour, drawn at the upscaled size
    assert np.abs(centres - small)[inside].mean() < 6 and np.abs(centres - small)[mask == 0].mean() < 6
    masked = np.repeat(np.repeat(mask > 0, k, 0), k, 1)
    assert (picture[masked][:, 0].astype(int) - picture[masked][:, 2].astype(int)).mean() > 20  # red fill
    assert band.shape[0] > 40 and _has_ink(band)  # legend + note below the image, never over it
    assert (band.reshape(-1, 3) == LESION_EDGE).all(axis=1).any()  # the legend's swatch
    longer = overlay_figure(img, mask, NOTE * 3, 0.5)
    assert longer.shape[0] > fig.shape[0] and longer.shape[1] == fig.shape[1]  # the note wraps, not cut


def test_big_images_keep_their_size():
    img = np.zeros((600, 800), dtype=np.uint8)
    fig = overlay_figure(img, _disc(600, 800, 300, 400, 80), NOTE, 0.5)
    assert upscale_factor(600, 800) == 1 and fig.shape[1] == 800 and fig.shape[0] > 600


def test_volume_overlay_is_a_readable_mosaic_of_slices_with_lesion():
    vol = np.random.default_rng(1).integers(0, 255, (25, 41, 33), dtype=np.uint8)  # anatomical.nii's 33x41
    mask = np.zeros_like(vol)
    for z in (8, 9, 10):
        mask[z] = _disc(41, 33, 20, 15, 3 + z - 8)
    assert view_slice(mask) == 10 and mosaic_slices(mask, 10) == [8, 9, 10]
    fig = overlay_figure(vol, mask, NOTE, 0.5)
    k = upscale_factor(41, 33)
    assert 33 * k >= MIN_VIEW_SIDE
    assert fig.shape[1] >= 2 * 33 * k and min(fig.shape[:2]) >= MIN_VIEW_SIDE  # 2 x 2 tiles of 264 x 328 px
    empty = overlay_figure(vol, np.zeros_like(mask), NOTE, 0.5)  # no lesion: the middle slice, still readable
    assert empty.shape[1] == 33 * k


def test_mosaic_spreads_many_slices_and_keeps_the_largest():
    mask = np.zeros((60, 8, 8), dtype=np.uint8)
    mask[5:55, 2:4, 2:4] = 1
    mask[37, :, :] = 1  # the largest lesion
    picked = mosaic_slices(mask, view_slice(mask))
    assert len(picked) == MAX_TILES and 37 in picked and picked == sorted(picked)
    assert picked[0] == 5 and picked[-1] == 54
    assert mosaic_slices(np.zeros((7, 8, 8), np.uint8), 3) == [3]


# -- explain ------------------------------------------------------------------------------------------------


@pytest.fixture
def explanation() -> tuple[np.ndarray, np.ndarray, Explanation]:
    rng = np.random.default_rng(2)
    tokens = ["[BOS]", "bilateral", "pneumomediastinum" * 3, "infection", "[EOS]"]
    w_woi = rng.random(len(tokens)).astype(np.float32)
    w_poi = rng.random((4, 4)).astype(np.float32)
    return (rng.integers(0, 255, (90, 120), dtype=np.uint8), _disc(90, 120, 30, 40, 14),
            Explanation(w_poi / w_poi.sum(), tokens, w_woi / w_woi.sum()))


def test_explain_figure_has_a_colour_bar_and_nothing_clipped(explanation):
    img, mask, exp = explanation
    fig = render_explanation(img, mask, exp, plan_geometry(img.shape, None, 64), NOTE * 4)
    colours = {tuple(c) for c in fig.reshape(-1, 3)}
    for end in colormap(np.asarray([0.0, 1.0])):  # both ends of the ramp: the colour bar is drawn
        assert tuple(int(c) for c in end) in colours
    border = np.concatenate([fig[:, -3:], fig[-3:].transpose(1, 0, 2)], axis=0)
    assert not _has_ink(border)  # no label runs off the right or bottom edge
    taller = render_explanation(img, mask, exp, plan_geometry(img.shape, None, 64), NOTE)
    assert fig.shape[0] > taller.shape[0]  # a longer note wraps onto more lines instead of being cut
