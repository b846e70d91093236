"""ConvNeXt-Tiny image encoder (transformers' ConvNextModel), for the guided variant beyond the paper.

Pretrained weights load only from what the user names (a local Hugging Face folder or a hub id, e.g.
``facebook/convnext-tiny-224``); otherwise the encoder is random and we say so loudly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor, nn

from ..config_schema import ModelConfig
from ..errors import CheckpointError
from .image_encoders import ImageEncoder, register_image_encoder

log = logging.getLogger(__name__)

TINY_DEPTHS = (3, 3, 9, 3)
TINY_WIDTHS = (96, 192, 384, 768)


@register_image_encoder("convnext-tiny")
class ConvNextImageEncoder(ImageEncoder):
    """Stage outputs at strides 4, 8, 16, 32 with 96, 192, 384, 768 channels."""

    strides = (4, 8, 16, 32)

    @classmethod
    def feature_channels(cls, cfg: ModelConfig) -> tuple[int, ...]:
        return TINY_WIDTHS

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_channels: int) -> ConvNextImageEncoder:
        return cls(in_channels, cfg.encoder_weights)

    def __init__(self, in_channels: int = 3, weights: str | None = None) -> None:
        super().__init__()
        from transformers import ConvNextConfig, ConvNextModel
        from transformers.utils import logging as hf_logging

        if weights is None:
            cfg = ConvNextConfig(num_channels=in_channels, depths=list(TINY_DEPTHS), hidden_sizes=list(TINY_WIDTHS))
            self.model = ConvNextModel(cfg, add_pooling_layer=False) if _accepts_pooling() else ConvNextModel(cfg)
            log.warning(
                "ConvNeXt-Tiny image encoder is RANDOMLY INITIALISED (no model.encoder_weights given); "
                "name a local folder or hub id such as facebook/convnext-tiny-224 for pretrained weights"
            )
        else:
            local = Path(weights).expanduser().is_dir()
            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                self.model = ConvNextModel.from_pretrained(weights, local_files_only=local, num_channels=in_channels,
                                                           ignore_mismatched_sizes=in_channels != 3)
            except OSError as exc:
                raise CheckpointError(f"could not load ConvNeXt weights from '{weights}': {exc}") from None
            finally:
                hf_logging.set_verbosity(level)
        # The final LayerNorm only normalises the pooled classification feature, which a segmentation encoder
        # never uses: drop it so every parameter is in the graph (exports count parameters).
        self.model.layernorm = nn.Identity()
        sizes = tuple(self.model.config.hidden_sizes)
        if sizes != TINY_WIDTHS:
            raise CheckpointError(f"'{weights}' is a ConvNeXt with stage widths {sizes}, not ConvNeXt-Tiny "
                                  f"{TINY_WIDTHS}; model.image_encoder=convnext-tiny needs ConvNeXt-Tiny weights "
                                  "(e.g. facebook/convnext-tiny-224)")
        self.out_channels = sizes

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.model(pixel_values=x, output_hidden_states=True)
        return list(out.hidden_states[1:])  # stage outputs (the first entry is the stem)


def _accepts_pooling() -> bool:
    import inspect

    from transformers import ConvNextModel

    return "add_pooling_layer" in inspect.signature(ConvNextModel.__init__).parameters
