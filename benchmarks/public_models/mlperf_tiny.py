"""MLPerf Tiny v1.0 reference networks: ResNet-8 (CIFAR-10), DS-CNN (keyword spotting),
MobileNetV1-0.25 (visual wake words) and the FC autoencoder (anomaly detection), as in the
reference Keras models, written for PyTorch."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import ConvBnAct


class ResNetBlock(nn.Module):
    """Two 3x3 conv+BN, a 1x1-conv shortcut when the shape changes, add, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(c_in, c_out, 3, stride)
        self.conv2 = ConvBnAct(c_out, c_out, 3, act=None)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.act(x + shortcut)
        return x


class ResNet8(nn.Module):
    """MLPerf Tiny image classification ResNet-8: 16-32-64 stacks on 32x32x3, 10 classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBnAct(3, 16, 3)
        self.stack1 = ResNetBlock(16, 16, 1)
        self.stack2 = ResNetBlock(16, 32, 2)
        self.stack3 = ResNetBlock(32, 64, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stack1(x)
        x = self.stack2(x)
        x = self.stack3(x)
        x = self.pool(x).flatten(1)
        x = self.fc(x)
        return x


def tf_same_pad(size: tuple[int, int], kernel: tuple[int, int], stride: int) -> nn.ZeroPad2d:
    """TensorFlow 'same' padding as an explicit ZeroPad2d (the extra row/column goes bottom/right)."""
    pads = []
    for n, k in zip(size, kernel):
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return nn.ZeroPad2d((left, right, top, bottom))


class TfConvBnAct(nn.Module):
    """Keras Conv2D(padding='same') + BatchNormalization + ReLU: ZeroPad2d, unpadded conv, BN, ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], stride: int, size: tuple[int, int],
                 groups: int = 1) -> None:
        super().__init__()
        self.pad = tf_same_pad(size, kernel, stride)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pad(x)
        x = self.conv(x)
        x = self.bn(x)
        x = self.act(x)
        return x


class DSCNN(nn.Module):
    """MLPerf Tiny keyword spotting DS-CNN: 10x4 stride-2 conv then four depthwise-separable blocks,
    on 49x10 MFCC, TF 'same' padding, 12 classes."""

    def __init__(self, num_classes: int = 12, width: int = 64) -> None:
        super().__init__()
        self.stem = TfConvBnAct(1, width, (10, 4), 2, (49, 10))
        blocks = []
        for _ in range(4):
            blocks.append(TfConvBnAct(width, width, (3, 3), 1, (25, 5), groups=width))
            blocks.append(TfConvBnAct(width, width, (1, 1), 1, (25, 5)))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.pool(x).flatten(1)
        x = self.fc(x)
        return x


class MobileNetV1(nn.Module):
    """MLPerf Tiny visual wake words MobileNetV1 at width 0.25: 13 depthwise-separable blocks, 2 classes."""

    CFG = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

    def __init__(self, num_classes: int = 2, width: float = 0.25) -> None:
        super().__init__()
        c = int(32 * width)
        self.stem = ConvBnAct(3, c, 3, 2)
        blocks = []
        for c_out, stride in self.CFG:
            c_out = int(c_out * width)
            blocks.append(ConvBnAct(c, c, 3, stride, groups=c))
            blocks.append(ConvBnAct(c, c_out, 1))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.pool(x).flatten(1)
        x = self.fc(x)
        return x


class FcAutoencoder(nn.Module):
    """MLPerf Tiny anomaly detection autoencoder: 640 -> 4x(128, BN, ReLU) -> 8 -> 4x(128, BN, ReLU) -> 640."""

    def __init__(self, n_in: int = 640, hidden: int = 128, bottleneck: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        widths = [n_in, hidden, hidden, hidden, hidden, bottleneck, hidden, hidden, hidden, hidden]
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, n_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        x = self.out(x)
        return x
