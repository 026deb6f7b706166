"""Encoder-decoder nets with spatial outputs: a small UNet (nearest upsample + skip concat), a
convolutional autoencoder (ConvTranspose2d), and an LR-ASPP-style segmentation head (dilated
convs, a global-pool gate, bilinear upsampling to the input size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBnAct


class DoubleConv(nn.Module):
    """Two 3x3 conv-BN-ReLU, the UNet unit."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(c_in, c_out, 3)
        self.conv2 = ConvBnAct(c_out, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class Up(nn.Module):
    """UNet decoder step: 2x nearest upsample, concat with the encoder skip, double conv."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = DoubleConv(c_in + c_skip, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class UNet(nn.Module):
    """Small UNet on 1x32x32: encoder 8-16-32 with 2x2 max pools, 64-channel bottleneck, decoder with
    upsample + concat, 1x1 conv to 2 class maps."""

    def __init__(self, c_in: int = 1, classes: int = 2, widths=(8, 16, 32, 64)) -> None:
        super().__init__()
        self.inc = DoubleConv(c_in, widths[0])
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[0], widths[1]))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[1], widths[2]))
        self.down3 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[2], widths[3]))
        self.up1 = Up(widths[3], widths[2], widths[2])
        self.up2 = Up(widths[2], widths[1], widths[1])
        self.up3 = Up(widths[1], widths[0], widths[0])
        self.outc = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(x4, x3)
        x = self.up2(x, x2)
        x = self.up3(x, x1)
        return self.outc(x)


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder on 1x28x28: two stride-2 convs down to 7x7, two stride-2
    ConvTranspose2d (output_padding 1) back up, sigmoid output."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 3, 2, 1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 3, 2, 1, output_padding=1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)
        x = self.decoder(x)
        return x


class LRASPP(nn.Module):
    """LR-ASPP-style segmenter on 3x32x32: stride-8 backbone with a dilated 3x3, a 1x1 branch gated by
    a global-pool sigmoid, bilinear upsampling to the input size, 1x1 classifier."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(ConvBnAct(3, 16, 3, 2), ConvBnAct(16, 24, 3, 2), ConvBnAct(24, 32, 3, 2),
                                      ConvBnAct(32, 32, 3, dilation=2))
        self.cbr = ConvBnAct(32, 32, 1)
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 32, 1, bias=False), nn.Sigmoid())
        self.classifier = nn.Conv2d(32, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        f = self.backbone(x)
        y = self.cbr(f) * self.scale(f)
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return self.classifier(y)
