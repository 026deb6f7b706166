"""Candidate operations: PRIMITIVES + OPS (DARTS cell space), CHAIN_PRIMITIVES + CHAIN_OPS
(inverted-residual chain space), FIXED_OPS (stems, preprocessing, classifier).

Every module here uses only conv2d (groups allowed), batch norm, ReLU/ReLU6, max/avg pool 2d,
adaptive average pool to 1, add, cat, flatten and linear, so the derived networks compile to C.
A new candidate is one line in a PRIMITIVES list and one in its table.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tvmnas.search.layer_spec import LayerSpec

# --------------------------------------------------------------------------- DARTS cell space


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv kxk -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise kxk -> pointwise 1x1 -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation,
                      groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv(dilation=1): the DARTS separable convolution."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class PoolBN(nn.Module):
    """3x3 max or average pool (BN after it only inside the supernet, affine=False)."""

    def __init__(self, kind: str, c: int, stride: int, bn: bool):
        super().__init__()
        if kind == "max":
            self.pool: nn.Module = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        self.bn = nn.BatchNorm2d(c, affine=False) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        x = self.bn(x)
        return x


class FactorizedReduce(nn.Module):
    """Halve H and W, c_in -> c_out, with two 1x1 paths: strided conv, and 2x2 average then conv.

    Unlike DARTS' version (which shifts the input by slicing) it uses only conv, pool and cat. Each
    path has its own BatchNorm before the cat: the same per-channel normalisation as one BatchNorm
    after it (in training and in eval), but foldable into its conv, so the deployed network (float32
    and int8) has no BatchNorm kernel of its own.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        assert c_out % 2 == 0, "FactorizedReduce needs an even channel count"
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn_even = nn.BatchNorm2d(c_out // 2, affine=affine)
        self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)
        self.conv_pooled = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.bn_pooled = nn.BatchNorm2d(c_out // 2, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        even = self.bn_even(self.conv_even(x))
        pooled = self.bn_pooled(self.conv_pooled(self.pool(x)))
        return torch.cat([even, pooled], dim=1)


class Zero(nn.Module):
    """The 'none' candidate: zeros of the output shape (supernet only; never derived)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


PRIMITIVES: list[str] = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]

# name -> constructor(channels, stride, affine, in_supernet)
OPS: dict[str, Callable[[int, int, bool, bool], nn.Module]] = {
    "none": lambda c, s, affine, sup: Zero(s),
    "max_pool_3x3": lambda c, s, affine, sup: PoolBN("max", c, s, bn=sup),
    "avg_pool_3x3": lambda c, s, affine, sup: PoolBN("avg", c, s, bn=sup),
    "skip_connect": lambda c, s, affine, sup: _skip(c, s, affine),
    "sep_conv_3x3": lambda c, s, affine, sup: SepConv(c, c, 3, s, 1, affine),
    "sep_conv_5x5": lambda c, s, affine, sup: SepConv(c, c, 5, s, 2, affine),
    "dil_conv_3x3": lambda c, s, affine, sup: DilConv(c, c, 3, s, 2, 2, affine),
    "dil_conv_5x5": lambda c, s, affine, sup: DilConv(c, c, 5, s, 4, 2, affine),
}

# --------------------------------------------------------------------------- chain space


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> kxk depthwise -> 1x1 project, residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.has_residual = stride == 1 and c_in == c_out
        if expand != 1:
            self.expand = nn.Sequential(
                nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=False)
            )
        else:
            self.expand = nn.Identity()
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU6(inplace=False),
        )
        self.project = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.expand(x)
        x = self.depthwise(x)
        x = self.project(x)
        if self.has_residual:
            x = x + shortcut
        return x


def chain_op_shape(name: str) -> tuple[int, int]:
    """(kernel, expand) encoded in a chain op name such as 'mb_k5_e3'; (0, 0) for 'skip'."""
    if name == "skip":
        return 0, 0
    _, k, e = name.split("_")
    return int(k[1:]), int(e[1:])


CHAIN_PRIMITIVES: list[str] = [
    "skip",
    "mb_k3_e1", "mb_k3_e3", "mb_k3_e6",
    "mb_k5_e1", "mb_k5_e3", "mb_k5_e6",
    "mb_k7_e1", "mb_k7_e3", "mb_k7_e6",
]

# name -> constructor(c_in, c_out, stride); 'skip' only where stride 1 and c_in == c_out
CHAIN_OPS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "skip": lambda ci, co, s: nn.Identity(),
    **{
        name: (lambda ci, co, s, _n=name: InvertedResidual(ci, co, s, *chain_op_shape(_n)))
        for name in CHAIN_PRIMITIVES
        if name != "skip"
    },
}

# --------------------------------------------------------------------------- fixed layers


class ConvBN(nn.Sequential):
    """conv kxk -> BN (-> ReLU6 when `act`): stems and chain heads."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, act: bool = False):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=False))
        super().__init__(*layers)


class Classifier(nn.Module):
    """Global average pool to 1x1 -> flatten -> linear."""

    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        x = self.flatten(x)
        x = self.fc(x)
        return x


# name -> constructor(spec): the layers around the searched choices
FIXED_OPS: dict[str, Callable[[LayerSpec], nn.Module]] = {
    "conv_bn": lambda sp: ConvBN(sp.c_in, sp.c_out, sp.kernel, sp.stride),
    "conv_bn_relu6": lambda sp: ConvBN(sp.c_in, sp.c_out, sp.kernel, sp.stride, act=True),
    "relu_conv_bn": lambda sp: ReLUConvBN(sp.c_in, sp.c_out, sp.kernel, sp.stride, sp.kernel // 2),
    "factorized_reduce": lambda sp: FactorizedReduce(sp.c_in, sp.c_out),
    "classifier": lambda sp: Classifier(sp.c_in, sp.c_out),
}


def build_layer(spec: LayerSpec) -> nn.Module:
    """The module a LayerSpec describes (as in a derived network), for counting and profiling."""
    if spec.op in OPS:
        return OPS[spec.op](spec.c_in, spec.stride, True, False)
    if spec.op in CHAIN_OPS:
        return CHAIN_OPS[spec.op](spec.c_in, spec.c_out, spec.stride)
    if spec.op in FIXED_OPS:
        return FIXED_OPS[spec.op](spec)
    raise KeyError(f"unknown op '{spec.op}'")
