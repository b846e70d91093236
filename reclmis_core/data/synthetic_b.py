"""Phantom family ``b``: a second generator, built to test that guidance does not depend on family ``a``'s design.

It differs from family ``a`` (:mod:`.synthetic`) in everything a model could latch on to:

* **notes** come from another grammar: other sentence templates, synonyms for the levels (apical / upper /
  superior, mid / middle / central, basal / lower / inferior), the side before or after the level, several zones
  of one lung in one phrase (``right upper and mid zones``), counts as digits, words or none, no
  "Unilateral/Bilateral pulmonary infection" opener;
* **lesions** are not clipped to their zone: they may cross zone borders (clipped to the lung only), come in
  three textures (ground-glass, consolidation, nodular cluster), with wider sizes and intensity ranges;
* **images** have lungs whose centres, sizes and heights vary more and differ between the two sides, a tilt,
  other background intensities, a random gamma and more noise;
* the **test split is hard**: every test image holds four lesions in four zones and appears twice, with two notes
  that each name two of them (counterfactual pairs, manifest column ``pair``).

A lesion belongs to the zone that holds the largest share of its pixels (its *main zone*); the lesion label map
holds that zone's code over all of the lesion's pixels, across borders. ``reclmis notes`` names a region by the
same rule.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .layouts import SPLITS
from .note_text import LEVELS, SIDES, ZONE_CODES, _number
from .synthetic_types import SyntheticConfig, SyntheticItem, smooth_noise


# The same words as note_augment.LEVEL_SYNONYMS, kept apart on purpose: this list (and its order, which the seeded
# notes depend on) belongs to the test family, that one to a training option; docs/experiments.md reports the overlap.
LEVEL_WORDS = {"upper": ("apical", "upper", "superior"), "middle": ("mid", "middle", "central"),
               "lower": ("basal", "lower", "inferior")}
FINDINGS = ("opacity", "consolidation", "ground-glass opacity", "infiltrate", "airspace opacity")
_PLURAL = {"opacity": "opacities", "consolidation": "consolidations", "ground-glass opacity": "ground-glass opacities",
           "infiltrate": "infiltrates", "airspace opacity": "airspace opacities"}
TEST_LESIONS = 4  # lesions per hard test image; each note of its pair names half of them


def _side_phrase(rng: np.random.Generator, side: str, codes: list[int]) -> str:
    """Zones of one lung: ``right upper and mid zones`` or ``upper and mid zones of the right lung``."""
    words = [str(rng.choice(LEVEL_WORDS[ZONE_CODES[c][1]])) for c in sorted(codes)]
    levels = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    noun = "zone" if len(words) == 1 else "zones"
    if rng.random() < 0.5:
        return f"{side} {levels} {noun}"
    return f"{levels} {noun} of the {side} lung"


def make_note_b(codes: list[int], rng: np.random.Generator) -> str:
    """A family-``b`` note naming ``codes`` (one lesion per zone), in one of five templates.

    Example:
        >>> make_note_b([1, 6], np.random.default_rng(0))  # doctest: +SKIP
        'Findings: 2 foci of consolidation, right apical zone and left basal zone.'
    """
    if not codes:
        raise ValueError("a note needs at least one zone")
    by_side = {s: [c for c in codes if ZONE_CODES[c][0] == s] for s in SIDES}
    sides = [s for s in (SIDES if rng.random() < 0.5 else SIDES[::-1]) if by_side[s]]
    parts = [_side_phrase(rng, s, by_side[s]) for s in sides]
    where = parts[0] if len(parts) == 1 else f"{parts[0]} and {parts[1]}"
    n = len(codes)
    finding = str(rng.choice(FINDINGS))
    count = (str(n) if rng.random() < 0.5 else _number(n)) if n > 1 else str(rng.choice(["a", "one", "1"]))
    noun = _PLURAL[finding] if n > 1 else finding
    template = int(rng.integers(5))
    if template == 0:
        return f"{count.capitalize()} {noun} in the {where}."
    if template == 1:
        return f"Findings: {count} {noun}, {where}."
    if template == 2:
        return f"{where[0].upper() + where[1:]}: {noun}."
    if template == 3:
        lungs = "both lungs" if len(sides) == 2 else f"the {sides[0]} lung only"
        return f"Infection involving {lungs}, {where} ({count} {'lesions' if n > 1 else 'lesion'})."
    return f"There is {noun} in the {where}." if n == 1 else f"There are {count} {noun} in the {where}."


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


def _anatomy(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32 0..255 without lesions, zone codes uint8, lung mask bool); lungs vary and tilt."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    u = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    tilt = np.deg2rad(u(-7, 7))
    ty = (yy - 0.5) * np.cos(tilt) + (xx - 0.5) * np.sin(tilt) + 0.5
    tx = -(yy - 0.5) * np.sin(tilt) + (xx - 0.5) * np.cos(tilt) + 0.5
    body = ((ty - 0.55) / u(0.48, 0.56)) ** 2 + ((tx - 0.5) / u(0.40, 0.47)) ** 2 < 1
    img = np.full((s, s), u(0, 30), dtype=np.float32)
    img[body] = u(120, 175)
    lung_level = u(30, 75)
    zones = np.zeros((s, s), dtype=np.uint8)
    lungs = np.zeros((s, s), dtype=bool)
    for si, (side, cx) in enumerate((("right", u(0.27, 0.34)), ("left", u(0.66, 0.73)))):
        cy, ry, rx = u(0.42, 0.50), u(0.22, 0.31), u(0.10, 0.16)
        power = u(1.6, 2.6)  # superellipse: rounder or boxier lungs
        m = (np.abs((ty - cy) / ry) ** power + np.abs((tx - cx) / rx) ** power) < 1
        heart_side = si == 1 and rng.random() < 0.7
        if heart_side:  # a bite of the heart out of the lower inner part of the patient's left lung
            m &= ~((((ty - (cy + 0.6 * ry)) / (0.5 * ry)) ** 2 + ((tx - (cx - 0.8 * rx)) / (0.9 * rx)) ** 2) < 1)
        rows = np.nonzero(m.any(axis=1))[0]
        if len(rows) == 0:
            continue
        top, height = rows[0], rows[-1] - rows[0] + 1
        level = np.clip(((np.arange(s) - top) * 3) // max(height, 1), 0, 2)
        code = (1 + 3 * si + level)[:, None].repeat(s, axis=1)
        zones[m] = code[m].astype(np.uint8)
        lungs |= m
    tex = smooth_noise(rng, s, int(rng.integers(10, 30)))
    img[lungs] = lung_level + u(6, 16) * tex[lungs]
    vessels = 0.5 + 0.5 * np.sin((tx * u(20, 40) + 3 * tex) * np.pi)
    img[lungs] += u(0, 10) * vessels[lungs]
    img += u(3, 9) * smooth_noise(rng, s, 50)
    return img, zones, lungs


def _blob(rng: np.random.Generator, s: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    ry, rx = r * float(rng.uniform(0.6, 1.4)), r * float(rng.uniform(0.6, 1.4))
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    wob = smooth_noise(rng, s, 6) * 0.3
    return np.clip(1.5 - (d + wob), 0, 1)


def _lesion(rng: np.random.Generator, zones: np.ndarray, lungs: np.ndarray, code: int,
            s: int) -> np.ndarray | None:
    """Opacity map (0..1) of one lesion centred in zone ``code``, clipped to the lung (not the zone)."""
    ys, xs = np.nonzero(zones == code)
    if len(ys) < 20:
        return None
    k = int(rng.integers(len(ys)))
    cy, cx = 0.6 * ys[k] + 0.4 * ys.mean(), 0.6 * xs[k] + 0.4 * xs.mean()
    texture = int(rng.integers(3))
    if texture == 2:  # nodular cluster: a few small blobs around the centre
        op = np.zeros((s, s), dtype=np.float32)
        for _ in range(int(rng.integers(3, 6))):
            op = np.maximum(op, _blob(rng, s, cy + rng.normal(0, 0.03 * s), cx + rng.normal(0, 0.03 * s),
                                      s * float(rng.uniform(0.018, 0.035))))
    else:
        op = _blob(rng, s, cy, cx, s * float(rng.uniform(0.035, 0.095)))
    op *= lungs
    if texture == 0:  # ground glass: faint, mottled
        op *= 0.55 + 0.45 * (0.5 + 0.5 * smooth_noise(rng, s, 30))
    return op if (op > 0.5).sum() >= 12 else None


def _main_zone(op: np.ndarray, zones: np.ndarray) -> int:
    """The zone holding the largest share of a lesion's pixels (the rule ``reclmis notes`` follows)."""
    counts = np.bincount(zones[op > 0.5], minlength=7)[1:7]
    return int(np.argmax(counts)) + 1


