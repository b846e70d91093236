"""Leakage: how many lesions the note does NOT name still end up in the predicted mask.

Works on a lesion label map (manifest column ``lesion_labels``, written by the synthetic generator) in which
every lesion pixel holds its lung-zone code ``1 + 3 * side + level`` (side 0 = patient's right, 1 = left;
level 0 = upper, 1 = middle, 2 = lower; 0 = background). A zone counts as *named* when its lesion lies in the
ground-truth mask (the mask holds exactly the lesions the note names). An unnamed lesion has *leaked* when at
least ``min_overlap`` of its pixels are predicted foreground. Unnamed lesions split into:

- ``named side, unnamed level``: a lung the note names, at a level it does not (binding upper/middle/lower);
- ``other side``: a lung the note does not name at all (binding left/right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def zone_side(code: int) -> int:
    return (int(code) - 1) // 3


@dataclass
class LeakageScores:
    leak_named_side_unnamed_level: float  # share of such lesions predicted (nan if there were none)
    leak_other_side: float
    n_named_side_unnamed_level: int
    n_other_side: int


class LeakageAccumulator:
    def __init__(self, min_overlap: float = 0.5) -> None:
        self.min_overlap = min_overlap
        self.counts = {"same": [0, 0], "other": [0, 0]}  # [lesions, leaked]

    def update(self, pred: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> dict[str, list[int]]:
        """Add one image (2-D arrays); returns this image's ``{"same": [n, leaked], "other": [n, leaked]}``."""
        pred, mask, labels = np.asarray(pred, bool), np.asarray(mask, bool), np.asarray(labels)
        codes = [int(c) for c in np.unique(labels) if c > 0]
        named = {c for c in codes if np.any(mask & (labels == c))}
        named_sides = {zone_side(c) for c in named}
        image = {"same": [0, 0], "other": [0, 0]}
        for code in codes:
            if code in named:
                continue
            region = labels == code
            leaked = int(pred[region].mean() >= self.min_overlap)
            key = "same" if zone_side(code) in named_sides else "other"
            image[key][0] += 1
            image[key][1] += leaked
        for key in image:
            self.counts[key][0] += image[key][0]
            self.counts[key][1] += image[key][1]
        return image

    def result(self) -> LeakageScores:
        def share(key: str) -> float:
            n, k = self.counts[key]
            return k / n if n else float("nan")

        return LeakageScores(share("same"), share("other"), self.counts["same"][0], self.counts["other"][0])


@dataclass
class PairScores:
    """Selection on counterfactual pairs (same pixels, two notes, two masks), pooled over pixels."""

    pair_leakage: float  # share of the pixels of the lesions a note does NOT name that its mask covers
    pair_named_recall: float  # share of the pixels of the lesions a note names that its mask covers
    n_pairs: int


class PairLeakageAccumulator:
    """Leakage without zone labels, from counterfactual pairs alone.

    For a pair (a, b) the lesions note a does not name are ``mask_b & ~mask_a``; its prediction leaks where it
    covers them. Both directions of every complete pair count; pixel counts are pooled over the split. Items
    outside a pair, and pairs incomplete in the split, are ignored.

    Args:
        pair_of: item id -> pair id (the manifest's ``pair`` column; "" = not in a pair).

    Example:
        >>> acc = PairLeakageAccumulator({"x_cfa": "x", "x_cfb": "x"})
        >>> acc.update("x_cfa", pred_a, mask_a); acc.update("x_cfb", pred_b, mask_b)
        >>> acc.result().pair_leakage
    """

    def __init__(self, pair_of: dict[str, str]) -> None:
        self.pair_of = {k: v for k, v in pair_of.items() if isinstance(v, str) and v}
        self.items: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def update(self, item: str, pred: np.ndarray, mask: np.ndarray) -> None:
        pair = self.pair_of.get(item)
        if pair:
            self.items.setdefault(pair, []).append((np.asarray(pred, bool), np.asarray(mask, bool)))

    def result(self) -> PairScores | None:
        """Scores over the complete pairs, or None when there is none (or no pair names a lesion)."""
        leaked = unnamed = covered = named = n = 0
        for members in self.items.values():
            if len(members) != 2:
                continue
            n += 1
            for (pred, mask), (_, other) in (members, members[::-1]):
                outside = other & ~mask
                leaked += int((pred & outside).sum())
                unnamed += int(outside.sum())
                covered += int((pred & mask).sum())
                named += int(mask.sum())
        if not n or not unnamed or not named:
            return None
        return PairScores(leaked / unnamed, covered / named, n)
