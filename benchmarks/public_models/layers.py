"""Building blocks shared by the public-architecture families, written in timm's explicit style."""

from __future__ import annotations

import torch
from torch import nn

from zoo.blocks import ConvBnAct  # noqa: F401  (re-exported: conv -> BatchNorm -> activation)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a scaled channel count to a multiple of `divisor`, never more than 10% down (timm)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: global mean, reduce, act, expand, gate, scale the input (timm's SqueezeExcite)."""

    def __init__(self, channels: int, rd_channels: int, act: type[nn.Module] = nn.ReLU,
                 gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = act()
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_reduce(s)
        s = self.act(s)
        s = self.conv_expand(s)
        return x * self.gate(s)


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk conv, optional SE, pointwise projection; identity skip when shapes allow (timm's ds block)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, act: type[nn.Module] = nn.ReLU,
                 se_ratio: float = 0.0, se_gate: type[nn.Module] = nn.Sigmoid, pw_act: bool = False,
                 skip: bool = True) -> None:
        super().__init__()
        self.has_skip = skip and stride == 1 and c_in == c_out
        self.conv_dw = ConvBnAct(c_in, c_in, kernel, stride, groups=c_in, act=act)
        self.se = SqueezeExcite(c_in, make_divisible(c_in * se_ratio), gate=se_gate) if se_ratio else nn.Identity()
        self.conv_pw = ConvBnAct(c_in, c_out, 1, act=act if pw_act else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        x = self.se(x)
        x = self.conv_pw(x)
        if self.has_skip:
            x = x + shortcut
        return x


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand, depthwise kxk, optional SE, 1x1 linear projection, skip when shapes allow."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, expand: float = 6.0,
                 act: type[nn.Module] = nn.ReLU, se_ratio: float = 0.0, se_gate: type[nn.Module] = nn.Sigmoid,
                 se_act: type[nn.Module] = nn.ReLU, se_from_input: bool = False) -> None:
        super().__init__()
        mid = make_divisible(c_in * expand)
        self.has_skip = stride == 1 and c_in == c_out
        self.conv_pw = ConvBnAct(c_in, mid, 1, act=act) if mid != c_in else nn.Identity()
        self.conv_dw = ConvBnAct(mid, mid, kernel, stride, groups=mid, act=act)
        rd = make_divisible((c_in if se_from_input else mid) * se_ratio)
        self.se = SqueezeExcite(mid, rd, act=se_act, gate=se_gate) if se_ratio else nn.Identity()
        self.conv_pwl = ConvBnAct(mid, c_out, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_pw(x)
        x = self.conv_dw(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        if self.has_skip:
            x = x + shortcut
        return x


class ClassifierHead(nn.Module):
    """Global average pool, optional 1x1 conv head with activation (MobileNetV3/LCNet), flatten, linear."""

    def __init__(self, c_in: int, num_classes: int, head_channels: int = 0,
                 act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv_head = nn.Conv2d(c_in, head_channels, 1, bias=True) if head_channels else nn.Identity()
        self.act = act() if head_channels else nn.Identity()
        self.fc = nn.Linear(head_channels or c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        x = self.conv_head(x)
        x = self.act(x)
        x = x.flatten(1)
        x = self.fc(x)
        return x
