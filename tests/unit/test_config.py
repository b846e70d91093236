"""Typed config: presets, YAML, overrides, validation with helpful messages."""

from __future__ import annotations

import pytest

from reclmis_core.config import build_config, config_from_dict, config_to_dict, parse_overrides, save_yaml
from reclmis_core.errors import ConfigError


def test_paper_preset_is_the_paper():
    cfg = build_config("paper")
    m, loss = cfg.model, cfg.loss
    assert (m.image_size, m.base_channels, m.text.encoder, m.text.freeze) == (224, 64, "clip", True)
    assert (m.image_mask_ratio, m.text_mask_ratio, m.recon_layers) == (0.5, 0.3, 3)
    assert (loss.clr, loss.cvr, loss.ccl, loss.seg) == (1.0, 1.0, 0.2, 5.0)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.scheduler) == (3e-4, 32, "cosine")


def test_yaml_then_overrides_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: tiny\ntrain:\n  epochs: 7\n  lr: 0.01\n")
    cfg = build_config(None, path, parse_overrides(["train.lr=0.5", "model.text.width=32"]))
    assert cfg.preset == "tiny" and cfg.train.epochs == 7 and cfg.train.lr == 0.5 and cfg.model.text.width == 32


def test_round_trip(tmp_path):
    cfg = build_config("tiny")
    save_yaml(cfg, tmp_path / "c.yaml")
    again = build_config(None, tmp_path / "c.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match="model.imge_size.*image_size"):
        build_config("tiny", overrides={"model": {"imge_size": 64}})


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model": {"image_size": 100}}, "multiple of 16"),
        ({"model": {"mask_strategy": "best"}}, "dist, random, topk"),
        ({"model": {"text": {"encoder": "gpt"}}}, "clip, minilm"),
        ({"train": {"epochs": "many"}}, "must be int"),
        ({"model": {"image_mask_ratio": 1.5}}, r"\[0, 1\]"),
        ({"loss": {"poi": 1.0}, "model": {"use_cvr": False, "use_clr": False, "use_ccl": False}}, "W_poi"),
        ({"loss": {"poi": -1.0}}, "loss.poi must be >= 0"),
        ({"loss": {"dice_smooth": -1.0}}, "loss.dice_smooth must be >= 0"),
        ({"model": {"note_layout": True, "text": {"encoder": "none"}}}, "needs a text encoder"),
        ({"model": {"text": {"reader": "words"}}}, "model.text.reader must be one of raw, zones"),
        ({"model": {"text": {"eof_fill": 9}}}, "read the padding away"),  # tiny reads zones
        ({"data": {"domain_augment": 2.0}}, r"data.domain_augment must lie in \[0, 1\]"),
    ],
)
def test_validation_messages(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config("tiny", overrides=override)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="paper, tiny"):
        build_config("huge")
