"""Image encoders by name: each registered class describes its stage outputs, the model and the config read them.

An encoder returns one feature map per stage, shallow to deep. Its class says, before anything is built, at
which strides these come (``strides``) and with how many channels for a given config (``feature_channels``),
as timm's ``feature_info.reduction()/channels()`` do: the config checks the image size and the attention
heads against them, the decoder mirrors them, the conditioned interaction works at the deepest one.

Example:
    >>> @register_image_encoder("tiny-cnn")
    ... class TinyCNN(ImageEncoder):
    ...     strides = (2, 4, 8, 16)
    ...     @classmethod
    ...     def feature_channels(cls, cfg: ModelConfig) -> tuple[int, ...]:
    ...         return (16, 32, 64, 128)
    ...     @classmethod
    ...     def from_config(cls, cfg: ModelConfig, in_channels: int) -> TinyCNN:
    ...         return cls(in_channels)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

from torch import Tensor, nn

from ..config_schema import ModelConfig
from ..errors import ConfigError
from ..registry import Registry


class ImageEncoder(nn.Module):
    """Base of the registered image encoders.

    Subclasses set ``strides`` (and ``takes_coords`` when x/y coordinate channels may be added to their input)
    and implement :meth:`feature_channels`, :meth:`from_config` and ``forward(x) -> list[Tensor]``; an instance
    exposes ``out_channels`` equal to ``feature_channels(cfg)``.
    """

    strides: ClassVar[tuple[int, ...]]  # downsampling of each stage output, shallow to deep (1 = full size)
    takes_coords: ClassVar[bool] = False  # model.coords adds two coordinate channels to its input
    out_channels: tuple[int, ...]  # channels of each stage output

    @classmethod
    def feature_channels(cls, cfg: ModelConfig) -> tuple[int, ...]:
        """Channels of each stage output for the model config ``cfg`` (known before the encoder is built)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_channels: int) -> ImageEncoder:
        """The encoder for ``cfg``, reading images with ``in_channels`` channels (coordinates included)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError


IMAGE_ENCODERS: Registry[type[ImageEncoder]] = Registry("image encoder", error=ConfigError)
E = TypeVar("E", bound=type[ImageEncoder])


def register_image_encoder(name: str) -> Callable[[E], E]:
    """Class decorator adding an :class:`ImageEncoder` subclass as ``model.image_encoder=name``."""
    return IMAGE_ENCODERS.register(name)  # type: ignore[return-value]  (the class itself comes back)


def image_encoder_class(name: str) -> type[ImageEncoder]:
    """The registered encoder class ``name``; ConfigError naming the registered ones otherwise."""
    return IMAGE_ENCODERS.get(name)


def build_image_encoder(cfg: ModelConfig) -> ImageEncoder:
    """The encoder named by ``cfg.image_encoder``, its input widened by two coordinate channels when asked."""
    cls = image_encoder_class(cfg.image_encoder)
    encoder = cls.from_config(cfg, cfg.in_channels + (2 if cfg.coords and cls.takes_coords else 0))
    if tuple(encoder.out_channels) != tuple(cls.feature_channels(cfg)):  # a bug in the encoder, not bad input
        raise RuntimeError(f"image encoder '{cfg.image_encoder}' built stages of {tuple(encoder.out_channels)} "
                           f"channels but describes {tuple(cls.feature_channels(cfg))}")
    return encoder
