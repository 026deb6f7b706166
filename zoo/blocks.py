"""The zoo's own building blocks: only what the search's operators (tvmnas.search.ops) do not offer.

The search's ConvBN knows one activation (ReLU6) and no groups or dilation; the zoo's networks need
ReLU, Hardswish, grouped and dilated convolutions, ResNet's basic block and squeeze-excite, and they
end in a Softmax so their outputs are probabilities.
"""

from __future__ import annotations

import torch
from torch import nn

from tvmnas.search.ops import Classifier


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


def probabilities(net: nn.Module) -> nn.Sequential:
    """`net`'s logits turned into class probabilities by a Softmax over dimension 1."""
    return nn.Sequential(net, nn.Softmax(dim=1))


def classifier_head(channels: int, classes: int = 10) -> nn.Sequential:
    """The search's classifier (global average pool, flatten, linear), then Softmax."""
    return probabilities(Classifier(channels, classes))
