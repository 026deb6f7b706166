"""The test zoo's networks: small fixed-shape PyTorch networks that exercise every operator the MCU
path supports. The DARTS cell network and MobileNetV2 are the search's own model builders
(tvmnas.models) on fixed genotypes, so the zoo checks the compiler on the networks the search derives;
the rest is built from the zoo's blocks (zoo.blocks). Every network ends in a Softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from tvmnas.models.chain_net import ChainNetwork
from tvmnas.models.darts_net import DartsNetwork
from tvmnas.search.darts_supernet import channel_shuffle
from tvmnas.search.genotype import CellEdge, CellGenotype, ChainLayer, Genotype
from zoo.blocks import BasicBlock, ConvBnAct, SqueezeExcite, classifier_head, probabilities


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


def _cell(*edges: tuple[str, int]) -> CellGenotype:
    """A DARTS cell from (op, source) pairs, two per node in node order, all nodes concatenated."""
    return CellGenotype(tuple(CellEdge(op, source) for op, source in edges), concat=(2, 3, 4, 5))


DARTS_GENOTYPE = Genotype(
    space="darts", input_shape=(3, 32, 32), num_classes=10, channels=8, cells=3, stem_multiplier=2,
    reduction_cells=(1,),
    normal=_cell(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
                 ("dil_conv_3x3", 2), ("avg_pool_3x3", 1), ("skip_connect", 2), ("sep_conv_5x5", 3)),
    reduce=_cell(("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                 ("dil_conv_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 1)),
)
"""Stem, normal cell, reduction cell, normal cell: every derived DARTS op but dil_conv_5x5."""

# MobileNetV2 at width 0.35 for 32x32 inputs: (expand ratio, channels, blocks, first stride) per stage
MOBILENETV2_STAGES = ((1, 8, 1, 1), (6, 8, 2, 1), (6, 16, 3, 2), (6, 24, 4, 2), (6, 32, 3, 1), (6, 56, 3, 2),
                      (6, 112, 1, 1))
MOBILENETV2_GENOTYPE = Genotype(
    space="chain", input_shape=(3, 32, 32), num_classes=10, channels=16, head_channels=448,
    layers=tuple(ChainLayer(f"mb_k3_e{expand}", c, stride if i == 0 else 1)
                 for expand, c, count, stride in MOBILENETV2_STAGES for i in range(count)),
)


def darts_cells() -> nn.Module:
    """DARTS network on 32x32x3 (the search's DartsNetwork): stem, normal, reduction and normal cell."""
    return probabilities(DartsNetwork(DARTS_GENOTYPE))


def mobilenetv2_tiny() -> nn.Module:
    """MobileNetV2 at width 0.35 for 32x32 inputs: stride-1 stem, 7 stages of inverted residuals."""
    return probabilities(ChainNetwork(MOBILENETV2_GENOTYPE))


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
        self.classifier = classifier_head(32)

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
        self.classifier = classifier_head(48)

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
        self.classifier = classifier_head(24)

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
        self.classifier = classifier_head(48)

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
        self.classifier = classifier_head(96)

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


class ShuffleNetTiny(nn.Module):
    """ShuffleNetV2-style network on 32x32x3: channel split, concat and reshape/transpose shuffles."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 24, 3, 2)
        self.unit1 = ShuffleUnit(24)
        self.down = ConvBnAct(24, 32, 3, 2)
        self.unit2 = ShuffleUnit(32)
        self.classifier = classifier_head(32)

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
        self.classifier = classifier_head(8)

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
        self.classifier = classifier_head(16)

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
        self.classifier = classifier_head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block1(x)
        x = self.block2(x)
        x = self.se(x)
        x = self.classifier(x)
        return x
