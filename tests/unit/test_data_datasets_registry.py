"""The dataset registry: every registered recipe builds a valid config; unknown names list the registered ones."""

from __future__ import annotations

import pytest

from reclmis_core.config import build_config
from reclmis_core.data.datasets_registry import DATASETS, DatasetRecipe, get_recipe, register_dataset
from reclmis_core.errors import ConfigError


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registered_recipe_builds_a_valid_config(name: str) -> None:
    recipe = get_recipe(name)
    assert recipe.name == name
    cfg = build_config(recipe.preset, overrides=recipe.overrides)
    assert cfg.preset == recipe.preset


def test_the_paper_datasets_and_the_sample_are_registered():
    assert DATASETS.names() == ("qata", "mosmed", "sample")
    assert [n for n, r in DATASETS.items() if r.bundled] == ["sample"]


def test_unknown_dataset_names_the_registered_ones_and_how_to_pass_a_folder():
    with pytest.raises(ConfigError, match=r"unknown dataset 'qatta'\. Did you mean 'qata'\? Available: qata, mosmed, "
                                          r"sample; or pass --data DATA_DIR"):
        get_recipe("qatta")


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="dataset 'qata' is already registered"):
        register_dataset(DatasetRecipe("qata", "tiny"))
