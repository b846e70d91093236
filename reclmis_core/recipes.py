"""Training recipes: named config overrides that say how to train on one dataset.

A recipe is ``<short>-<dataset>`` (``paper-qata``, ``reference-mosmed``); with ``--dataset qata`` its short name
is enough (``--recipe reference``). The applied recipe is recorded as ``RunConfig.recipe`` in config.yaml.

- ``paper-*``: Sec. IV-A of the paper (the default recipe of ``--dataset qata|mosmed``).
- ``quick-sample``: the bundled sample data, whose phantoms (family ``a``) the ``tiny`` preset learns in 60 epochs
  instead of its default 150 (the quickstart stays a matter of minutes).
- ``reference-*``: what the public code does (``Config_covid19.py`` / ``Config_MosMedPlus.py``, ``train_model.py``,
  ``Train_one_epoch.py``, ``utils.py``, ``nets/RecLMIS.py``): 0.5 Dice (squared denominator) + 0.5 BCE, Adam without
  weight decay, a per-epoch schedule, early stopping, its layer counts, mask ratios, W-head dropout and batch
  sizes, conditioned attention with plain-mean reconstruction MSEs, the CCL's second softmax. Its model quirks
  (CI order, pad handling, 18-token notes, OpenCV reading) are the separate reference-exact switches
  (docs/reference.md).

Precedence, lowest first: preset < recipe < ``--config`` YAML < ``--set`` < explicit CLI flags
(:func:`reclmis_core.config.build_config` applies it). A dataset's default recipe applies only with the preset it was
written for; a recipe named with ``--recipe`` (or ``recipe:`` in a YAML file) applies to any preset.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from typing import Any

from .config_schema import deep_merge
from .errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How to train on one dataset: overrides for a preset."""

    short: str  # (str) name within its dataset: --dataset qata --recipe reference
    dataset: str  # (str) the registered dataset it was written for
    preset: str  # (str) the preset its hyper-parameters are for
    overrides: dict[str, Any] = field(default_factory=dict)  # (dict) config overrides on top of that preset
    description: str = ""  # (str) one line for --help and docs

    @property
    def name(self) -> str:
        return f"{self.short}-{self.dataset}"


# Sec. IV-A: Adam 3e-4 with cosine annealing, batch 32, 224 px, 200 (QaTa) / 500 (MosMedData+) epochs,
# lambda1..4 = 1, 1, 0.2, 5, mask ratios alpha_v = 0.5, alpha_t = 0.3.
_PAPER: dict[str, Any] = {
    "model": {"image_size": 224, "image_mask_ratio": 0.5, "text_mask_ratio": 0.3},
    "loss": {"clr": 1.0, "cvr": 1.0, "ccl": 0.2, "seg": 5.0},
    "train": {"epochs": 200, "batch_size": 32, "lr": 3e-4, "scheduler": "cosine"},
}

# What both reference configs share. Loss: WeightedDiceBCE(dice_weight=0.5, BCE_weight=0.5), whose Dice divides by
# sum p^2 + sum t^2 per image after scaling p and t by pixel weights of 0.5 (smooth 1e-5 -> 4e-5 unscaled), times
# loss_criterion = 5; Adam(lr) without weight_decay (the configs' 1e-5 is never passed); img_size 224, seed 3407;
# the W heads' attention condition stays (gauss_weight) but both MSEs are a plain .mean(), the CLR one over all
# token slots; cond_cons_loss softmaxes W again and multiplies pad cosines by text_mask (0).
_REFERENCE: dict[str, Any] = {
    "model": {
        "image_size": 224, "text_mask_ratio": 0.3, "dropout": 0.1,
        "cvr_attn_condition": True, "cvr_loss_condition": False,
        "clr_attn_condition": True, "clr_loss_condition": False, "clr_mean_pads": True,
        "ccl_condition": True, "ccl_weights": "reference",
    },
    "loss": {"clr": 1.0, "cvr": 1.0, "ccl": 0.2, "seg": 5.0, "dice": 0.5, "bce": 0.5,
             "dice_denominator": "squared", "dice_smooth": 4e-5},
    "train": {"lr": 3e-4, "weight_decay": 0.0, "warmup_epochs": 0, "seed": 3407},
}

