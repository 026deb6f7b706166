"""The test zoo: small fixed-shape PyTorch networks that exercise every operator the MCU path supports.

Each entry builds an eval-mode network with deterministic weights from a seed, so compiler passes,
the C emitter and the cost model can be checked against PyTorch and onnxruntime on the same models.
BatchNorm running statistics are calibrated on seeded random data and the affine parameters are
drawn from the seed, so BatchNorm folding is really exercised. Entries flagged `m0_sized` fit a
Cortex-M0 with 16 KB SRAM (at most 4K float weights, activations well under 8 KB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tvmnas.errors import ModelLoadError

Shape = tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class ConvBnAct(nn.Module):
    """conv -> BatchNorm -> activation, the basic unit of most zoo networks."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, pad, dilation, groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = act() if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.bn(x)
        x = self.act(x)
        return x


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity or 1x1-conv shortcut, add, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, conv_bias: bool = False, bn_shortcut: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=conv_bias)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=conv_bias)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 1, stride, 0, bias=conv_bias)]
            if bn_shortcut:
                layers.append(nn.BatchNorm2d(c_out))
            self.shortcut: nn.Module = nn.Sequential(*layers)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.shortcut(x)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = x + skip
        x = self.relu2(x)
        return x


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project, residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_skip = stride == 1 and c_in == c_out
        self.expand = ConvBnAct(c_in, hidden, 1, act=nn.ReLU6) if expand != 1 else nn.Identity()
        self.dw = ConvBnAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        self.project = ConvBnAct(hidden, c_out, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x)
        y = self.dw(y)
        y = self.project(y)
        return x + y if self.use_skip else y


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global pool, 1x1 reduce, ReLU, 1x1 expand, Sigmoid gate, channel scale."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pool(x)
        s = self.reduce(s)
        s = self.relu(s)
        s = self.expand(s)
        s = self.gate(s)
        return x * s


class ClassifierHead(nn.Module):
    """Global average pool (adaptive to 1), flatten, linear, softmax."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, classes)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        x = self.flatten(x)
        x = self.fc(x)
        x = self.softmax(x)
        return x


# ---------------------------------------------------------------------------------------------
# DARTS-style cell: candidate ops as data (DARTS' OPS / PRIMITIVES), a cell built from a genotype
# ---------------------------------------------------------------------------------------------


class ReluConvBn(nn.Module):
    """ReLU -> conv -> BatchNorm, the DARTS preprocessing unit."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        x = self.conv(x)
        x = self.bn(x)
        return x


class DilConv(nn.Module):
    """ReLU -> dilated depthwise conv -> 1x1 conv -> BatchNorm (DARTS dil_conv)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.relu = nn.ReLU()
        self.dw = nn.Conv2d(c_in, c_in, kernel, stride, pad, dilation, groups=c_in, bias=False)
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        x = self.dw(x)
        x = self.pw(x)
        x = self.bn(x)
        return x


class SepConv(nn.Module):
    """Two stacked DilConv units with dilation 1 (DARTS sep_conv); only the first one strides."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.first = DilConv(c_in, c_in, kernel, stride, 1)
        self.second = DilConv(c_in, c_out, kernel, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        x = self.second(x)
        return x


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs, concatenated (DARTS skip in reduction)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, 2, 0, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out - c_out // 2, 1, 2, 0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        a = self.conv_a(x)
        b = self.conv_b(x[:, :, 1:, 1:])
        x = torch.cat([a, b], dim=1)
        x = self.bn(x)
        return x


DARTS_OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "skip_connect": lambda c, s: nn.Identity() if s == 1 else FactorizedReduce(c, c),
    "max_pool_3x3": lambda c, s: nn.MaxPool2d(3, s, 1),
    "avg_pool_3x3": lambda c, s: nn.AvgPool2d(3, s, 1, count_include_pad=False),
    "sep_conv_3x3": lambda c, s: SepConv(c, c, 3, s),
    "sep_conv_5x5": lambda c, s: SepConv(c, c, 5, s),
    "dil_conv_3x3": lambda c, s: DilConv(c, c, 3, s, 2),
}
"""DARTS candidate operations by name: (channels, stride) -> module."""

