"""U-Net image encoder/decoder with PLAM pixel-level attention on the skip connections (LViT, RecLMIS).

The decoder sizes itself from any encoder's ``out_channels``/``strides`` (the U-Net's or ConvNeXt's) and can be
conditioned on the note at every stage (``fusion=multiscale``, beyond the paper) with FiLM or a light
pixel-to-word attention, optionally seeing x/y coordinate channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config_schema import ModelConfig
from .image_encoders import ImageEncoder, register_image_encoder
from .layers import Attention


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(cin, cout), ConvBNReLU(cout, cout))


def coord_channels(x: Tensor) -> Tensor:
    """Two channels holding x and y in [-1, 1] (image right = patient's left, bottom = lower lung)."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([xs, ys], dim=1)


class DownBlock(nn.Sequential):
    """Max-pool by 2, then two 3x3 Conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.MaxPool2d(2), _double_conv(cin, cout))


class PixelLevelAttention(nn.Module):
    """PLAM: a per-pixel gate from channel-mean and channel-max descriptors (LViT's pixel-level module).

    The reference also builds a ``conv_sig`` branch it never calls; it is left out here.
    """

    def __init__(self, channels: int, hidden_ratio: int = 2) -> None:
        super().__init__()
        self.conv_avg = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv_max = nn.Conv2d(channels, channels, 1, bias=False)
        self.gate = nn.Sequential(nn.Linear(3, 3 * hidden_ratio), nn.ReLU(inplace=True), nn.Linear(3 * hidden_ratio, 1))

    def forward(self, x: Tensor) -> Tensor:
        avg = torch.relu(self.conv_avg(x)).mean(dim=1, keepdim=True)
        mx = torch.relu(self.conv_max(x)).amax(dim=1, keepdim=True)
        desc = torch.cat([avg, mx, avg + mx], dim=1)  # (B, 3, H, W)
        gate = self.gate(desc.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, 1, H, W)
        return x * gate


class UpBlock(nn.Module):
    """Nearest upsample, PLAM on the skip, concatenate (+ coordinates), two Conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int, scale: int = 2, coords: bool = False) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=scale, mode="nearest")
        self.plam = PixelLevelAttention(skip)
        self.coords = coords
        self.convs = _double_conv(cin + skip + (2 if coords else 0), cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        parts = [self.plam(skip), self.up(x)]
        if self.coords:
            parts.append(coord_channels(skip))
        return self.convs(torch.cat(parts, dim=1))


class FiLM(nn.Module):
    """Feature-wise affine modulation from a note code: x * (1 + gamma) + beta (starts as identity)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, text: Tensor, text_code: Tensor, text_pad: Tensor) -> Tensor:
        gamma, beta = self.proj(text_code).chunk(2, dim=-1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class WordGuide(nn.Module):
    """Pixels (with their coordinates) attend to the note's words; the result is added back (zero-initialised)."""

    def __init__(self, text_dim: int, channels: int, heads: int = 1) -> None:
        super().__init__()
        width = max(16, channels)
        self.pix = nn.Conv2d(channels + 2, width, 1)
        self.words = nn.Linear(text_dim, width)
        self.attn = Attention(width, heads)
        self.out = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, text: Tensor, text_code: Tensor, text_pad: Tensor) -> Tensor:
        b, _, h, w = x.shape
        q = self.pix(torch.cat([x, coord_channels(x)], dim=1)).flatten(2).transpose(1, 2)
        guided = self.attn(q, self.words(text), key_padding_mask=text_pad)
        return x + self.out(guided.transpose(1, 2).reshape(b, -1, h, w))


def unet_widths(base: int) -> tuple[int, int, int, int, int]:
    """Channels of the five U-Net stages for a first-stage width ``base``: b, 2b, 4b, 8b, 8b."""
    return (base, 2 * base, 4 * base, 8 * base, 8 * base)


@register_image_encoder("unet")
class UNetImageEncoder(ImageEncoder):
    """Five stages: full, 1/2, 1/4, 1/8, 1/16 resolution; channels b, 2b, 4b, 8b, 8b (b = model.base_channels)."""

    strides = (1, 2, 4, 8, 16)
    takes_coords = True

    @classmethod
    def feature_channels(cls, cfg: ModelConfig) -> tuple[int, ...]:
        return unet_widths(cfg.base_channels)

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_channels: int) -> UNetImageEncoder:
        return cls(in_channels, cfg.base_channels)

    def __init__(self, in_channels: int = 3, base: int = 64) -> None:
        super().__init__()
        w = unet_widths(base)
        self.inc = ConvBNReLU(in_channels, w[0])
        self.down1 = DownBlock(w[0], w[1])
        self.down2 = DownBlock(w[1], w[2])
        self.down3 = DownBlock(w[2], w[3])
        self.down4 = DownBlock(w[3], w[4])
        self.out_channels = w

    def forward(self, x: Tensor) -> list[Tensor]:
        x0 = self.inc(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        x4 = self.down4(x3)
        return [x0, x1, x2, x3, x4]


class UNetDecoder(nn.Module):
    """Mirror of any encoder from its ``out_channels``/``strides``; the bottleneck input may be the CI output.

    Stage k takes the deeper features and skip k and outputs the channel count of skip k-1 (the paper's U-Net:
    8b->4b->2b->b->b). If the shallowest skip is not at full resolution (ConvNeXt: 1/4), the head upsamples.
    With ``guide`` set, every stage's output is conditioned on the note (beyond the paper).
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        encoder_strides: tuple[int, ...] = (1, 2, 4, 8, 16),
        coords: bool = False,
        guide: str | None = None,
        text_dim: int = 0,
    ) -> None:
        super().__init__()
        chans, strides = list(encoder_channels), list(encoder_strides)
        blocks, guides = [], []
        cin = chans[-1]
        for j in range(len(chans) - 2, -1, -1):
            cout = chans[j - 1] if j > 0 else chans[0]
            blocks.append(UpBlock(cin, chans[j], cout, scale=strides[j + 1] // strides[j], coords=coords))
            if guide == "film":
                guides.append(FiLM(text_dim, cout))
            elif guide == "attention":
                guides.append(WordGuide(text_dim, cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.guides = nn.ModuleList(guides) if guides else None
        self.out_channels = cin
        self.out_stride = strides[0]

    def forward(
        self,
        bottleneck: Tensor,
        skips: list[Tensor],
        text: Tensor | None = None,
        text_code: Tensor | None = None,
        text_pad: Tensor | None = None,
    ) -> Tensor:
        x = bottleneck
        for k, (block, skip) in enumerate(zip(self.blocks, reversed(skips))):
            x = block(x, skip)
            if self.guides is not None:
                x = self.guides[k](x, text, text_code, text_pad)
        return x
