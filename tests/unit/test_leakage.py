"""Leakage analysis on hand-made label maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reclmis_core.metrics.leakage import LeakageAccumulator


def _labels():
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[0, 0:2] = 1  # right upper  (named)
    labels[5, 0:2] = 3  # right lower  (unnamed, same side)
    labels[0, 4:6] = 4  # left upper   (unnamed, other side)
    mask = labels == 1
    return labels, mask


def test_counts_by_hand():
    labels, mask = _labels()
    pred = mask | (labels == 3)  # the same-side distractor leaks, the other side does not
    acc = LeakageAccumulator()
    assert acc.update(pred, mask, labels) == {"same": [1, 1], "other": [1, 0]}
    res = acc.result()
    assert (res.leak_named_side_unnamed_level, res.leak_other_side) == (1.0, 0.0)


def test_partial_overlap_threshold():
    labels, mask = _labels()
    pred = mask.copy()
    pred[5, 0] = True  # half of the lower-right lesion
    acc = LeakageAccumulator(min_overlap=0.75)
    acc.update(pred, mask, labels)
    assert acc.result().leak_named_side_unnamed_level == 0.0


def test_no_unnamed_lesions_is_nan():
    labels = np.zeros((4, 4), dtype=np.int64)
    labels[0, 0] = 2
    acc = LeakageAccumulator()
    acc.update(labels > 0, labels > 0, labels)
    assert math.isnan(acc.result().leak_other_side)


def test_pair_leakage_hand_computed():
    from reclmis_core.metrics.leakage import PairLeakageAccumulator

    acc = PairLeakageAccumulator({"a": "p", "b": "p", "c": "lonely", "d": ""})
    mask_a, mask_b = np.array([1, 1, 0, 0, 0, 0]), np.array([0, 0, 1, 1, 1, 0])
    acc.update("a", np.array([1, 0, 1, 0, 0, 0]), mask_a)  # covers 1 of a's 2, leaks 1 of b's 3
    acc.update("b", np.array([0, 0, 1, 1, 0, 1]), mask_b)  # covers 2 of b's 3, leaks 0 of a's 2
    acc.update("c", np.ones(6), np.array([1, 0, 0, 0, 0, 0]))  # incomplete pair: ignored
    acc.update("d", np.ones(6), np.array([1, 0, 0, 0, 0, 0]))  # not in a pair: ignored
    res = acc.result()
    assert res.n_pairs == 1
    assert res.pair_leakage == pytest.approx(1 / 5)
    assert res.pair_named_recall == pytest.approx(3 / 5)


def test_pair_leakage_none_without_pairs():
    from reclmis_core.metrics.leakage import PairLeakageAccumulator

    assert PairLeakageAccumulator({}).result() is None