# The reference stops when epochs since the best exceed early_stopping_patience; train.patience stops when they
# reach it, hence patience + 1.
_REFERENCE_QATA = deep_merge(_REFERENCE, {  # Config_covid19.py: lr = 'cosineLR'
    "model": {"recon_layers": 4, "image_mask_ratio": 0.5, "interest_dropout": 0.0},
    "train": {"epochs": 2000, "patience": 101, "batch_size": 32,
              "scheduler": "cosine-restarts", "restart_epochs": 10, "restart_min_lr": 1e-4},
})
_REFERENCE_MOSMED = deep_merge(_REFERENCE, {  # Config_MosMedPlus.py: lr = 'exp', dropout True, dropout_value 0.5
    "model": {"recon_layers": 3, "image_mask_ratio": 0.3, "interest_dropout": 0.5},
    "train": {"epochs": 400, "patience": 31, "batch_size": 20,
              "scheduler": "exponential", "decay_gamma": 0.99, "decay_floor": 0.1},
})

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("paper", "qata", "paper", _PAPER, "the paper (Sec. IV-A): Adam 3e-4, cosine, batch 32, 200 epochs"),
    Recipe("paper", "mosmed", "paper", deep_merge(_PAPER, {"train": {"epochs": 500}}),
           "the paper (Sec. IV-A): Adam 3e-4, cosine, batch 32, 500 epochs"),
    Recipe("reference", "qata", "paper", _REFERENCE_QATA,
           "the public code's Config_covid19.py: warm restarts every 10 epochs, batch 32, 4 recon. layers, "
           "up to 2000 epochs, early stop"),
    Recipe("quick", "sample", "tiny", {"train": {"epochs": 60}},
           "the bundled phantoms (family a): 60 epochs, where the tiny preset already reaches test Dice 0.90"),
    Recipe("reference", "mosmed", "paper", _REFERENCE_MOSMED,
           "the public code's Config_MosMedPlus.py: lr x max(0.99^epoch, 0.1), batch 20, 3 recon. layers, "
           "W-head dropout 0.5, up to 400 epochs, early stop"),
)}


def recipe_names() -> list[str]:
    return sorted(RECIPES)


def get_training_recipe(name: str) -> Recipe:
    """The recipe registered as ``name`` (full name); ConfigError with the nearest names otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        close = difflib.get_close_matches(name, recipe_names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown recipe '{name}'.{hint} Available: {', '.join(recipe_names())}") from None


def resolve_recipe(name: str | None, dataset: str | None, default: str | None = None) -> Recipe | None:
    """The recipe ``--recipe name`` means with ``--dataset dataset`` (``default``: the dataset's own, if any).

    A short name (``reference``) needs a dataset that has it; a full name (``reference-qata``) works anywhere.
    """
    if name is None:
        return None if default is None or dataset is None else get_training_recipe(f"{default}-{dataset}")
    if dataset is not None and f"{name}-{dataset}" in RECIPES:
        return RECIPES[f"{name}-{dataset}"]
    if name in RECIPES:
        return RECIPES[name]
    variants = [r.name for r in RECIPES.values() if r.short == name]
    if variants:
        where = f"dataset '{dataset}' has no '{name}' recipe" if dataset else f"recipe '{name}' depends on the dataset"
        datasets = "|".join(sorted(RECIPES[v].dataset for v in variants))
        raise ConfigError(f"{where}: pass --dataset {datasets}, or name it in full: {', '.join(sorted(variants))}")
    return get_training_recipe(name)


def applicable_recipe(recipe: Recipe | None, preset: str, explicit: bool) -> Recipe | None:
    """``recipe`` if it applies: always when asked for by name (``explicit``), a dataset's default only with the
    preset it was written for (logged either way when the presets differ)."""
    if recipe is None or preset == recipe.preset:
        return recipe
    if not explicit:
        log.info("dataset '%s': preset '%s' given, so its '%s' recipe (for the '%s' preset) is not applied",
                 recipe.dataset, preset, recipe.name, recipe.preset)
        return None
    log.info("recipe '%s' (written for the '%s' preset) applied on top of the '%s' preset",
             recipe.name, recipe.preset, preset)
    return recipe
