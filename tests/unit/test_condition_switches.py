"""The objective switches of the reference recipe, each changing only what it claims; the renamed keys."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from reclmis_core.config import build_config, config_to_dict
from reclmis_core.engine.checkpoint import checkpoint_run_config
from reclmis_core.engine.objective import (
    RecLMISObjective,
    conditioned_contrastive_loss,
    conditioned_similarity,
)
from reclmis_core.models import build_model
from reclmis_core.models.reclmis import RecLMISOutput

R = 1 / math.sqrt(2)


def _objective(**model) -> RecLMISObjective:
    cfg = build_config("tiny", overrides={"model": model})
    return RecLMISObjective(cfg.loss, cfg.model)


def _recon_output() -> RecLMISOutput:
    """Reconstructions with per-token errors CLR [1, 0, 4] (third slot a pad), CVR [1, 4]."""
    return RecLMISOutput(
        logits=torch.zeros(1, 1, 2, 2),
        recon_text=torch.tensor([[[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]]]), target_text=torch.zeros(1, 3, 2),
        text_valid=torch.tensor([[True, True, False]]), w_woi=torch.tensor([[0.25, 0.75, 0.0]]),
        recon_image=torch.tensor([[[1.0, 1.0], [2.0, 2.0]]]), target_image=torch.zeros(1, 2, 2),
        w_poi=torch.tensor([[0.75, 0.25]]), image_tokens=torch.zeros(1, 2, 2),
    )


def test_loss_weighting_switches_by_hand():
    masks = torch.zeros(1, 1, 2, 2)
    default = _objective()(_recon_output(), masks)
    assert default["clr"].item() == pytest.approx(0.25 * 1 + 0.75 * 0)  # weighted by W_woi
    assert default["cvr"].item() == pytest.approx(0.75 * 1 + 0.25 * 4)  # weighted by W_poi: 1.75
    plain = _objective(clr_loss_condition=False, cvr_loss_condition=False)(_recon_output(), masks)
    assert plain["clr"].item() == pytest.approx((1 + 0) / 2)  # plain mean over the two words
    assert plain["cvr"].item() == pytest.approx((1 + 4) / 2)
    pads = _objective(clr_loss_condition=False, clr_mean_pads=True)(_recon_output(), masks)
    assert pads["clr"].item() == pytest.approx((1 + 0 + 4) / 3)  # the reference's .mean() over every slot
    assert pads["cvr"].item() == pytest.approx(1.75)  # CVR untouched
    # weighted, the pads carry W_woi = 0: clr_mean_pads changes nothing
    assert _objective(clr_mean_pads=True)(_recon_output(), masks)["clr"].item() == pytest.approx(0.25)
    # the attention switches leave the loss alone
    attn = _objective(clr_attn_condition=False, cvr_attn_condition=False)(_recon_output(), masks)
    assert attn["clr"].item() == pytest.approx(0.25) and attn["cvr"].item() == pytest.approx(1.75)


def test_reference_similarity_with_pads_as_zero_by_hand():
    v = torch.tensor([[[1.0, 0.0], [-1.0, -1.0]]])  # patch 2 is negative to both words
    e = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 5.0]]])  # 2 words + 1 pad
    valid = torch.tensor([[True, True, False]])
    w_poi, w_woi = torch.tensor([[0.75, 0.25]]), torch.tensor([[0.4, 0.6, 0.0]])
    # cosines a[n, l]: patch 1 [1, r, 0], patch 2 [-r, -1, -r]
    # paper: best word per patch over words only [1, -r]; best patch per word [1, r]
    paper = 0.5 * ((0.75 * 1 - 0.25 * R) + (0.4 * 1 + 0.6 * R))
    assert conditioned_similarity(v, e, w_poi, w_woi, valid).item() == pytest.approx(paper, abs=1e-6)
    # reference: the pad's cosine is 0, so patch 2's best "word" is the pad (0, not -r)
    ref = 0.5 * ((0.75 * 1 + 0.25 * 0) + (0.4 * 1 + 0.6 * R))
    assert conditioned_similarity(v, e, w_poi, w_woi, valid, pads_as_zero=True).item() == pytest.approx(ref, abs=1e-6)


def test_reference_ccl_weights_softmax_again_over_every_slot():
    torch.manual_seed(0)
    out = RecLMISOutput(
        logits=torch.zeros(2, 1, 2, 2), image_tokens=torch.randn(2, 4, 8), text_tokens=torch.randn(2, 3, 8),
        text_valid=torch.tensor([[True, True, False], [True, True, True]]),
        w_poi=torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]]),
        w_woi=torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]]),
    )
    scale = torch.tensor(math.log(100.0))
    masks = torch.zeros(2, 1, 2, 2)
    got = _objective(ccl_weights="reference", ccl_same_note=False)(out, masks, scale)["ccl"]
    # image 1's W_poi again through a softmax: e^.7 / (e^.7 + 3 e^.1) = 0.4223; note 1's pad gets e^0 / sum
    w_poi2 = out.w_poi.softmax(-1)
    assert w_poi2[0, 0].item() == pytest.approx(math.exp(0.7) / (math.exp(0.7) + 3 * math.exp(0.1)))
    w_woi2 = out.w_woi.softmax(-1)
    assert w_woi2[0, 2].item() == pytest.approx(1 / (math.exp(0.9) + math.exp(0.1) + 1))
    sim = conditioned_similarity(out.image_tokens, out.text_tokens, w_poi2, w_woi2, out.text_valid, True)
    assert got.item() == pytest.approx(conditioned_contrastive_loss(sim, scale).item(), rel=1e-6)
    paper = _objective(ccl_same_note=False)(out, masks, scale)["ccl"]
    assert paper.item() != pytest.approx(got.item())


@pytest.fixture
def batch(notes):
    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}})
    model = build_model(cfg.model, corpus=notes)
    with torch.no_grad():  # peaked W (at initialisation W is near uniform and conditioning barely shows)
        model.interest.mlp_patch[2].weight.mul_(200.0)
        model.interest.mlp_word[2].weight.mul_(200.0)
    tb = model.tokenize(notes[:2])
    return model.state_dict(), torch.rand(2, 3, 32, 32), tb.input_ids, tb.attention_mask


def _forward(notes, batch, train: bool = False, seed: int = 0, **model_cfg) -> RecLMISOutput:
    state, x, ids, mask = batch
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, **model_cfg}})
    model = build_model(cfg.model, corpus=notes)
    model.load_state_dict(state)
    model.train(train)
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(x, ids, mask, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("branch, changed, kept", [("cvr", "recon_image", "recon_text"),
                                                    ("clr", "recon_text", "recon_image")])
def test_attention_condition_switch_changes_only_its_reconstruction(notes, batch, branch, changed, kept):
    on = _forward(notes, batch)
    off = _forward(notes, batch, **{f"{branch}_attn_condition": False})
    assert not torch.allclose(getattr(on, changed), getattr(off, changed), atol=1e-6)
    assert torch.equal(getattr(on, kept), getattr(off, kept)) and torch.equal(on.logits, off.logits)
    loss_off = _forward(notes, batch, **{f"{branch}_loss_condition": False})  # the model does not see it
    assert torch.equal(getattr(on, changed), getattr(loss_off, changed))


def test_interest_dropout_reaches_only_the_w_heads(notes, batch):
    a = _forward(notes, batch, train=True, seed=1, interest_dropout=0.5)
    b = _forward(notes, batch, train=True, seed=1)  # same random stream, no W-head dropout
    assert not torch.allclose(a.w_poi, b.w_poi) and not torch.allclose(a.w_woi, b.w_woi)
    assert torch.equal(a.logits, b.logits)  # the segmentation path is untouched
    e = _forward(notes, batch, train=False, interest_dropout=0.5)  # eval: no dropout
    assert torch.equal(e.w_poi, _forward(notes, batch, train=False).w_poi)
    default = build_model(build_config("tiny").model, corpus=notes)
    assert isinstance(default.interest.dropout, torch.nn.Identity)  # off by default


def test_old_condition_keys_still_set_both_switches():
    with pytest.warns(DeprecationWarning, match="model.cvr_condition.*cvr_attn_condition"):
        cfg = build_config("tiny", overrides={"model": {"cvr_condition": False}})
    m = cfg.model
    assert (m.cvr_attn_condition, m.cvr_loss_condition, m.clr_attn_condition) == (False, False, True)
    with pytest.warns(DeprecationWarning):  # an explicit new key wins over the old one
        m = build_config("tiny", overrides={"model": {"clr_condition": False, "clr_attn_condition": True}}).model
    assert (m.clr_attn_condition, m.clr_loss_condition) == (True, False)


def test_checkpoints_written_before_the_split_load_silently():
    doc = config_to_dict(build_config("tiny"))
    for key in ("cvr_attn_condition", "cvr_loss_condition", "clr_attn_condition", "clr_loss_condition"):
        del doc["model"][key]
    doc["model"]["cvr_condition"] = False
    doc["model"]["clr_condition"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        migrated = checkpoint_run_config({"format_version": 2, "config": doc})
    assert "cvr_condition" not in migrated["model"]
    assert (migrated["model"]["cvr_attn_condition"], migrated["model"]["cvr_loss_condition"]) == (False, False)
    assert migrated["model"]["clr_loss_condition"] is True
