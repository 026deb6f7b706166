"""A sub-network as an ordinary static network: trained alone, exported, or cut from the supernet.

`SubNetwork` uses plain Conv2d / BatchNorm2d / Linear modules, so it exports to .pt2 and .onnx
like any other model. `extract_subnet` copies the super-network's nested slices (and the
sub-network's own BatchNorm statistics) into one; `bn_as_affine` turns every BatchNorm into an
explicit per-channel scale and shift so the compiler keeps the shared conv weights unfolded.
"""

from __future__ import annotations

import torch
from torch import nn

from tvmnas.dynamic.supernet import BlockShape, DynamicSupernet, SubnetConfig, SupernetSpec, block_shapes


class Block(nn.Module):
    """1x1 expand -> kxk depthwise -> 1x1 project (+ residual): one active supernet block."""

    def __init__(self, shape: BlockShape):
        super().__init__()
        self.residual = shape.residual
        self.expand = nn.Sequential(nn.Conv2d(shape.c_in, shape.mid, 1, bias=False), nn.BatchNorm2d(shape.mid),
                                    nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(shape.mid, shape.mid, shape.kernel, stride=shape.stride, padding=shape.kernel // 2,
                      groups=shape.mid, bias=False),
            nn.BatchNorm2d(shape.mid), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(shape.mid, shape.c_out, 1, bias=False), nn.BatchNorm2d(shape.c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.expand(x)
        x = self.depthwise(x)
        x = self.project(x)
        if self.residual:
            x = x + shortcut
        return x


class SubNetwork(nn.Module):
    """Stem conv3x3-BN-ReLU6 -> blocks -> global average pool -> linear, for one SubnetConfig."""

    def __init__(self, spec: SupernetSpec, config: SubnetConfig):
        super().__init__()
        self.config = config
        self.stem = nn.Sequential(nn.Conv2d(spec.input_shape[0], config.stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(config.stem), nn.ReLU6())
        shapes = block_shapes(spec, config)
        self.blocks = nn.Sequential(*(Block(s) for s in shapes))
        c = shapes[-1].c_out if shapes else config.stem
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.pool(x)
        x = self.flatten(x)
        x = self.fc(x)
        return x


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, c: int) -> None:
    assert src.running_mean is not None and src.running_var is not None
    dst.weight.copy_(src.weight[:c])
    dst.bias.copy_(src.bias[:c])
    dst.running_mean.copy_(src.running_mean[:c])  # type: ignore[union-attr]
    dst.running_var.copy_(src.running_var[:c])  # type: ignore[union-attr]
    dst.eps = src.eps


@torch.no_grad()
def extract_subnet(supernet: DynamicSupernet, config: SubnetConfig) -> SubNetwork:
    """A static copy of sub-network `config`: nested weight slices and the BN statistics that the
    super-network currently holds (recalibrate for `config` first)."""
    spec = supernet.spec
    net = SubNetwork(spec, config).eval()
    net.stem[0].weight.copy_(supernet.stem.sliced(spec.input_shape[0], config.stem, 3))
    _copy_bn(net.stem[1], supernet.stem_bn, config.stem)
    for block, shape in zip(net.blocks, block_shapes(spec, config)):
        src = supernet.blocks[shape.index]
        block.expand[0].weight.copy_(src.expand.sliced(shape.c_in, shape.mid, 1))
        _copy_bn(block.expand[1], src.expand_bn, shape.mid)
        block.depthwise[0].weight.copy_(src.depthwise.sliced(shape.mid, shape.mid, shape.kernel))
        _copy_bn(block.depthwise[1], src.depthwise_bn, shape.mid)
        block.project[0].weight.copy_(src.project.sliced(shape.mid, shape.c_out, 1))
        _copy_bn(block.project[1], src.project_bn, shape.c_out)
    c = net.fc.in_features
    net.fc.weight.copy_(supernet.fc.weight[:, :c])
    net.fc.bias.copy_(supernet.fc.bias)
    return net


class ChannelAffine(nn.Module):
    """x * scale + shift per channel: an inference BatchNorm kept apart from its conv."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


@torch.no_grad()
def bn_as_affine(model: nn.Module) -> nn.Module:
    """`model` (in place, eval mode) with every BatchNorm2d replaced by its ChannelAffine.

    The compiler folds BatchNorm into conv weights; a separate scale/shift keeps the conv
    weights bit-identical to the super-network's so every configuration can share them.
    """
    model.eval()
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            assert child.running_mean is not None and child.running_var is not None
            scale = child.weight / torch.sqrt(child.running_var + child.eps)
            shift = child.bias - child.running_mean * scale
            setattr(model, name, ChannelAffine(scale, shift))
        else:
            bn_as_affine(child)
    return model
