"""The image-encoder registry: every registered encoder builds and keeps its own description (channels,
strides); the config and the model derive sizes from it; unknown names list the registered ones."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from reclmis_core.config import ModelConfig, build_config
from reclmis_core.errors import ConfigError
from reclmis_core.models import build_model
from reclmis_core.models.image_encoders import (
    IMAGE_ENCODERS,
    ImageEncoder,
    build_image_encoder,
    image_encoder_class,
    register_image_encoder,
)


def test_the_built_in_encoders_are_registered():
    assert IMAGE_ENCODERS.names() == ("unet", "convnext-tiny")


@pytest.mark.parametrize("name", IMAGE_ENCODERS.names())
def test_every_registered_encoder_returns_the_stages_it_describes(name: str) -> None:
    cls = image_encoder_class(name)
    size = 2 * cls.strides[-1]
    cfg = build_config("tiny", overrides={"model": {"image_encoder": name, "image_size": size}}).model
    encoder = build_image_encoder(cfg)
    assert encoder.out_channels == cls.feature_channels(cfg) and encoder.strides == cls.strides
    feats = encoder(torch.randn(1, cfg.in_channels, size, size))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, size // s, size // s)
                                                    for c, s in zip(cls.feature_channels(cfg), cls.strides)]


@pytest.mark.parametrize(("name", "step"), [("unet", 16), ("convnext-tiny", 32)])
def test_the_image_size_rule_comes_from_the_encoders_deepest_stride(name: str, step: int) -> None:
    with pytest.raises(ConfigError, match=f"multiple of {step} and >= {2 * step} for the {name} encoder"):
        build_config("tiny", overrides={"model": {"image_encoder": name, "image_size": step + 8}})


def test_unknown_encoder_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"unknown image encoder 'unett'\. Did you mean 'unet'\? Available: unet, "
                                          r"convnext-tiny"):
        build_config("tiny", overrides={"model": {"image_encoder": "unett"}})


class _Tiny(ImageEncoder):
    """Three stride-2 convolutions: strides 2, 4, 8 (an encoder the config has never heard of)."""

    strides = (2, 4, 8)

    @classmethod
    def feature_channels(cls, cfg: ModelConfig) -> tuple[int, ...]:
        return (8, 16, 32)

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_channels: int) -> _Tiny:
        return cls(in_channels)

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Conv2d(a, b, 3, stride=2, padding=1)
                                     for a, b in ((in_channels, 8), (8, 16), (16, 32))])
        self.out_channels = (8, 16, 32)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def test_a_registered_encoder_sizes_the_config_checks_and_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IMAGE_ENCODERS, "_entries", dict(IMAGE_ENCODERS._entries))  # for this test only
    register_image_encoder("tiny-cnn")(_Tiny)
    cfg = build_config("tiny", overrides={"model": {"image_encoder": "tiny-cnn", "image_size": 24}})  # 24 = 3 x 8
    model = build_model(cfg.model, corpus=["left lower lung"]).eval()
    assert model.seg.dim == 32 and model.seg.grid == 3
    tb = model.tokenize(["left lower lung"])
    assert model(torch.randn(1, 3, 24, 24), tb.input_ids, tb.attention_mask).logits.shape == (1, 1, 24, 24)
    with pytest.raises(ValueError, match="already registered"):
        register_image_encoder("tiny-cnn")(_Tiny)
