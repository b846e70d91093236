"""Shared fixtures: tiny configs and models, deterministic and offline."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

NOTES = [
    "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
    "Unilateral pulmonary infection, one infected area, middle right lung.",
    "Unilateral pulmonary infection, one infected area, lower left lung.",
    "Bilateral pulmonary infection, three infected areas, upper middle left lung and lower right lung.",
]


@pytest.fixture
def notes() -> list[str]:
    return list(NOTES)


@pytest.fixture
def tiny_cfg():
    from reclmis_core.config import build_config

    return build_config("tiny", overrides={"model": {"image_size": 32}})
