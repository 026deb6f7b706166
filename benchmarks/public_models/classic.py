"""Classic CNN families, narrowed: ResNet-18, RegNetX-200MF, GhostNet, ShuffleNetV2, SqueezeNet
1.1 and a DenseNet-style net, each in the structure of its reference implementation."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import ClassifierHead, ConvBnAct, SqueezeExcite, make_divisible


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, downsample (1x1 conv + BN) shortcut, add, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(c_in, c_out, 3, stride)
        self.conv2 = ConvBnAct(c_out, c_out, 3, act=None)
        self.downsample = ConvBnAct(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else None
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.act(x + shortcut)
        return x


class ResNet18(nn.Module):
    """ResNet-18 at width 1/8 on 64x64: 7x7 stride-2 stem, 3x3 max pool, four stages of two basic blocks."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(3, widths[0], 7, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, c = [], widths[0]
        for i, w in enumerate(widths):
            layers += [BasicBlock(c, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            c = w
        self.layers = nn.Sequential(*layers)
        self.head = ClassifierHead(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.maxpool(x)
        x = self.layers(x)
        x = self.head(x)
        return x


class RegNetXBlock(nn.Module):
    """RegNetX bottleneck: 1x1 conv, 3x3 group conv (group width 8) with the stride, 1x1 conv, shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, group_width: int = 8) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(c_in, c_out, 1)
        self.conv2 = ConvBnAct(c_out, c_out, 3, stride, groups=c_out // group_width)
        self.conv3 = ConvBnAct(c_out, c_out, 1, act=None)
        self.downsample = ConvBnAct(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else None
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.act(x + shortcut)
        return x


class RegNetX(nn.Module):
    """RegNetX-200MF-like: 32-channel stride-2 stem, stages 24-56-152-368 narrowed to 16-32-64-128,
    depths 1-1-2-2, group width 8, bottleneck ratio 1."""

    def __init__(self, num_classes: int = 10, widths=(16, 32, 64, 128), depths=(1, 1, 2, 2)) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 16, 3, 2)
        blocks, c = [], 16
        for w, d in zip(widths, depths):
            for i in range(d):
                blocks.append(RegNetXBlock(c, w, 2 if i == 0 else 1))
                c = w
        self.stages = nn.Sequential(*blocks)
        self.head = ClassifierHead(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        x = self.head(x)
        return x


class GhostModule(nn.Module):
    """Ghost module: a 1x1 primary conv makes half the channels, a cheap depthwise 3x3 the rest,
    concatenated and cut to `c_out` (GhostNet's x[:, :oup])."""

    def __init__(self, c_in: int, c_out: int, relu: bool = True) -> None:
        super().__init__()
        self.c_out = c_out
        init = math.ceil(c_out / 2)
        act = nn.ReLU if relu else None
        self.primary_conv = ConvBnAct(c_in, init, 1, act=act)
        self.cheap_operation = ConvBnAct(init, init, 3, groups=init, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, : self.c_out]


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: ghost expand, stride-2 depthwise when downsampling, optional SE, ghost project,
    shortcut (identity, or depthwise + pointwise when the shape changes)."""

    def __init__(self, c_in: int, mid: int, c_out: int, kernel: int, stride: int, se_ratio: float) -> None:
        super().__init__()
        self.ghost1 = GhostModule(c_in, mid, relu=True)
        self.conv_dw = ConvBnAct(mid, mid, kernel, stride, groups=mid, act=None) if stride > 1 else nn.Identity()
        self.se = (SqueezeExcite(mid, make_divisible(mid * se_ratio, 4), gate=nn.Hardsigmoid)
                   if se_ratio else nn.Identity())
        self.ghost2 = GhostModule(mid, c_out, relu=False)
        if c_in == c_out and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(ConvBnAct(c_in, c_in, kernel, stride, groups=c_in, act=None),
                                          ConvBnAct(c_in, c_out, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.ghost1(x)
        x = self.conv_dw(x)
        x = self.se(x)
        x = self.ghost2(x)
        return x + shortcut


class GhostNet(nn.Module):
    """GhostNet width 0.5 on 64x64, one bottleneck per stage (odd widths so the ghost slice really cuts)."""

    # kernel, mid, out, se, stride
    CFG = ((3, 16, 16, 0, 1), (3, 48, 24, 0, 2), (3, 72, 24, 0, 1), (5, 72, 40, 0.25, 2),
           (3, 240, 80, 0, 2), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (5, 672, 160, 0.25, 2))

    def __init__(self, num_classes: int = 10, width: float = 0.5) -> None:
        super().__init__()
        c = make_divisible(16 * width, 4)
        self.conv_stem = ConvBnAct(3, c, 3, 2)
        blocks = []
        for kernel, mid, out, se, stride in self.CFG:
            out_c = make_divisible(out * width, 4) + 1  # odd: GhostModule's slice drops a channel
            blocks.append(GhostBottleneck(c, make_divisible(mid * width, 4), out_c, kernel, stride, se))
            c = out_c
        self.blocks = nn.Sequential(*blocks)
        self.conv_last = ConvBnAct(c, 240, 1)
        self.head = ClassifierHead(240, num_classes, head_channels=320)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_stem(x)
        x = self.blocks(x)
        x = self.conv_last(x)
        x = self.head(x)
        return x


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channel groups: view as (b, groups, c/groups, h, w), swap, flatten (torchvision)."""
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits channels in half (chunk) and transforms one half; stride 2
    transforms both branches; then concat and channel shuffle."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch = c_out // 2
        if stride > 1:
            self.branch1 = nn.Sequential(ConvBnAct(c_in, c_in, 3, stride, groups=c_in, act=None),
                                         ConvBnAct(c_in, branch, 1))
        b_in = c_in if stride > 1 else branch
        self.branch2 = nn.Sequential(ConvBnAct(b_in, branch, 1), ConvBnAct(branch, branch, 3, stride, groups=branch, act=None),
                                     ConvBnAct(branch, branch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 0.5x on a non-square 48x64 input: stem conv + max pool, stages 48-96-192 of two
    units each, 1x1 conv (1024 scaled to 256), global pool, linear."""

    def __init__(self, num_classes: int = 10, widths=(48, 96, 192), repeats=(2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(3, 24, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        units, c = [], 24
        for w, r in zip(widths, repeats):
            for i in range(r):
                units.append(ShuffleUnit(c, w, 2 if i == 0 else 1))
                c = w
        self.stages = nn.Sequential(*units)
        self.conv5 = ConvBnAct(c, 256, 1)
        self.head = ClassifierHead(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.maxpool(x)
        x = self.stages(x)
        x = self.conv5(x)
        x = self.head(x)
        return x


class Fire(nn.Module):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated, ReLU throughout."""

    def __init__(self, c_in: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(c_in, squeeze, 1), nn.ReLU())
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, e1, 1), nn.ReLU())
        self.expand3x3 = nn.Sequential(nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1 at half width on 64x64: ceil-mode max pools, eight fire modules, conv classifier
    and global pooling (no linear layer)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 8, 32, 32), Fire(64, 8, 32, 32), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 24, 96, 96), Fire(192, 24, 96, 96), Fire(192, 32, 128, 128), Fire(256, 32, 128, 128),
        )
        self.classifier = nn.Sequential(nn.Conv2d(256, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


class DenseLayer(nn.Module):
    """DenseNet layer: BN-ReLU-1x1 conv (bottleneck), BN-ReLU-3x3 conv, output concatenated to the input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(torch.relu(self.norm1(x)))
        y = self.conv2(torch.relu(self.norm2(y)))
        return torch.cat([x, y], 1)


class DenseNet(nn.Module):
    """DenseNet-style net on 32x32: growth 8, two dense blocks of three layers, a transition (BN, ReLU,
    1x1 conv, 2x2 average pool) between them, BN-ReLU, global pool, linear."""

    def __init__(self, num_classes: int = 10, growth: int = 8) -> None:
        super().__init__()
        c = 16
        self.conv0 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        block1 = []
        for _ in range(3):
            block1.append(DenseLayer(c, growth))
            c += growth
        self.block1 = nn.Sequential(*block1)
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                        nn.AvgPool2d(2, 2))
        c //= 2
        block2 = []
        for _ in range(3):
            block2.append(DenseLayer(c, growth))
            c += growth
        self.block2 = nn.Sequential(*block2)
        self.norm5 = nn.BatchNorm2d(c)
        self.head = ClassifierHead(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv0(x)
        x = self.block1(x)
        x = self.transition(x)
        x = self.block2(x)
        x = torch.relu(self.norm5(x))
        x = self.head(x)
        return x
