"""The reference training recipe: its loss by hand, its schedules against torch's, its values per dataset."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from reclmis_core.config import LossConfig, ModelConfig, TrainConfig, build_config
from reclmis_core.engine.objective import RecLMISObjective, soft_dice_loss
from reclmis_core.engine.schedule import build_lr_schedule, epoch_factor
from reclmis_core.errors import ConfigError
from reclmis_core.models.reclmis import RecLMISOutput
from reclmis_core.recipes import RECIPES, applicable_recipe, resolve_recipe

# -- the segmentation loss -------------------------------------------------------------------------------


def test_squared_dice_by_hand():
    probs = torch.tensor([[0.5, 1.0, 0.0, 0.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # sum(p t) = 1.5; sum p^2 = 0.25 + 1 = 1.25; sum t^2 = 2 -> dice 3 / 3.25
    assert soft_dice_loss(probs, target, 0.0, "squared").item() == pytest.approx(1 - 3 / 3.25)
    # the linear denominator (default) is unchanged: sum p + sum t = 3.5
    assert soft_dice_loss(probs, target, 0.0).item() == pytest.approx(1 - 3 / 3.5)


def test_squared_dice_is_the_references_with_its_half_weights():
    """The reference's WeightedDiceLoss(weights=[0.5, 0.5]) scales p and t by 0.5 before its sums (smooth 1e-5):
    p' = [.25, .5, 0, 0], t' = [.5, .5, 0, 0]; sum p't' = .125 + .25 = .375;
    sum p'^2 + sum t'^2 = (.0625 + .25) + (.25 + .25) = .8125 -> dice (2 * .375 + 1e-5) / (.8125 + 1e-5),
    which is ours with eps = 4e-5: (3 + 4e-5) / (3.25 + 4e-5) (numerator and denominator times 4)."""
    probs = torch.tensor([[0.5, 1.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    reference = 1 - (0.75 + 1e-5) / (0.8125 + 1e-5)
    assert soft_dice_loss(probs, target, 4e-5, "squared").item() == pytest.approx(reference, rel=1e-12)


def test_squared_dice_is_a_mean_over_images():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # image 1: 2 / (1 + 1) = 1; image 2: 2 * 0.5 / (0.25 + 0.25 + 1) = 2/3 -> loss 1 - (1 + 2/3) / 2 = 1/6
    # (pooled over the batch it would be 1 - 3 / 3.5)
    assert soft_dice_loss(probs, target, 0.0, "squared").item() == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="linear or squared"):
        soft_dice_loss(probs, target, 0.0, "cubed")


def test_reference_segmentation_loss_by_hand():
    """5 * (0.5 Dice + 0.5 BCE) on one 2x2 image, logits [0, ln 3; -ln 3, 0] -> p = [.5, .75, .25, .5]."""
    cfg = build_config("tiny", recipe="reference-qata")
    logits = torch.tensor([[[[0.0, math.log(3.0)], [-math.log(3.0), 0.0]]]])
    masks = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    parts = RecLMISObjective(cfg.loss, cfg.model)(RecLMISOutput(logits=logits), masks)
    # Dice: sum p t = .5 + .75 = 1.25; sum p^2 = .25 + .5625 + .0625 + .25 = 1.125; sum t^2 = 2
    dice = 1 - (2 * 1.25 + 4e-5) / (1.125 + 2 + 4e-5)  # 0.1999974
    # BCE: -ln .5, -ln .75, -ln .75, -ln .5 -> mean (2 ln 2 + 2 ln(4/3)) / 4 = ln(8/3) / 2 = 0.4904146
    bce = math.log(8 / 3) / 2
    assert parts["dice"].item() == pytest.approx(dice, rel=1e-6)
    assert parts["bce"].item() == pytest.approx(bce, rel=1e-6)
    assert parts["seg"].item() == pytest.approx(0.5 * dice + 0.5 * bce, rel=1e-6)  # 0.3452060
    assert parts["loss"].item() == pytest.approx(5 * (0.5 * dice + 0.5 * bce), rel=1e-6)  # 1.726030


# -- the schedules -------------------------------------------------------------------------------------------


def _lrs_per_step(cfg: TrainConfig, epochs: int, steps_per_epoch: int) -> list[list[float]]:
    """The lr each optimizer step of each epoch runs with, as the trainer steps the schedule."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_lr_schedule(opt, cfg, steps_per_epoch)
    out = []
    for _ in range(epochs):
        row = []
        for _ in range(steps_per_epoch):
            row.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out.append(row)
    return out


