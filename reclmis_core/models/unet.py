"""U-Net image encoder/decoder with PLAM pixel-level attention on the skip connections (LViT, RecLMIS)."""

from __future__ import annotations

from torch import Tensor, nn
import torch


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(cin, cout), ConvBNReLU(cout, cout))


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
    """Nearest upsample by 2, PLAM on the skip, concatenate, two Conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.plam = PixelLevelAttention(skip)
        self.convs = _double_conv(cin + skip, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.convs(torch.cat([self.plam(skip), self.up(x)], dim=1))


class UNetImageEncoder(nn.Module):
    """Five stages: full, 1/2, 1/4, 1/8, 1/16 resolution; channels b, 2b, 4b, 8b, 8b."""

    def __init__(self, in_channels: int = 3, base: int = 64) -> None:
        super().__init__()
        self.inc = ConvBNReLU(in_channels, base)
        self.down1 = DownBlock(base, 2 * base)
        self.down2 = DownBlock(2 * base, 4 * base)
        self.down3 = DownBlock(4 * base, 8 * base)
        self.down4 = DownBlock(8 * base, 8 * base)
        self.out_channels = (base, 2 * base, 4 * base, 8 * base, 8 * base)

    def forward(self, x: Tensor) -> list[Tensor]:
        x0 = self.inc(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        x4 = self.down4(x3)
        return [x0, x1, x2, x3, x4]


class UNetDecoder(nn.Module):
    """Mirrors the encoder from its ``out_channels``; the bottleneck input may be the CI output."""

    def __init__(self, encoder_channels: tuple[int, ...]) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = encoder_channels
        self.up4 = UpBlock(c4, c3, c2)
        self.up3 = UpBlock(c2, c2, c1)
        self.up2 = UpBlock(c1, c1, c0)
        self.up1 = UpBlock(c0, c0, c0)
        self.out_channels = c0

    def forward(self, bottleneck: Tensor, skips: list[Tensor]) -> Tensor:
        x0, x1, x2, x3 = skips
        x = self.up4(bottleneck, x3)
        x = self.up3(x, x2)
        x = self.up2(x, x1)
        return self.up1(x, x0)
