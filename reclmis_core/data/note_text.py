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

:func:`parse_note` reads any of these (and real QaTa notes, and other wordings: ``right apical zone``, ``upper and
mid zones of the left lung``, ``bibasal``) back into sides, zones and the area count; :func:`read_note` rewrites a
note as the zones it names in the ``plain`` wording, the text a model with ``model.text.reader=zones`` reads.
"""

from __future__ import annotations

import functools
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


_COUNT_RE = re.compile(r"\b([a-z]+|\d+)\s+(?:infected\s+)?(?:areas?|lesions?|regions?|foci)\b", re.IGNORECASE)
_EMPTY_RE = re.compile(r"\bno\s+(?:pulmonary\s+)?(?:infection|lesion|opacit)", re.IGNORECASE)

# The lexicon of the zone reader: common radiology words for the sides and the three levels of a lung.
_SIDE_WORDS = {"left": ("left",), "right": ("right",), "lt": ("left",), "rt": ("right",), "both": ("left", "right"),
               "bilateral": ("left", "right"), "bilaterally": ("left", "right")}
_LEVEL_WORDS = {
    **dict.fromkeys(("upper", "apical", "apex", "apices", "superior", "top", "cranial"), ("upper",)),
    **dict.fromkeys(("middle", "mid", "midzone", "midzones", "central", "midlung", "perihilar", "parahilar", "hilar"),
                    ("middle",)),
    **dict.fromkeys(("lower", "basal", "base", "bases", "basilar", "inferior", "bottom", "costophrenic", "caudal"),
                    ("lower",)),
    **dict.fromkeys(("all", "entire", "whole"), LEVELS),
}
_BOTH_LEVEL_WORDS = {"bibasal": "lower", "bibasilar": "lower", "biapical": "upper"}  # a level on both sides
# Lobe and zone abbreviations (right/left upper/middle/lower lobe or zone) name one zone each.
_ABBREVIATIONS = {f"{s[0]}{lv[0]}{kind}": (s, lv) for s in SIDES for lv in LEVELS for kind in "lz"}
_LIST_WORDS = {"and", ",", "or", "&"}  # join levels of one group ("upper, mid and lower")
_RANGE_WORDS = {"to", "through"}  # "upper to mid zones": every level between
_NOUNS = {"zone", "zones", "field", "fields", "lung", "lungs", "lobe", "lobes", "region", "regions", "third", "thirds",
          "portion", "portions", "part", "parts", "hemithorax", "side", "sided", "lobar", "area", "areas", "segment",
          "segments", "aspect"}
_POST_SKIP = _NOUNS | {"of", "the", "in"}  # "upper and mid zones of the right lung"
_SENTENCE_END = {".", ";", "\n"}
# Negation, NegEx-style: a cue before the zones ("no opacity in the right upper zone") reaches to the end of its clause;
# a cue after them ("the right lung is clear") reaches back to the clause's start. Clauses end at a sentence end, a
# contrast word, and (unless inside a run of levels: "upper, mid and lower zones") a comma; "and" also ends a clause
# looking back ("opacity in the left lower zone and the right lung is clear").
_NEGATION_BEFORE = {"no", "without", "sparing", "spares", "spare", "excluding", "not"}
_NEGATION_AFTER = {"clear", "spared", "unaffected", "uninvolved", "normal", "unremarkable", "free"}
_NOT_NEGATION = {"change", "changes", "interval", "significant", "increase", "decrease", "longer", "only"}  # "no change"
_NEGATED_BY_NOT_AFTER = {"involved", "affected"}  # "the right lung is not involved"
_CONTRAST_WORDS = {"but", "however", "whereas", "while", "although", "though", "except", "apart", "otherwise", "with"}
_TOKEN_RE = re.compile(r"[a-z]+|\d+|\n|[^\sa-z\d]")


def _level_groups(words: list[str]) -> list[tuple[int, int, set[str]]]:
    """Runs of level words joined by list or range words: (first index, last index, levels)."""
    groups: list[tuple[int, int, set[str]]] = []
    i = 0
    while i < len(words):
        if words[i] not in _LEVEL_WORDS:
            i += 1
            continue
        first, levels, last = i, set(_LEVEL_WORDS[words[i]]), i
        j = i + 1
        while j < len(words):
            if words[j] in _LEVEL_WORDS:  # "upper middle left lung"
                levels |= set(_LEVEL_WORDS[words[j]])
                last, j = j, j + 1
                continue
            if not (j + 1 < len(words) and words[j] in _LIST_WORDS | _RANGE_WORDS and words[j + 1] in _LEVEL_WORDS):
                break
            new = _LEVEL_WORDS[words[j + 1]]
            if words[j] in _RANGE_WORDS:  # every level from the last one to this one
                ends = sorted(LEVELS.index(lv) for lv in (*[LEVELS[max(LEVELS.index(x) for x in levels)]], *new))
                new = LEVELS[ends[0]: ends[-1] + 1]
            levels |= set(new)
            last, j = j + 1, j + 2
        groups.append((first, last, levels))
        i = last + 1
    return groups


def _side_of_group(words: list[str], first: int, last: int) -> int | None:
    """Index of the side word a level group belongs to: the word right before it (``right upper zone``), else the
    first after it across nouns (``upper left lung``, ``upper and mid zones of the right lung``), else the last side
    named earlier in the same sentence (``right lung upper zone``, ``Left lung: upper zone ...``)."""
    if first > 0 and words[first - 1] in _SIDE_WORDS:
        return first - 1
    j = last + 1
    while j < len(words) and words[j] in _POST_SKIP:
        j += 1
    if j < len(words) and words[j] in _SIDE_WORDS:
        return j
    j = first - 1
    while j >= 0 and words[j] not in _SENTENCE_END:
        if words[j] in _SIDE_WORDS:
            return j
        j -= 1
    return None


def _negated(words: list[str], groups: list[tuple[int, int, set[str]]]) -> set[int]:
    """Indices of the words a negation reaches (see ``_NEGATION_BEFORE``)."""
    inside = {k for first, last, _ in groups for k in range(first, last + 1)}

    def ends_clause(k: int, back: bool) -> bool:
        w = words[k]
        return (w in _SENTENCE_END or w in _CONTRAST_WORDS or (w == "," and k not in inside)
                or (back and w == "and" and k not in inside))

    out: set[int] = set()
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        after = w in _NEGATION_AFTER or (w == "not" and nxt in _NEGATED_BY_NOT_AFTER)
        if after:
            k = i - 1
            while k >= 0 and not ends_clause(k, back=True):
                out.add(k)
                k -= 1
        elif w in _NEGATION_BEFORE and nxt not in _NOT_NEGATION:
            k = i + 1
            while k < len(words) and not ends_clause(k, back=False):
                out.add(k)
                k += 1
    return out


@dataclass(frozen=True)
class _Reading:
    zones: frozenset[int]  # the zones a note names (not negated)
    bare: frozenset[str]  # sides named without a level, and without any zone of theirs
    unplaced: tuple[str, ...]  # level words the reader could not give a side ("upper zone" alone)


@functools.lru_cache(maxsize=8192)  # the tokenizer reads every training note again each epoch: parse it once
def _reading(text: str) -> _Reading:
    words = _TOKEN_RE.findall(text.lower().replace("-", " "))
    groups = _level_groups(words)
    negated = _negated(words, groups)
    zones: set[int] = set()
    used: set[int] = set()  # indices of side words that a level group took
    unplaced: list[str] = []
    for first, last, levels in groups:
        at = _side_of_group(words, first, last)
        if at is not None:
            used.add(at)
        if first in negated:
            continue
        if at is None:
            unplaced.append(" ".join(words[first:last + 1]))
            continue
        zones |= {zone_code(s, lv) for s in _SIDE_WORDS[words[at]] for lv in levels}
    for i, w in enumerate(words):
        if i in negated:
            continue
        if w in _BOTH_LEVEL_WORDS:
            zones |= {zone_code(s, _BOTH_LEVEL_WORDS[w]) for s in SIDES}
        elif w in _ABBREVIATIONS:
            zones.add(zone_code(*_ABBREVIATIONS[w]))
    bare = {s for i, w in enumerate(words) if w in ("left", "right", "lt", "rt") and i not in used | negated
            for s in _SIDE_WORDS[w]}
    return _Reading(frozenset(zones), frozenset(bare - {ZONE_CODES[c][0] for c in zones}), tuple(unplaced))


def unplaced_levels(text: str) -> list[str]:
    """Level words of ``text`` the zone reader could not give a side, and so did not read (``["upper"]`` for
    ``"opacity in the upper zone and left base"``)."""
    return list(_reading(str(text)).unplaced)


def parse_note(text: str) -> ParsedNote | None:
    """Sides, zones and area count of a note: any of the styles above, a QaTa-COV19 note, or another wording.

    The zone reader knows common radiology words for the levels (upper / apical / superior, middle / mid /
    central / perihilar, lower / basal / inferior / base / costophrenic, all / entire / whole, bibasal, lobe and
    zone abbreviations such as RUL or LLZ) and sides (left, right, both, bilateral) and binds each run of levels
    to its side whether the side comes first (``right upper and mid zones``), last (``upper left lung``, ``basal
    zones of both lungs``) or earlier in the sentence. It reads negation within a clause: ``no opacity in the left upper
    zone``, ``the right lung is clear`` and ``sparing the apices`` name none; ``no change in the left lower zone``
    names it.

    Returns ``None`` when the note names neither a zone nor "no infection". A side named without a level
    (``"left lung"``) is not a zone; ``Bilateral``/``Unilateral`` alone give no side.
    """
    text = str(text)
    zones = set(_reading(text).zones)
    if not zones:
        return ParsedNote(set(), set(), 0, True) if _EMPTY_RE.search(text) else None
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
    return ParsedNote({ZONE_CODES[c][0] for c in zones}, zones, count, False)


NOTE_READERS = ("raw", "zones")


def read_note(text: str, reader: str = "zones") -> str:
    """The text a model reads for ``text``: as written (``raw``), or (``zones``) the zones the note names in one
    plain wording, whatever the note's grammar: ``"upper left and lower right lung"``; ``"left lung"`` for a side
    named without a level; ``"no infection"``; ``""`` (no note) when it names none of these.

    Example:
        >>> read_note("Findings: 2 foci of consolidation, right apical zone and mid zone of the left lung.")
        'middle left and upper right lung'
    """
    if reader == "raw":
        return text
    if reader != "zones":
        raise ValueError(f"unknown note reader {reader!r}; choose one of {', '.join(NOTE_READERS)}")
    reading = _reading(str(text))  # cached: the tokenizer reads every training note again each epoch
    zones, bare = reading.zones, reading.bare
    if zones:
        return format_note([[c] for c in zones], "plain")
    if bare:
        return _join(sorted(bare)) + " lung"
    return NO_INFECTION["plain"] if _EMPTY_RE.search(str(text)) else ""
