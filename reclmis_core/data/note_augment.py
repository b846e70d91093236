"""Train-time note augmentation: the same meaning in other words, so the text tower does not memorise templates.

Three rewrites, each keeping which zones a note names (and so its mask):

* **synonyms** for the levels from a small radiology lexicon (:data:`LEVEL_SYNONYMS`: upper / apical / superior,
  middle / mid / central, lower / basal / inferior) and counts as digits or words (``two`` / ``2``);
* **word order**: ``upper left lung`` <-> ``left upper lung`` (the level after the side);
* **word dropout** of the words that carry no zone (``pulmonary``, ``infection``, ``area``, ...).

Left and right are never swapped here (the honest flip of :mod:`.transforms` does that, with the image).
The lexicon is also added to the scratch tokenizer's corpus (:func:`lexicon_corpus`), so its words are known.

Example:
    >>> augment_note("Unilateral pulmonary infection, one infected area, upper left lung.", np.random.default_rng(1))
    'Unilateral infection, 1 infected area, left apical lung.'  # one possible draw
"""

from __future__ import annotations

import re

import numpy as np

from .note_text import NUMBERS

LEVEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "upper": ("upper", "apical", "superior"),
    "middle": ("middle", "mid", "central"),
    "lower": ("lower", "basal", "inferior"),
}
_LEVEL_OF = {w: level for level, words in LEVEL_SYNONYMS.items() for w in words}
_LEVEL = "|".join(sorted(_LEVEL_OF, key=len, reverse=True))
_ORDER_RE = re.compile(rf"\b((?:(?:{_LEVEL}|all)\s+)+)(left|right)\b", re.IGNORECASE)
_WORD_RE = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]+")
_KEEP = set(_LEVEL_OF) | {"left", "right", "all", "lung", "lungs", "and", "no", "zone", "zones"} | set(NUMBERS)


def _case_like(word: str, template: str) -> str:
    return word.capitalize() if template[:1].isupper() else word


def _swap_words(note: str, rng: np.random.Generator, p: float) -> str:
    out = []
    for tok in _WORD_RE.findall(note):
        low = tok.lower()
        if low in _LEVEL_OF and rng.random() < p:
            tok = _case_like(str(rng.choice(LEVEL_SYNONYMS[_LEVEL_OF[low]])), tok)
        elif low in NUMBERS[1:] and rng.random() < p:
            tok = str(NUMBERS.index(low))
        elif tok.isdigit() and 0 < int(tok) < len(NUMBERS) and rng.random() < p:
            tok = _case_like(NUMBERS[int(tok)], tok)
        out.append(tok)
    return "".join(out)


def _side_first(note: str, rng: np.random.Generator, p: float) -> str:
    """``upper middle left lung`` -> ``left upper middle lung`` (per phrase, with probability ``p``)."""
    def flip(m: re.Match[str]) -> str:
        if rng.random() >= p:
            return m.group(0)
        return f"{m.group(2)} {m.group(1).strip()}"

    return _ORDER_RE.sub(flip, note)


def _drop_words(note: str, rng: np.random.Generator, p: float) -> str:
    words = note.split(" ")
    kept = [w for w in words if re.sub(r"[^a-z\d]", "", w.lower()) in _KEEP or rng.random() >= p]
    return " ".join(kept) if kept else note


def augment_note(note: str, rng: np.random.Generator, p_synonym: float = 0.5, p_order: float = 0.3,
                 p_drop: float = 0.1) -> str:
    """``note`` rewritten with level synonyms, side-first word order and dropped filler words (see module doc)."""
    return _drop_words(_side_first(_swap_words(note, rng, p_synonym), rng, p_order), rng, p_drop)


def lexicon_corpus() -> list[str]:
    """Sentences that hold every word the augmentation can write (for a tokenizer learnt from the notes)."""
    return [" ".join(words) + " left right lung zone" for words in LEVEL_SYNONYMS.values()] + [
        " ".join(str(i) for i in range(1, len(NUMBERS)))]