def test_warm_restarts_match_torch_per_epoch():
    cfg = build_config("paper", recipe="reference-qata").train
    ours = _lrs_per_step(cfg, epochs=25, steps_per_epoch=3)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=1, eta_min=1e-4)
    for epoch, row in enumerate(ours):
        assert len(set(row)) == 1, f"lr changed within epoch {epoch}"
        assert row[0] == pytest.approx(torch_sched.get_last_lr()[0], rel=1e-12, abs=0), epoch
        opt.step()
        torch_sched.step()  # once per epoch, after validation, as the reference's train_one_epoch
    # by hand: epoch 0 and 10 (restart) 3e-4; epoch 5: 1e-4 + 2e-4 (1 + cos(pi/2)) / 2 = 2e-4
    assert ours[0][0] == pytest.approx(3e-4) and ours[10][0] == pytest.approx(3e-4)
    assert ours[5][0] == pytest.approx(2e-4)
    assert ours[9][0] == pytest.approx(1e-4 + 2e-4 * (1 + math.cos(0.9 * math.pi)) / 2)


def test_exponential_matches_the_references_lambda_per_epoch():
    cfg = build_config("paper", recipe="reference-mosmed").train
    ours = _lrs_per_step(cfg, epochs=240, steps_per_epoch=2)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    ref = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: max(0.99**epoch, 0.1))  # Config_MosMedPlus 'exp'
    for epoch, row in enumerate(ours):
        assert row[0] == row[1] == pytest.approx(ref.get_last_lr()[0], rel=1e-12), epoch
        opt.step()
        ref.step()
    # 0.99^229 = 0.1001 > 0.1 > 0.99^230 = 0.0991: the floor from epoch 230 on
    assert ours[1][0] == pytest.approx(2.97e-4) and ours[229][0] > 3e-5 and ours[230][0] == pytest.approx(3e-5)


def test_per_epoch_schedules_refuse_a_warmup_and_check_their_range():
    with pytest.raises(ConfigError, match="no warm-up"):
        build_config("tiny", overrides={"train": {"scheduler": "exponential", "warmup_epochs": 1}})
    with pytest.raises(ConfigError, match="restart_min_lr"):
        build_config("tiny", recipe="reference-qata", overrides={"train": {"lr": 5e-5}})
    with pytest.raises(ConfigError, match="decay_gamma"):
        build_config("tiny", overrides={"train": {"decay_gamma": 1.5}})
    with pytest.raises(ConfigError, match="not a per-epoch"):
        epoch_factor(TrainConfig(), 0)


# -- the recipes ----------------------------------------------------------------------------------------------


def test_reference_recipes_hold_the_reference_configs():
    q = build_config("paper", recipe="reference-qata")
    m = build_config("paper", recipe="reference-mosmed")
    for cfg in (q, m):  # shared: WeightedDiceBCE(0.5, 0.5), Adam(lr) without weight decay, 224 px, seed 3407
        assert (cfg.loss.dice, cfg.loss.bce, cfg.loss.dice_denominator, cfg.loss.dice_smooth) == (
            0.5, 0.5, "squared", 4e-5)
        assert (cfg.loss.clr, cfg.loss.cvr, cfg.loss.ccl, cfg.loss.seg) == (1.0, 1.0, 0.2, 5.0)
        assert (cfg.train.lr, cfg.train.weight_decay, cfg.model.image_size, cfg.train.seed) == (3e-4, 0.0, 224, 3407)
        assert (cfg.model.cvr_attn_condition, cfg.model.cvr_loss_condition) == (True, False)
        assert (cfg.model.clr_attn_condition, cfg.model.clr_loss_condition, cfg.model.clr_mean_pads) == (
            True, False, True)
        assert cfg.model.ccl_weights == "reference" and cfg.model.text_mask_ratio == 0.3
    assert (q.recipe, q.train.batch_size, q.model.recon_layers, q.model.image_mask_ratio) == (
        "reference-qata", 32, 4, 0.5)
    assert (q.train.scheduler, q.train.restart_epochs, q.train.restart_min_lr) == ("cosine-restarts", 10, 1e-4)
    assert (q.train.epochs, q.train.patience, q.model.interest_dropout) == (2000, 101, 0.0)
    assert (m.train.batch_size, m.model.recon_layers, m.model.image_mask_ratio, m.model.interest_dropout) == (
        20, 3, 0.3, 0.5)
    assert (m.train.scheduler, m.train.decay_gamma, m.train.decay_floor) == ("exponential", 0.99, 0.1)
    assert (m.train.epochs, m.train.patience) == (400, 31)


