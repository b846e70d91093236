import numpy as np
import pytest

from reclmis_core.metrics.components import count_components


def test_counts_regions_with_both_connectivities():
    m = np.zeros((8, 8), bool)
    assert count_components(m) == 0
    m[1:3, 1:3] = True  # a square
    m[5, 5] = m[6, 6] = True  # two pixels touching diagonally
    m[0, 7] = m[1, 7] = m[1, 6] = True  # an L
    assert count_components(m, 8) == 3
    assert count_components(m, 4) == 4


def test_u_shape_merges_late():
    m = np.zeros((5, 5), bool)
    m[0:4, 0] = m[0:4, 4] = True
    m[4, :] = True
    assert count_components(m) == 1


def test_matches_scipy_on_random_masks():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((40, 33)) > 0.6
        n8 = ndimage.label(m, structure=np.ones((3, 3)))[1]
        n4 = ndimage.label(m)[1]
        assert count_components(m, 8) == n8 and count_components(m, 4) == n4
