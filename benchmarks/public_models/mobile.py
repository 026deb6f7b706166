"""timm-style mobile CNNs, scaled down in width, depth and resolution so each compiles and runs on
the emulator in seconds: MobileNetV2, MobileNetV3-small, MnasNet, LCNet, EfficientNet-Lite0 and an
EfficientNet-B0-like net (SE, SiLU). Each stage list reads like timm's arch strings, spelled out."""

from __future__ import annotations

import torch
from torch import nn

from .layers import ClassifierHead, ConvBnAct, DepthwiseSeparable, InvertedResidual, make_divisible

# (block, kernel, stride, expand, channels, se_ratio, activation)
Stage = tuple[str, int, int, float, int, float, type[nn.Module]]


class EfficientNetFamily(nn.Module):
    """Stem conv, a list of ds/ir blocks, classifier head: the shape of timm's EfficientNet class."""

    def __init__(self, stages: list[Stage], stem: int, width: float, num_classes: int, head: int,
                 stem_act: type[nn.Module] = nn.ReLU, head_act: type[nn.Module] = nn.ReLU,
                 se_gate: type[nn.Module] = nn.Sigmoid, head_bn: bool = True, conv_head: int = 0,
                 se_from_input: bool = False) -> None:
        super().__init__()
        c = stem if stem % 8 == 0 and width == 1.0 else make_divisible(stem * width)
        self.conv_stem = ConvBnAct(3, c, 3, 2, act=stem_act)
        blocks = []
        for kind, kernel, stride, expand, c_out, se, act in stages:
            c_out = make_divisible(c_out * width)
            if kind == "ds":
                blocks.append(DepthwiseSeparable(c, c_out, kernel, stride, act, se, se_gate))
            else:
                blocks.append(InvertedResidual(c, c_out, kernel, stride, expand, act, se, se_gate,
                                               se_from_input=se_from_input))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = ConvBnAct(c, head, 1, act=head_act) if head_bn else nn.Identity()
        self.head = ClassifierHead(head if head_bn else c, num_classes, conv_head, head_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_stem(x)
        x = self.blocks(x)
        x = self.conv_head(x)
        x = self.head(x)
        return x


R, R6, HS, SI = nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU


def mobilenetv2() -> nn.Module:
    """MobileNetV2 width 0.35, one or two blocks per stage, 1280 head scaled to 320."""
    stages = [("ds", 3, 1, 1, 16, 0, R6), ("ir", 3, 2, 6, 24, 0, R6), ("ir", 3, 1, 6, 24, 0, R6),
              ("ir", 3, 2, 6, 32, 0, R6), ("ir", 3, 1, 6, 32, 0, R6), ("ir", 3, 2, 6, 64, 0, R6),
              ("ir", 3, 1, 6, 96, 0, R6), ("ir", 3, 2, 6, 160, 0, R6), ("ir", 3, 1, 6, 320, 0, R6)]
    return EfficientNetFamily(stages, 32, 0.35, 10, 320, stem_act=R6, head_act=R6)


def mobilenetv3_small() -> nn.Module:
    """MobileNetV3-small width 0.5: hard-swish, SE with hard-sigmoid gates, 1x1 conv head without BN."""
    stages = [("ds", 3, 2, 1, 16, 0.25, R), ("ir", 3, 2, 4.5, 24, 0, R), ("ir", 3, 1, 3.67, 24, 0, R),
              ("ir", 5, 2, 4, 40, 0.25, HS), ("ir", 5, 1, 6, 40, 0.25, HS), ("ir", 5, 1, 3, 48, 0.25, HS),
              ("ir", 5, 2, 6, 96, 0.25, HS), ("ir", 5, 1, 6, 96, 0.25, HS)]
    return EfficientNetFamily(stages, 16, 0.5, 10, 288, stem_act=HS, head_act=HS, se_gate=nn.Hardsigmoid,
                              conv_head=256)


def mnasnet() -> nn.Module:
    """MnasNet-B1 width 0.5: ReLU inverted residuals with 3x3 and 5x5 depthwise, one block per stage."""
    stages = [("ds", 3, 1, 1, 16, 0, R), ("ir", 3, 2, 3, 24, 0, R), ("ir", 5, 2, 3, 40, 0, R),
              ("ir", 5, 2, 6, 80, 0, R), ("ir", 3, 1, 6, 96, 0, R), ("ir", 5, 2, 6, 192, 0, R),
              ("ir", 3, 1, 6, 320, 0, R)]
    return EfficientNetFamily(stages, 32, 0.5, 10, 320)


def lcnet() -> nn.Module:
    """PP-LCNet width 0.25: depthwise-separable blocks, hard-swish, 5x5 depthwise, SE in the last
    stage, 1x1 conv head without BN after global pooling."""
    stages = [("ds", 3, 1, 1, 32, 0, HS), ("ds", 3, 2, 1, 64, 0, HS), ("ds", 3, 1, 1, 64, 0, HS),
              ("ds", 3, 2, 1, 128, 0, HS), ("ds", 3, 2, 1, 256, 0, HS), ("ds", 5, 1, 1, 256, 0, HS),
              ("ds", 5, 2, 1, 512, 0.25, HS), ("ds", 5, 1, 1, 512, 0.25, HS)]
    return EfficientNetFamily(stages, 16, 0.25, 10, 0, stem_act=HS, head_act=HS, se_gate=nn.Hardsigmoid,
                              head_bn=False, conv_head=256)


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 width 0.5: ReLU6, no SE, fixed 32-channel stem, 1280 head scaled to 320."""
    stages = [("ds", 3, 1, 1, 16, 0, R6), ("ir", 3, 2, 6, 24, 0, R6), ("ir", 5, 2, 6, 40, 0, R6),
              ("ir", 3, 2, 6, 80, 0, R6), ("ir", 5, 1, 6, 112, 0, R6), ("ir", 5, 2, 6, 192, 0, R6),
              ("ir", 3, 1, 6, 320, 0, R6)]
    return EfficientNetFamily(stages, 32, 0.5, 10, 320, stem_act=R6, head_act=R6)


def efficientnet_b0() -> nn.Module:
    """EfficientNet-B0 width 0.35: SiLU, SE on every block (reduced from the block input), 5x5 depthwise."""
    stages = [("ds", 3, 1, 1, 16, 0.25, SI), ("ir", 3, 2, 6, 24, 0.25, SI), ("ir", 5, 2, 6, 40, 0.25, SI),
              ("ir", 3, 2, 6, 80, 0.25, SI), ("ir", 5, 1, 6, 112, 0.25, SI), ("ir", 5, 2, 6, 192, 0.25, SI)]
    return EfficientNetFamily(stages, 32, 0.35, 10, 256, stem_act=SI, head_act=SI, se_from_input=True)