def test_paper_recipes_are_unchanged():
    q = build_config("paper", recipe="paper-qata")
    assert (q.train.epochs, q.train.batch_size, q.train.scheduler, q.loss.dice_denominator) == (
        200, 32, "cosine", "linear")
    assert build_config("paper", recipe="paper-mosmed").train.epochs == 500
    plain = build_config("paper")
    assert plain.recipe == "" and replace(q, recipe="") == plain  # the paper recipe is the paper preset's values


def test_recipe_names_resolve_per_dataset():
    assert resolve_recipe("reference", "qata").name == "reference-qata"
    assert resolve_recipe("reference", "mosmed").name == "reference-mosmed"
    assert resolve_recipe("reference-mosmed", None).name == "reference-mosmed"
    assert resolve_recipe(None, "qata", "paper").name == "paper-qata"
    assert resolve_recipe(None, "sample", None) is None
    assert resolve_recipe(None, "sample", "quick").name == "quick-sample"
    with pytest.raises(ConfigError, match="depends on the dataset.*reference-mosmed, reference-qata"):
        resolve_recipe("reference", None)
    with pytest.raises(ConfigError, match="dataset 'sample' has no 'reference' recipe"):
        resolve_recipe("reference", "sample")
    with pytest.raises(ConfigError, match="Did you mean 'reference-qata'"):
        resolve_recipe("refrence-qata", None)
    assert set(RECIPES) == {"paper-qata", "paper-mosmed", "reference-qata", "reference-mosmed", "quick-sample"}


def test_the_sample_trains_60_epochs_other_data_the_tiny_default():
    from reclmis_core.data.datasets_registry import get_dataset

    sample = get_dataset("sample")
    recipe = resolve_recipe(None, "sample", sample.recipe)
    assert applicable_recipe(recipe, "tiny", explicit=False) is recipe
    assert build_config("tiny", recipe=recipe.name).train.epochs == 60
    assert build_config("tiny").train.epochs == 150


def test_a_named_recipe_applies_to_any_preset_a_default_only_to_its_own():
    recipe = RECIPES["paper-qata"]
    assert applicable_recipe(recipe, "paper", explicit=False) is recipe
    assert applicable_recipe(recipe, "tiny", explicit=False) is None
    assert applicable_recipe(recipe, "tiny", explicit=True) is recipe


def test_recipe_precedence_and_recording(tmp_path):
    cfg = build_config("tiny", recipe="reference-qata", overrides={"train": {"batch_size": 4}})
    assert cfg.recipe == "reference-qata" and cfg.preset == "tiny"
    assert cfg.train.batch_size == 4 and cfg.model.base_channels == 8  # overrides win; the preset's rest stays
    path = tmp_path / "run.yaml"
    path.write_text("recipe: reference-mosmed\ntrain:\n  epochs: 3\n")
    from_file = build_config("tiny", path)
    assert from_file.recipe == "reference-mosmed" and from_file.train.epochs == 3
    assert from_file.train.scheduler == "exponential"
    with pytest.raises(ConfigError, match="--recipe NAME"):
        build_config("tiny", overrides={"recipe": "reference-qata"})


def test_defaults_keep_the_papers_objective():
    m, loss, t = ModelConfig(), LossConfig(), TrainConfig()
    assert (m.cvr_attn_condition, m.cvr_loss_condition, m.clr_attn_condition, m.clr_loss_condition) == (True,) * 4
    assert (m.clr_mean_pads, m.ccl_weights, m.interest_dropout) == (False, "paper", 0.0)
    assert (loss.dice, loss.bce, loss.dice_denominator, loss.dice_smooth) == (1.0, 1.0, "linear", 1e-5)
    assert (t.scheduler, t.weight_decay) == ("cosine", 1e-5)
