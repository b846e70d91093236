"""The words of a lung-zone note: zone codes, the QaTa-COV19 sentence and its parser.

A *zone* is one third (upper / middle / lower) of one lung (the patient's right / left), coded
``1 + 3 * side_index + level_index`` (0 = background), the codes the synthetic lesion label maps carry. An
*area* is one infected region (a connected component of the mask); it covers one or more zones.

Styles of :func:`format_note`:

* ``qata``: the QaTa-COV19 sentence, one phrase per area, an area spanning levels written as QaTa does
  (``middle lower right lung``, ``all left lung``):
  ``"Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."``
* ``mosmed``: the same sentence with one phrase per *zone* (spans are listed zone by zone), the form of the
  MosMedData+ notes as far as this package knows them.
* ``plain``: a short phrase, ``"upper left and lower right lung"``.

:func:`parse_note` reads any of these (and real QaTa notes) back into sides, zones and the area count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SIDES = ("right", "left")  # patient's side; in a radiograph the patient's right is on the image's LEFT half
LEVELS = ("upper", "middle", "lower")
#: Zone code -> (side, level). Code = 1 + 3 * side_index + level_index; 0 is background.
ZONE_CODES: dict[int, tuple[str, str]] = {
    1 + 3 * s + lv: (SIDES[s], LEVELS[lv]) for s in range(2) for lv in range(3)
}
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
STYLES = ("qata", "mosmed", "plain")
NO_INFECTION = {"qata": "No pulmonary infection.", "mosmed": "No pulmonary infection.", "plain": "no infection"}


def zone_code(side: str, level: str) -> int:
    return 1 + 3 * SIDES.index(side) + LEVELS.index(level)


def zone_key(code: int) -> str:
    """Machine-readable zone name, level then side: ``lower_left``."""
    side, level = ZONE_CODES[code]
    return f"{level}_{side}"


def zones_field(codes: Sequence[int]) -> str:
    """The ``zones`` column: ``lower_left;upper_right`` (sorted, unique; empty when there is no lesion)."""
    return ";".join(sorted({zone_key(c) for c in codes}))


def parse_zones_field(value: str) -> set[int]:
    out = set()
    for part in (p.strip() for p in str(value).split(";")):
        if part:
            level, side = part.split("_")
            out.add(zone_code(side, level))
    return out


def _number(n: int) -> str:
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def _order(code: int) -> tuple[bool, int]:
    side, level = ZONE_CODES[code]
    return side != "left", LEVELS.index(level)  # left lung first, upper to lower (the QaTa habit)


def _phrases(areas: Sequence[Sequence[int]], style: str) -> list[str]:
    """One phrase per area (qata; split per side when an area crosses the midline) or per zone (mosmed, plain)."""
    groups: list[list[int]] = []
    for area in areas:
        for side in ("left", "right"):
            codes = sorted({c for c in area if ZONE_CODES[c][0] == side}, key=_order)
            if not codes:
                continue
            groups.extend([codes] if style == "qata" else [[c] for c in codes])
    groups.sort(key=lambda g: _order(g[0]))
    out: list[str] = []
    for g in groups:
        side = ZONE_CODES[g[0]][0]
        levels = "all" if len(g) == 3 else " ".join(ZONE_CODES[c][1] for c in g)
        phrase = f"{levels} {side}" if style == "plain" else f"{levels} {side} lung"
        if phrase not in out:
            out.append(phrase)
    return out


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def format_note(areas: Sequence[Sequence[int]], style: str = "qata") -> str:
    """The note for ``areas`` (one list of zone codes per infected area; no areas = no infection).

    Example:
        >>> format_note([[4], [3]])
        'Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.'
        >>> format_note([[2, 3]], "plain")
        'middle lower right lung'
    """
    if style not in STYLES:
        raise ValueError(f"unknown note style '{style}'; choose one of {', '.join(STYLES)}")
    if not areas:
        return NO_INFECTION[style]
    phrases = _phrases(areas, style)
    if style == "plain":
        return _join(phrases) + " lung"
    n = len(areas)
    sides = {ZONE_CODES[c][0] for a in areas for c in a}
    kind = "Bilateral" if len(sides) == 2 else "Unilateral"
    return f"{kind} pulmonary infection, {_number(n)} infected area{'s' if n > 1 else ''}, {_join(phrases)}."


@dataclass
class ParsedNote:
    """What a note says: sides, zones and the number of areas (``None`` when the note does not say)."""

    sides: set[str]
    zones: set[int]
    count: int | None
    empty: bool  # the note says there is no infection


_ZONE_RE = re.compile(r"\b((?:(?:upper|middle|lower|all)\s+)+)(left|right)\b", re.IGNORECASE)
_COUNT_RE = re.compile(r"\b([a-z]+|\d+)\s+(?:infected\s+)?(?:areas?|lesions?|regions?)\b", re.IGNORECASE)
_EMPTY_RE = re.compile(r"\bno\s+(?:pulmonary\s+)?(?:infection|lesion|opacit)", re.IGNORECASE)


def parse_note(text: str) -> ParsedNote | None:
    """Sides, zones and area count of a note in any of the styles above (or a QaTa-COV19 note).

    Returns ``None`` when the note names neither a zone nor "no infection". A side named without a level
    (``"left lung"``) is not a zone; ``Bilateral``/``Unilateral`` alone give no side.
    """
    text = str(text)
    if _EMPTY_RE.search(text):
        return ParsedNote(set(), set(), 0, True)
    zones: set[int] = set()
    for levels, side in _ZONE_RE.findall(text):
        words = levels.lower().split()
        for level in (LEVELS if "all" in words else words):
            zones.add(zone_code(side.lower(), level))
    count = None
    m = _COUNT_RE.search(text)
    if m:
        word = m.group(1).lower()
        if word.isdigit():
            count = int(word)
        elif word in NUMBERS:
            count = NUMBERS.index(word)
        elif word in ("a", "an", "single"):
            count = 1
    if not zones:
        return None
    return ParsedNote({ZONE_CODES[c][0] for c in zones}, zones, count, False)
