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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """One tiny text-guided checkpoint (32 px, random weights, scratch tokenizer learned from :data:`NOTES`) for
    the whole session: geometry, IO and runtime tests do not need a trained model. Read it, never write into it."""
    from reclmis_core.checkpoint import save_checkpoint
    from reclmis_core.config import build_config
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}})
    model = build_model(cfg.model, corpus=NOTES * 3)
    return save_checkpoint(model, cfg, tmp_path_factory.mktemp("tiny_checkpoint") / "best")