# Each node sums two (op name, input index) edges; inputs 0 and 1 are the cell inputs.
DARTS_NORMAL: tuple[tuple[str, int], ...] = (
    ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
    ("sep_conv_3x3", 1), ("skip_connect", 0),
    ("dil_conv_3x3", 2), ("avg_pool_3x3", 1),
    ("skip_connect", 2), ("sep_conv_5x5", 3),
)
DARTS_REDUCE: tuple[tuple[str, int], ...] = (
    ("max_pool_3x3", 0), ("sep_conv_3x3", 1),
    ("skip_connect", 2), ("max_pool_3x3", 1),
    ("dil_conv_3x3", 0), ("skip_connect", 2),
    ("skip_connect", 2), ("avg_pool_3x3", 1),
)


class DartsCell(nn.Module):
    """Two inputs, 4 intermediate nodes each summing two ops, concat of the nodes, then 1x1 conv+BN."""

    def __init__(
        self,
        genotype: tuple[tuple[str, int], ...],
        c_prev_prev: int,
        c_prev: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        if reduction_prev:
            self.pre0: nn.Module = FactorizedReduce(c_prev_prev, c)
        else:
            self.pre0 = ReluConvBn(c_prev_prev, c, 1, 1)
        self.pre1 = ReluConvBn(c_prev, c, 1, 1)
        self.inputs = [index for _, index in genotype]
        ops = []
        for name, index in genotype:
            stride = 2 if reduction and index < 2 else 1
            ops.append(DARTS_OPS[name](c, stride))
        self.ops = nn.ModuleList(ops)
        self.project = ReluConvBn(4 * c, c, 1, 1)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(4):
            a, b = 2 * node, 2 * node + 1
            h = self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]])
            states.append(h)
        out = torch.cat(states[2:], dim=1)
        out = self.project(out)
        return out


# ---------------------------------------------------------------------------------------------
# The networks
# ---------------------------------------------------------------------------------------------


class ResNet8(nn.Module):
    """MLPerf Tiny image-classification ResNet-8: 16/32/64 channels, 3 residual stacks, 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1)
        self.stem_bn = nn.BatchNorm2d(16)
        self.stem_relu = nn.ReLU()
        self.stack1 = BasicBlock(16, 16, 1, conv_bias=True, bn_shortcut=False)
        self.stack2 = BasicBlock(16, 32, 2, conv_bias=True, bn_shortcut=False)
        self.stack3 = BasicBlock(32, 64, 2, conv_bias=True, bn_shortcut=False)
        self.pool = nn.AvgPool2d(8)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(64, 10)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stem_bn(x)
        x = self.stem_relu(x)
        x = self.stack1(x)
        x = self.stack2(x)
        x = self.stack3(x)
        x = self.pool(x)
        x = self.flatten(x)
        x = self.fc(x)
        x = self.softmax(x)
        return x


class MobileNetV2Tiny(nn.Module):
    """MobileNetV2 at width 0.35 for 32x32 inputs: stride-1 stem, 7 stages of inverted residuals."""

    # (expand ratio, channels at width 0.35, blocks, first stride)
    STAGES = ((1, 8, 1, 1), (6, 8, 2, 1), (6, 16, 3, 2), (6, 24, 4, 2), (6, 32, 3, 1), (6, 56, 3, 2), (6, 112, 1, 1))

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 16, 3, 1, act=nn.ReLU6)
        blocks = []
        c_in = 16
        for expand, c_out, count, stride in self.STAGES:
            for i in range(count):
                blocks.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBnAct(c_in, 448, 1, act=nn.ReLU6)
        self.classifier = ClassifierHead(448, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.head(x)
        x = self.classifier(x)
        return x


class DartsCells(nn.Module):
    """DARTS-style network on 32x32x3: stem, normal cell, reduction cell, normal cell, classifier."""

    def __init__(self, c: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 2 * c, 3, act=None)
        self.cell1 = DartsCell(DARTS_NORMAL, 2 * c, 2 * c, c, reduction=False, reduction_prev=False)
        self.cell2 = DartsCell(DARTS_REDUCE, 2 * c, c, 2 * c, reduction=True, reduction_prev=False)
        self.cell3 = DartsCell(DARTS_NORMAL, c, 2 * c, 2 * c, reduction=False, reduction_prev=True)
        self.classifier = ClassifierHead(2 * c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)
        s1 = self.cell1(s0, s0)
        s2 = self.cell2(s0, s1)
        s3 = self.cell3(s1, s2)
        x = self.classifier(s3)
        return x


class LeNet5(nn.Module):
    """LeNet-5 on 32x32x1 with ReLU: unpadded 5x5 convs, 2x2 max pools, three linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(400, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, 10)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.relu1(x)
        x = self.pool1(x)
        x = self.conv2(x)
        x = self.relu2(x)
        x = self.pool2(x)
        x = self.flatten(x)
        x = self.fc1(x)
        x = self.relu3(x)
        x = self.fc2(x)
        x = self.relu4(x)
        x = self.fc3(x)
        x = self.softmax(x)
        return x


