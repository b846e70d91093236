"""Losses checked against values computed by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from reclmis_core.engine.objective import (
    conditioned_contrastive_loss,
    conditioned_similarity,
    note_layout_loss,
    patch_of_interest_loss,
    soft_dice_loss,
    weighted_token_mse,
)
from reclmis_core.models.layers import conditioned_softmax


def test_soft_dice_loss_by_hand():
    probs = torch.tensor([[0.5, 1.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # intersection 1.5, |p| 1.5, |t| 2 -> dice 3 / 3.5
    assert soft_dice_loss(probs, target, eps=0.0).item() == pytest.approx(1 - 3 / 3.5)


def test_soft_dice_loss_averages_over_images():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # image 1 perfect (dice 1), image 2 disjoint (dice 0)
    assert soft_dice_loss(probs, target, eps=0.0).item() == pytest.approx(0.5)


def test_weighted_token_mse_by_hand():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]]])
    target = torch.zeros_like(pred)  # per-token errors: 1, 0, 4
    w = torch.tensor([[0.5, 0.25, 0.25]])
    assert weighted_token_mse(pred, target, w, None).item() == pytest.approx(0.5 * 1 + 0.25 * 4)
    valid = torch.tensor([[True, True, False]])
    assert weighted_token_mse(pred, target, w, valid).item() == pytest.approx(0.5 / 0.75)
    assert weighted_token_mse(pred, target, None, valid).item() == pytest.approx(0.5)


def test_weighted_token_mse_does_not_train_the_weights():
    pred = torch.ones(1, 2, 2, requires_grad=True)
    w = torch.tensor([[0.3, 0.7]], requires_grad=True)
    weighted_token_mse(pred, torch.zeros_like(pred), w, None).backward()
    assert w.grad is None and pred.grad is not None


def _pair():
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # 2 patches
    e = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 5.0]]])  # 2 words + 1 padding token
    valid = torch.tensor([[True, True, False]])
    w_poi = torch.tensor([[0.75, 0.25]])
    w_woi = torch.tensor([[0.4, 0.6, 0.0]])
    return v, e, valid, w_poi, w_woi


def test_conditioned_similarity_by_hand():
    v, e, valid, w_poi, w_woi = _pair()
    s = conditioned_similarity(v, e, w_poi, w_woi, valid)
    r = 1 / math.sqrt(2)
    # a = [[1, r], [0, r]]; best word per patch [1, r]; best patch per word [1, r]
    expected = 0.5 * ((0.75 * 1 + 0.25 * r) + (0.4 * 1 + 0.6 * r))
    assert s.shape == (1, 1)
    assert s.item() == pytest.approx(expected, abs=1e-6)


def test_conditioned_similarity_ignores_padding():
    v, e, valid, w_poi, w_woi = _pair()
    # If the padding token (aligned with patch 2) counted, patch 2's best word would be 1, not r.
    s_pad = conditioned_similarity(v, e, w_poi, w_woi, valid)
    s_cut = conditioned_similarity(v, e[:, :2], w_poi, w_woi[:, :2], valid[:, :2])
    assert s_pad.item() == pytest.approx(s_cut.item())


def test_conditioned_similarity_uses_each_sides_own_weights():
    torch.manual_seed(0)
    v = torch.randn(2, 3, 4)
    e = torch.randn(2, 2, 4)
    valid = torch.ones(2, 2, dtype=torch.bool)
    w_poi = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    w_woi = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s = conditioned_similarity(v, e, w_poi, w_woi, valid)
    vn, en = torch.nn.functional.normalize(v, dim=-1), torch.nn.functional.normalize(e, dim=-1)
    a01 = vn[0] @ en[1].T  # image 0 with note 1
    expected = 0.5 * (a01[0].max() + a01[:, 1].max())  # image 0's patch 0, note 1's word 1
    assert s[0, 1].item() == pytest.approx(expected.item(), abs=1e-6)


def test_contrastive_loss_by_hand():
    s = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    scale = torch.tensor(math.log(10.0))  # 1 / tau = 10
    loss = conditioned_contrastive_loss(s, scale).item()
    rows = (math.log(1 + math.exp(-8)) + math.log(1 + math.exp(-6))) / 2
    cols = (math.log(1 + math.exp(-7)) + math.log(1 + math.exp(-7))) / 2
    assert loss == pytest.approx(0.5 * (rows + cols), rel=1e-4)


def test_contrastive_temperature_matters():
    s = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    a = conditioned_contrastive_loss(s, torch.tensor(0.0)).item()
    b = conditioned_contrastive_loss(s, torch.tensor(math.log(10.0))).item()
    assert a != pytest.approx(b)  # tau sits inside the exponent; as printed in Eq. 6 it would cancel


def test_conditioned_softmax_reference_mode_by_hand():
    scores = torch.tensor([0.0, math.log(3.0), 0.0]).view(1, 1, 1, 3)  # softmax 1/5, 3/5, 1/5
    w = torch.tensor([[0.5, 0.25, 0.25]])
    p = conditioned_softmax(scores, None, w, "reference").flatten()
    assert p.tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 6], abs=1e-6)


def test_conditioned_softmax_literal_mode_by_hand():
    scores = torch.tensor([0.0, math.log(3.0), 0.0]).view(1, 1, 1, 3)
    w = torch.tensor([[0.5, 0.25, 0.25]])
    p = conditioned_softmax(scores, None, w, "literal").flatten()
    z = 2 + 3**0.25
    assert p.tolist() == pytest.approx([1 / z, 3**0.25 / z, 1 / z], abs=1e-6)


@pytest.mark.parametrize("mode", ["reference", "literal"])
def test_padded_keys_get_no_attention(mode):
    scores = torch.randn(2, 2, 3, 4)
    pad = torch.tensor([[False, False, True, True], [False, False, False, True]])
    w = torch.rand(2, 4)
    p = conditioned_softmax(scores, pad, w, mode)
    assert torch.all(p[0, :, :, 2:] == 0) and torch.all(p[1, :, :, 3] == 0)
    assert torch.allclose(p.sum(-1), torch.ones(2, 2, 3))


def test_patch_of_interest_loss_by_hand():
    # 4x4 mask on a 2x2 patch grid: the top-left patch fully foreground, the top-right half -> shares 4:2:0:0,
    # target t = (2/3, 1/3, 0, 0); W_poi = (0.5, 0.25, 0.125, 0.125) -> -(2/3 ln 0.5 + 1/3 ln 0.25) = 4/3 ln 2.
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, :2] = 1
    mask[0, 0, :2, 2] = 1
    w_poi = torch.tensor([[0.5, 0.25, 0.125, 0.125]])
    assert patch_of_interest_loss(w_poi, mask).item() == pytest.approx(4 / 3 * math.log(2))


def test_patch_of_interest_loss_skips_empty_masks():
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, 2:, 2:] = 1  # bottom-right patch only: t = (0, 0, 0, 1)
    w_poi = torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.97, 0.01, 0.01, 0.01]])
    # the empty second image adds nothing and does not dilute the mean
    assert patch_of_interest_loss(w_poi, mask).item() == pytest.approx(-math.log(0.4))
    assert patch_of_interest_loss(w_poi, torch.zeros(2, 1, 4, 4)).item() == 0.0


def test_note_layout_loss_by_hand():
    # 4x4 mask on a 2x2 grid: shares (1, 0.5, 0, 0); logits 0 -> p = 0.5 everywhere -> BCE = ln 2 for every patch
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, :2] = 1
    mask[0, 0, :2, 2] = 1
    assert note_layout_loss(torch.zeros(1, 4), mask).item() == pytest.approx(math.log(2))
    # logit ln 3 on the first patch (p = 3/4, target 1): -ln(3/4); the rest stay ln 2
    logits = torch.tensor([[math.log(3), 0.0, 0.0, 0.0]])
    assert note_layout_loss(logits, mask).item() == pytest.approx((-math.log(0.75) + 3 * math.log(2)) / 4)