def _codes_for(rng: np.random.Generator, split: str) -> tuple[list[list[int]], list[int]]:
    """(note groups, distractor zones): a hard test pair, or one note with 0-2 distractors."""
    order = [int(c) for c in rng.permutation(np.arange(1, 7))]
    if split == "test":
        return [sorted(order[:2]), sorted(order[2:TEST_LESIONS])], []
    n_named = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    n_extra = int(rng.choice([0, 1, 2], p=[0.4, 0.35, 0.25]))
    return [sorted(order[:n_named])], order[n_named:n_named + n_extra]


def generate_item_b(cfg: SyntheticConfig, split: str, index: int, draw: int = 0) -> list[SyntheticItem]:
    """Image ``index`` of ``split`` of family ``b``: one item, or a counterfactual pair (every test image)."""
    s = cfg.size
    rng = np.random.default_rng((cfg.seed, 1000 + SPLITS.index(split), index, draw))
    img, zones, lungs = _anatomy(rng, s)
    groups, extra = _codes_for(rng, split)
    labels = np.zeros((s, s), dtype=np.uint8)
    present: list[int] = []
    for code in sorted({c for g in groups for c in g} | set(extra)):
        op = None
        for _ in range(10):
            op = _lesion(rng, zones, lungs, code, s)
            if op is not None and _main_zone(op, zones) == code and not np.any(labels[op > 0.5]):
                break
            op = None
        if op is None:
            continue
        lo, hi = (25.0, 55.0) if rng.random() < 0.4 else (55.0, 110.0)
        img += op * float(rng.uniform(lo, hi)) * (0.8 + 0.2 * smooth_noise(rng, s, 20))
        labels[op > 0.5] = code
        present.append(code)
    groups = [[c for c in g if c in present] for g in groups]
    if not present or any(not g for g in groups):
        if draw >= 20:
            raise DataError(f"--size {s}: family b found no room for its lesions in 20 draws; use --size 96 or more")
        return generate_item_b(cfg, split, index, draw + 1)  # a zone too small for its lesion: draw again
    gamma = float(rng.uniform(0.7, 1.4))
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
    img += rng.normal(0, float(rng.uniform(2, 9)), (s, s)).astype(np.float32)
    img8 = np.clip(img, 0, 255).astype(np.uint8)
    paired = split == "test"
    base = f"synb_{split}_{index:05d}"
    items = []
    for gi, g in enumerate(groups):
        items.append(SyntheticItem(
            id=base + (("_cfa", "_cfb")[gi] if paired else ""), split=split, image=img8,
            mask=np.isin(labels, g).astype(np.uint8), lesion_labels=labels, note=make_note_b(g, rng),
            named=sorted(g), distractors=[c for c in present if c not in g], pair=base if paired else "",
        ))
    return items


def n_test_images_b(n_test: int) -> int:
    """Test *images* of family b for ``n_test`` test items (every test image is a pair)."""
    return (n_test + 1) // 2


__all__ = ["generate_item_b", "make_note_b", "n_test_images_b", "LEVEL_WORDS", "LEVELS"]