class ResNetStem7(nn.Module):
    """ImageNet-style ResNet stem on 64x64x3 (7x7 stride-2 conv, 3x3 stride-2 max pool), two basic blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 16, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.block1 = BasicBlock(16, 16, 1)
        self.block2 = BasicBlock(16, 32, 2)
        self.classifier = ClassifierHead(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.pool(x)
        x = self.block1(x)
        x = self.block2(x)
        x = self.classifier(x)
        return x


class ResNeXtBlock(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce, grouped 3x3 (cardinality groups), 1x1 expand, residual add."""

    def __init__(self, channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.reduce = ConvBnAct(channels, width, 1)
        self.grouped = ConvBnAct(width, width, 3, groups=groups)
        self.expand = ConvBnAct(width, channels, 1, act=None)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reduce(x)
        y = self.grouped(y)
        y = self.expand(y)
        x = x + y
        x = self.relu(x)
        return x


class ResNeXtTiny(nn.Module):
    """Two ResNeXt blocks with grouped 3x3 convs (groups 4) on 32x32x3."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 32, 3, 2)
        self.block1 = ResNeXtBlock(32, 16, 4)
        self.down = ConvBnAct(32, 48, 3, 2, groups=4)
        self.block2 = ResNeXtBlock(48, 24, 4)
        self.classifier = ClassifierHead(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block1(x)
        x = self.down(x)
        x = self.block2(x)
        x = self.classifier(x)
        return x


class DilatedContext(nn.Module):
    """Context module on 32x32x3: 3x3 convs with dilation 1, 2, 4 (padding = dilation), 1x1 fuse."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(3, 16, 3, 2)
        self.conv2 = ConvBnAct(16, 16, 3, dilation=2)
        self.conv3 = ConvBnAct(16, 16, 3, dilation=4)
        self.fuse = ConvBnAct(16, 24, 1)
        self.classifier = ClassifierHead(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.fuse(x)
        x = self.classifier(x)
        return x


class InceptionModule(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-5x5; 3x3 max pool-1x1) concatenated on channels."""

    def __init__(self, c_in: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.b1 = ConvBnAct(c_in, c1, 1)
        self.b3_reduce = ConvBnAct(c_in, c3r, 1)
        self.b3 = ConvBnAct(c3r, c3, 3)
        self.b5_reduce = ConvBnAct(c_in, c5r, 1)
        self.b5 = ConvBnAct(c5r, c5, 5)
        self.bp_pool = nn.MaxPool2d(3, 1, 1)
        self.bp = ConvBnAct(c_in, cp, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.b1(x)
        y3 = self.b3(self.b3_reduce(x))
        y5 = self.b5(self.b5_reduce(x))
        yp = self.bp(self.bp_pool(x))
        return torch.cat([y1, y3, y5, yp], dim=1)


class InceptionTiny(nn.Module):
    """GoogLeNet-style network on 32x32x3: stride-2 stem, two inception modules, 2x2 average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 16, 3, 2)
        self.mix1 = InceptionModule(16, 8, 8, 12, 4, 8, 8)
        self.pool = nn.AvgPool2d(2, 2)
        self.mix2 = InceptionModule(36, 12, 12, 16, 4, 8, 12)
        self.classifier = ClassifierHead(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.mix1(x)
        x = self.pool(x)
        x = self.mix2(x)
        x = self.classifier(x)
        return x


class MobileNetV3Block(nn.Module):
    """MobileNetV3 block: 1x1 expand (Hardswish), depthwise kxk, squeeze-excite, 1x1 project, residual."""

    def __init__(self, c_in: int, hidden: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.use_skip = stride == 1 and c_in == c_out
        self.expand = ConvBnAct(c_in, hidden, 1, act=nn.Hardswish)
        self.dw = ConvBnAct(hidden, hidden, kernel, stride, groups=hidden, act=nn.Hardswish)
        self.se = SqueezeExcite(hidden, max(4, hidden // 4))
        self.project = ConvBnAct(hidden, c_out, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x)
        y = self.dw(y)
        y = self.se(y)
        y = self.project(y)
        return x + y if self.use_skip else y


class MobileNetV3Tiny(nn.Module):
    """MobileNetV3-style network on 32x32x3: Hardswish, 5x5 depthwise, squeeze-excite with Sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 16, 3, 2, act=nn.Hardswish)
        self.block1 = MobileNetV3Block(16, 48, 16, 3, 1)
        self.block2 = MobileNetV3Block(16, 64, 24, 5, 2)
        self.block3 = MobileNetV3Block(24, 72, 24, 5, 1)
        self.head = ConvBnAct(24, 96, 1, act=nn.Hardswish)
        self.classifier = ClassifierHead(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        x = self.head(x)
        x = self.classifier(x)
        return x


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1): split channels in two, transform one half, concat, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.pw1 = ConvBnAct(half, half, 1)
        self.dw = ConvBnAct(half, half, 3, groups=half, act=None)
        self.pw2 = ConvBnAct(half, half, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, y = x.chunk(2, dim=1)
        y = self.pw1(y)
        y = self.dw(y)
        y = self.pw2(y)
        x = torch.cat([keep, y], dim=1)
        x = channel_shuffle(x, 2)
        return x


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channel groups with reshape -> transpose -> reshape (ShuffleNet)."""
    n, c, h, w = x.shape
    x = x.reshape(n, groups, c // groups, h, w)
    x = x.transpose(1, 2)
    x = x.reshape(n, c, h, w)
    return x


class ShuffleNetTiny(nn.Module):
    """ShuffleNetV2-style network on 32x32x3: channel split, concat and reshape/transpose shuffles."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 24, 3, 2)
        self.unit1 = ShuffleUnit(24)
        self.down = ConvBnAct(24, 32, 3, 2)
        self.unit2 = ShuffleUnit(32)
        self.classifier = ClassifierHead(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.unit1(x)
        x = self.down(x)
        x = self.unit2(x)
        x = self.classifier(x)
        return x


class M0Mlp(nn.Module):
    """Digits MLP for Cortex-M0: 8x8x1 -> reshape 64 -> 32 -> ReLU -> 10 -> softmax (2,410 weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(1, 64)
        x = self.fc1(x)
        x = self.relu(x)
        x = self.fc2(x)
        x = self.softmax(x)
        return x


class M0Cnn(nn.Module):
    """Digits CNN for Cortex-M0: 3x3 conv+BN+ReLU, 2x2 max pool, 3x3 conv+BN+ReLU6, global pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(1, 4, 3)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = ConvBnAct(4, 8, 3, act=nn.ReLU6)
        self.classifier = ClassifierHead(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.pool(x)
        x = self.conv2(x)
        x = self.classifier(x)
        return x


class M0DwSep(nn.Module):
    """Digits depthwise-separable net for Cortex-M0: depthwise 3x3, 2x2 avg pool, pointwise 1x1, Hardswish."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(1, 8, 3, act=nn.Hardswish)
        self.dw = ConvBnAct(8, 8, 3, groups=8, act=nn.Hardswish)
        self.pool = nn.AvgPool2d(2)
        self.pw = ConvBnAct(8, 16, 1, act=nn.Hardswish)
        self.dw2 = ConvBnAct(16, 16, 3, 2, groups=16, act=nn.ReLU6)
        self.classifier = ClassifierHead(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.dw(x)
        x = self.pool(x)
        x = self.pw(x)
        x = self.dw2(x)
        x = self.classifier(x)
        return x


class M0ResNet(nn.Module):
    """Digits residual net for Cortex-M0: identity block, stride-2 block with 1x1 shortcut, squeeze-excite."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(1, 4, 3)
        self.block1 = BasicBlock(4, 4, 1)
        self.block2 = BasicBlock(4, 8, 2)
        self.se = SqueezeExcite(8, 4)
        self.classifier = ClassifierHead(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block1(x)
        x = self.block2(x)
        x = self.se(x)
        x = self.classifier(x)
        return x


# ---------------------------------------------------------------------------------------------
# Deterministic weights
# ---------------------------------------------------------------------------------------------

_CALIBRATION_BATCH = 8


def _init_weights(model: nn.Module) -> None:
    """Draw He-scaled conv/linear weights and small biases from the (already seeded) global RNG."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            gain = 1.0 if isinstance(module, nn.Linear) else 2.0
            with torch.no_grad():
                module.weight.normal_(0.0, math.sqrt(gain / fan_in))
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1)


def _calibrate_batchnorm(model: nn.Module, input_shape: Shape) -> None:
    """Set BN running stats from seeded random data, then draw non-trivial affine params.

    Calibrated statistics keep activations at a sane scale through deep stacks, and the random
    scale/shift make a BN-folding bug visible in the outputs.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the stats exactly
    batch = torch.randn((_CALIBRATION_BATCH, *input_shape[1:]))
    model.train()
    with torch.no_grad():
        model(batch)
    for bn in bns:
        bn.momentum = 0.1
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooEntry:
    """One zoo network: how to build it, its fixed input shape and whether it fits a Cortex-M0."""

    name: str
    factory: Callable[[], nn.Module]
    input_shape: Shape
    m0_sized: bool
    description: str

    def build(self, seed: int = 0) -> nn.Module:
        """Build the network with weights and BN statistics drawn from `seed`, in eval mode.

        The global torch RNG state is left as it was.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.factory()
            _init_weights(model)
            _calibrate_batchnorm(model, self.input_shape)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def sample_input(self, seed: int = 0) -> torch.Tensor:
        """A seeded standard-normal input of this entry's shape."""
        return sample_input(self.input_shape, seed)


def sample_input(input_shape: Shape, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal float32 tensor of `input_shape`, independent of the global RNG."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(input_shape, generator=gen, dtype=torch.float32)


def _entry(name: str, factory: Callable[[], nn.Module], shape: Shape, m0: bool = False) -> ZooEntry:
    doc = (factory.__doc__ or "").strip().splitlines()[0]
    return ZooEntry(name=name, factory=factory, input_shape=shape, m0_sized=m0, description=doc)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        _entry("resnet8", ResNet8, (1, 3, 32, 32)),
        _entry("mobilenetv2_tiny", MobileNetV2Tiny, (1, 3, 32, 32)),
        _entry("darts_cells", DartsCells, (1, 3, 32, 32)),
        _entry("lenet5", LeNet5, (1, 1, 32, 32)),
        _entry("resnet_stem7", ResNetStem7, (1, 3, 64, 64)),
        _entry("resnext_tiny", ResNeXtTiny, (1, 3, 32, 32)),
        _entry("dilated_context", DilatedContext, (1, 3, 32, 32)),
        _entry("inception_tiny", InceptionTiny, (1, 3, 32, 32)),
        _entry("mobilenetv3_tiny", MobileNetV3Tiny, (1, 3, 32, 32)),
        _entry("shufflenet_tiny", ShuffleNetTiny, (1, 3, 32, 32)),
        _entry("m0_mlp", M0Mlp, (1, 1, 8, 8), m0=True),
        _entry("m0_cnn", M0Cnn, (1, 1, 8, 8), m0=True),
        _entry("m0_dwsep", M0DwSep, (1, 1, 8, 8), m0=True),
        _entry("m0_resnet", M0ResNet, (1, 1, 8, 8), m0=True),
    )
}
"""Every zoo network by name."""


def list_zoo(m0_only: bool = False) -> list[ZooEntry]:
    """The zoo entries sorted by name; only the Cortex-M0-sized ones when `m0_only`."""
    return [ZOO[n] for n in sorted(ZOO) if ZOO[n].m0_sized or not m0_only]


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called `name`; raises ModelLoadError naming the known ones otherwise."""
    if name not in ZOO:
        raise ModelLoadError(f"no zoo model '{name}' (known: {', '.join(sorted(ZOO))})")
    return ZOO[name]


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def export_onnx(model: nn.Module, input_shape: Shape, path: str | Path, keep_batchnorm: bool = False) -> Path:
    """Export `model` to ONNX (TorchScript exporter, opset 17) with one input "input" and output "output".

    The exporter folds eval-mode BatchNorm into the preceding Conv by default; `keep_batchnorm`
    turns its constant folding off so BatchNormalization nodes reach the importer (to test folding).
    """
    path = Path(path)
    example = sample_input(input_shape)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        do_constant_folding=not keep_batchnorm,
    )
    return path


def export_pt2(model: nn.Module, input_shape: Shape, path: str | Path) -> Path:
    """Export `model` with torch.export at the fixed `input_shape` and save it as a .pt2 program."""
    path = Path(path)
    example = sample_input(input_shape)
    program = torch.export.export(model, (example,))
    torch.export.save(program, str(path))
    return path
