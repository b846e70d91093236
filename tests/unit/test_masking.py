"""Token masking for CVR/CLR: exact counts, never padding, sampling follows W."""

from __future__ import annotations

import pytest
import torch

from reclmis_core.models.reconstruction import num_to_mask, select_masked


@pytest.mark.parametrize("strategy", ["dist", "random", "topk"])
def test_exact_count_and_never_padding(strategy):
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 3, 10, 1, 7])
    valid = torch.arange(10)[None, :] < lengths[:, None]
    w = torch.rand(5, 10).masked_fill(~valid, 0.0)
    w = w / w.sum(1, keepdim=True)
    for _ in range(20):
        m = select_masked(w, valid, 0.3, strategy, g)
        assert not torch.any(m & ~valid)
        assert m.sum(1).tolist() == [2, 1, 3, 0, 2]  # round(0.3 * n), halves away from zero


def test_num_to_mask_rounding():
    assert num_to_mask(torch.tensor([196, 5, 18, 1]), 0.5).tolist() == [98, 3, 9, 1]


def test_dist_sampling_follows_weights():
    g = torch.Generator().manual_seed(1)
    w = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(400, 1)
    valid = torch.ones_like(w, dtype=torch.bool)
    m = select_masked(w, valid, 0.25, "dist", g)  # one token per row
    share = m[:, 0].float().mean().item()
    assert 0.93 < share <= 1.0


def test_dist_without_replacement_takes_every_token_at_ratio_one():
    valid = torch.tensor([[True, True, True, False]])
    w = torch.tensor([[0.98, 0.01, 0.01, 0.0]])
    assert select_masked(w, valid, 1.0, "dist").tolist() == [[True, True, True, False]]


def test_topk_picks_largest():
    w = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
    valid = torch.ones_like(w, dtype=torch.bool)
    assert select_masked(w, valid, 0.5, "topk").tolist() == [[False, True, True, False]]
