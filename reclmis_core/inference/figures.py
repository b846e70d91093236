"""Text and layout helpers for the PNG figures people read (overlays, ``--explain``), PIL only.

One font loader, one word wrapper and one integer upscale rule, shared by :mod:`.restore` (overlays) and
:mod:`.explain`, so every figure prints its note and labels the same way: wrapped, never cut mid-word without an
ellipsis, never drawn over the image.
"""

from __future__ import annotations

import math

from PIL import ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
ELLIPSIS = "\u2026"
#: Shortest side (pixels) a picture is brought up to before labels are added: below it, a 33x41 slice is a thumbnail.
MIN_VIEW_SIDE = 256


def font(size: int) -> Font:
    """Pillow's bundled font at ``size`` pixels (the fixed bitmap font where Pillow has no sized default)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def line_height(fnt: Font) -> int:
    """Pixels from one text line to the next (ascent + descent of the font, plus a little leading)."""
    left, top, right, bottom = fnt.getbbox("Ag|")
    return int(math.ceil((bottom - min(top, 0)) * 1.25))


def text_width(fnt: Font, text: str) -> int:
    return int(math.ceil(fnt.getlength(text)))


def fit_text(text: str, fnt: Font, width: int) -> str:
    """``text`` if it fits in ``width`` pixels, else its longest prefix that fits with an ellipsis."""
    if text_width(fnt, text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix whose text + ellipsis fits
        mid = (lo + hi + 1) // 2
        if text_width(fnt, text[:mid] + ELLIPSIS) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ELLIPSIS


def wrap_text(text: str, fnt: Font, width: int, max_lines: int | None = None) -> list[str]:
    """Break ``text`` into lines of at most ``width`` pixels at spaces (a word longer than a line is split).

    With ``max_lines``, the last kept line ends with an ellipsis when text was left out.
    """
    lines: list[str] = []
    current = ""
    for word in text.split():
        while text_width(fnt, word) > width:  # a word wider than a line: split it where it stops fitting
            if current:
                lines.append(current)
                current = ""
            cut = max(1, len(fit_text(word, fnt, width)) - 1)
            lines.append(word[:cut])
            word = word[cut:]
        trial = f"{current} {word}" if current else word
        if text_width(fnt, trial) <= width:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if max_lines is not None and len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and text_width(fnt, last + " " + ELLIPSIS) > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], f"{last.rstrip()} {ELLIPSIS}".lstrip()]
    return lines or [""]


def upscale_factor(height: int, width: int, min_side: int = MIN_VIEW_SIDE) -> int:
    """The smallest integer k with ``k * min(height, width) >= min_side`` (1 for pictures already that big).

    An integer factor keeps every input pixel a k x k block, so a mask upscaled with nearest neighbours stays on
    the input's pixel grid."""
    return max(1, math.ceil(min_side / max(1, min(height, width))))


def font_size_for(width: int) -> int:
    """A label font that stays readable when a figure of ``width`` pixels is shown scaled to a screen."""
    return int(min(48, max(13, round(width / 40))))


def draw_lines(draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: list[str], fnt: Font,
               fill: tuple[int, int, int] = (0, 0, 0)) -> int:
    """Draw ``lines`` downwards from ``xy``; returns the y below the last one."""
    x, y = xy
    step = line_height(fnt)
    for line in lines:
        draw.text((x, y), line, fill=fill, font=fnt)
        y += step
    return y
