"""Dice/IoU per image and global, including the empty-mask conventions."""

from __future__ import annotations

import numpy as np
import pytest

from reclmis_core.metrics.dice import ScoreAccumulator, dice_iou_per_image, global_dice_iou


def test_per_image_by_hand():
    pred = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]], dtype=bool)
    true = np.array([[[1, 0, 0, 0]], [[0, 1, 0, 0]]], dtype=bool)
    dice, iou = dice_iou_per_image(pred, true)
    assert dice.tolist() == pytest.approx([2 / 3, 0.0])
    assert iou.tolist() == pytest.approx([1 / 2, 0.0])


def test_empty_conventions():
    empty = np.zeros((1, 4), dtype=bool)
    full = np.ones((1, 4), dtype=bool)
    assert dice_iou_per_image(empty, empty)[0].tolist() == [1.0]
    assert dice_iou_per_image(full, empty)[0].tolist() == [0.0]
    assert dice_iou_per_image(empty, full)[1].tolist() == [0.0]
    assert global_dice_iou(empty, empty) == (1.0, 1.0)


def test_global_pools_pixels():
    pred = np.array([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    true = np.array([[1, 0, 0, 0], [0, 0, 1, 1]], dtype=bool)
    # intersection 1, |p| 2, |t| 3
    dg, ig = global_dice_iou(pred, true)
    assert dg == pytest.approx(2 / 5) and ig == pytest.approx(1 / 4)


def test_accumulator_matches_one_shot():
    rng = np.random.default_rng(0)
    pred = rng.random((6, 8, 8)) > 0.5
    true = rng.random((6, 8, 8)) > 0.6
    acc = ScoreAccumulator()
    acc.update(pred[:4], true[:4])
    acc.update(pred[4:], true[4:])
    res = acc.result()
    dice, iou = dice_iou_per_image(pred, true)
    assert res.dice == pytest.approx(dice.mean()) and res.miou == pytest.approx(iou.mean())
    assert (res.dice_global, res.iou_global) == pytest.approx(global_dice_iou(pred, true))
    assert res.n_images == 6
