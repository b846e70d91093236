"""Dice and IoU on binary masks: per image (the LViT/RecLMIS protocol, Eq. 12-13) and global.

Empty masks: an image whose prediction and ground truth are both empty scores Dice = IoU = 1 (nothing to
find, nothing found); if exactly one of them is empty it scores 0. Global variants pool pixel counts over the
whole split, so empty images only add false positives; a split with no foreground anywhere scores 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SegmentationScores:
    dice: float  # mean per-image Dice
    miou: float  # mean per-image IoU
    dice_global: float
    iou_global: float
    n_images: int


def _counts(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image (first axis) intersection, |pred|, |target|."""
    p = np.asarray(pred).astype(bool).reshape(len(pred), -1)
    t = np.asarray(target).astype(bool).reshape(len(target), -1)
    if p.shape != t.shape:
        raise ValueError(f"prediction and target shapes differ: {p.shape} vs {t.shape}")
    return (p & t).sum(1), p.sum(1), t.sum(1)


def dice_iou_per_image(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of binary masks shaped (N, ...)."""
    inter, ps, ts = _counts(pred, target)
    inter, ps, ts = inter.astype(np.float64), ps.astype(np.float64), ts.astype(np.float64)
    union = ps + ts - inter
    both_empty = (ps + ts) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(both_empty, 1.0, 2 * inter / (ps + ts))
        iou = np.where(both_empty, 1.0, inter / union)
    return dice, iou


def global_dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Dice and IoU from pixel counts pooled over all images."""
    inter, ps, ts = (float(x.sum()) for x in _counts(pred, target))
    if ps + ts == 0:
        return 1.0, 1.0
    return 2 * inter / (ps + ts), inter / (ps + ts - inter)


class ScoreAccumulator:
    """Streams batches of binary masks; keeps per-image scores and global counts."""

    def __init__(self) -> None:
        self.dice: list[float] = []
        self.iou: list[float] = []
        self.fg_pred: list[float] = []
        self.fg_true: list[float] = []
        self._inter = self._pred = self._true = 0.0

    def update(self, pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dice, iou = dice_iou_per_image(pred, target)
        inter, ps, ts = _counts(pred, target)
        n_pix = np.asarray(pred).reshape(len(pred), -1).shape[1]
        self.dice.extend(dice.tolist())
        self.iou.extend(iou.tolist())
        self.fg_pred.extend((ps / n_pix).tolist())
        self.fg_true.extend((ts / n_pix).tolist())
        self._inter += float(inter.sum())
        self._pred += float(ps.sum())
        self._true += float(ts.sum())
        return dice, iou

    def result(self) -> SegmentationScores:
        denom = self._pred + self._true
        dg = 1.0 if denom == 0 else 2 * self._inter / denom
        ig = 1.0 if denom == 0 else self._inter / (denom - self._inter)
        n = len(self.dice)
        return SegmentationScores(
            dice=float(np.mean(self.dice)) if n else float("nan"),
            miou=float(np.mean(self.iou)) if n else float("nan"),
            dice_global=dg,
            iou_global=ig,
            n_images=n,
        )
