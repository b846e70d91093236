"""The dataset registry: every registered dataset builds a valid config with its default recipe; unknown names list
the registered ones."""

from __future__ import annotations

import pytest

from reclmis_core.config import build_config
from reclmis_core.data.datasets_registry import DATASETS, RegisteredDataset, get_dataset, register_dataset
from reclmis_core.recipes import applicable_recipe, resolve_recipe
from reclmis_core.errors import ConfigError


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registered_dataset_builds_a_valid_config(name: str) -> None:
    entry = get_dataset(name)
    assert entry.name == name
    chosen = applicable_recipe(resolve_recipe(None, name, entry.recipe), entry.preset, explicit=False)
    cfg = build_config(entry.preset, recipe=chosen.name if chosen else None)
    assert cfg.preset == entry.preset


def test_the_paper_datasets_and_the_sample_are_registered():
    assert DATASETS.names() == ("qata", "mosmed", "sample")
    assert [n for n, r in DATASETS.items() if r.bundled] == ["sample"]


def test_unknown_dataset_names_the_registered_ones_and_how_to_pass_a_folder():
    with pytest.raises(ConfigError, match=r"unknown dataset 'qatta'\. Did you mean 'qata'\? Available: qata, mosmed, "
                                          r"sample; or pass --data DATA_DIR"):
        get_dataset("qatta")


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="dataset 'qata' is already registered"):
        register_dataset(RegisteredDataset("qata", "tiny"))
