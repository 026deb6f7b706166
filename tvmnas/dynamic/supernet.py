"""The weight-shared super-network over the chain space: elastic width, depth and kernel size.

A stem conv, then stages of MobileNetV2 blocks (1x1 expand -> kxk depthwise -> 1x1 project,
residual on all but a stage's first block), then average pool and a linear classifier. Every
sub-network reads nested slices of the super-network's tensors: the first c output / input
channels of each conv, the centred k x k window of each depthwise kernel, the first blocks of
each stage. BatchNorm statistics are recalibrated per sub-network (see `recalibrate`).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tvmnas.errors import GenotypeError


@dataclass(frozen=True)
class StageSpec:
    """One stage of the super-network: its largest width and depth, and its first block's stride."""

    width: int
    depth: int
    stride: int


@dataclass(frozen=True)
class SupernetSpec:
    """Macro shape of a super-network and the elastic choices it trains."""

    input_shape: tuple[int, int, int]
    num_classes: int
    stem: int
    stages: tuple[StageSpec, ...]
    width_fractions: tuple[float, ...] = (0.5, 0.75, 1.0)
    kernels: tuple[int, ...] = (3, 5)
    expands: tuple[int, ...] = (3, 6)
    min_depth: int = 1
    channel_multiple: int = 4   # widths are multiples of this, so kernels of one layer share code

    @property
    def max_kernel(self) -> int:
        return max(self.kernels)

    @property
    def blocks(self) -> int:
        """Blocks of the largest network (sum of stage depths)."""
        return sum(s.depth for s in self.stages)

    def widths(self, full: int) -> tuple[int, ...]:
        """The allowed widths of a layer whose largest width is `full` (ascending, unique)."""
        m = self.channel_multiple
        return tuple(sorted({min(full, max(m, -(-int(round(full * f)) // m) * m)) for f in self.width_fractions}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SupernetSpec":
        """Inverse of to_dict; unknown keys are an error."""
        known = {"input_shape", "num_classes", "stem", "stages", "width_fractions", "kernels", "expands", "min_depth",
                 "channel_multiple"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise GenotypeError(f"supernet spec has unknown keys: {', '.join(unknown)}")
        try:
            return cls(
                input_shape=tuple(int(v) for v in d["input_shape"]),  # type: ignore[arg-type]
                num_classes=int(d["num_classes"]),
                stem=int(d["stem"]),
                stages=tuple(StageSpec(int(s["width"]), int(s["depth"]), int(s["stride"])) for s in d["stages"]),
                width_fractions=tuple(float(v) for v in d.get("width_fractions", (0.5, 0.75, 1.0))),
                kernels=tuple(int(v) for v in d.get("kernels", (3, 5))),
                expands=tuple(int(v) for v in d.get("expands", (3, 6))),
                min_depth=int(d.get("min_depth", 1)),
                channel_multiple=int(d.get("channel_multiple", 4)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise GenotypeError(f"malformed supernet spec: {err!r}") from err


def default_spec(input_shape: tuple[int, int, int], num_classes: int) -> SupernetSpec:
    """A super-network sized for the input: small for 8x8 digits, wider for 32x32 images."""
    if input_shape[1] <= 16:
        stages = (StageSpec(16, 2, 1), StageSpec(24, 2, 2))
        return SupernetSpec(tuple(input_shape), num_classes, 16, stages)  # type: ignore[arg-type]
    stages = (StageSpec(16, 1, 1), StageSpec(24, 2, 2), StageSpec(40, 2, 2), StageSpec(48, 2, 2))
    return SupernetSpec(tuple(input_shape), num_classes, 16, stages)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SubnetConfig:
    """One sub-network: stem width, per-stage width and depth, per-block kernel and expand ratio.

    kernels/expands have one entry per block of the largest network; entries of inactive blocks
    (beyond a stage's depth) are ignored and normalised to the smallest choice.
    """

    stem: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SubnetConfig":
        try:
            return cls(int(d["stem"]), tuple(int(v) for v in d["widths"]), tuple(int(v) for v in d["depths"]),
                       tuple(int(v) for v in d["kernels"]), tuple(int(v) for v in d["expands"]))
        except (KeyError, TypeError, ValueError) as err:
            raise GenotypeError(f"malformed sub-network config: {err!r}") from err

    def key(self) -> str:
        """A short stable text naming the sub-network, e.g. 's8-w16.24-d1.2-k35.3-e3.66'."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def __str__(self) -> str:
        return (f"Subnet(stem={self.stem}, widths={list(self.widths)}, depths={list(self.depths)}, "
                f"kernels={list(self.kernels)}, expands={list(self.expands)})")


def validate(spec: SupernetSpec, config: SubnetConfig) -> SubnetConfig:
    """`config` checked against `spec`, inactive block entries normalised; GenotypeError if not allowed."""
    n = len(spec.stages)
    if len(config.widths) != n or len(config.depths) != n:
        raise GenotypeError(f"sub-network needs {n} stage widths and depths, got {len(config.widths)} and {len(config.depths)}")
    if len(config.kernels) != spec.blocks or len(config.expands) != spec.blocks:
        raise GenotypeError(f"sub-network needs {spec.blocks} kernels and expands")
    if config.stem not in spec.widths(spec.stem):
        raise GenotypeError(f"stem width {config.stem} not in {spec.widths(spec.stem)}")
    kernels, expands = list(config.kernels), list(config.expands)
    for s, (stage, w, d) in enumerate(zip(spec.stages, config.widths, config.depths)):
        if w not in spec.widths(stage.width):
            raise GenotypeError(f"stage {s} width {w} not in {spec.widths(stage.width)}")
        if not spec.min_depth <= d <= stage.depth:
            raise GenotypeError(f"stage {s} depth {d} not in {spec.min_depth}..{stage.depth}")
        for j in range(stage.depth):
            b = block_index(spec, s, j)
            if j >= d:
                kernels[b], expands[b] = min(spec.kernels), min(spec.expands)
            elif kernels[b] not in spec.kernels or expands[b] not in spec.expands:
                raise GenotypeError(f"block {b}: kernel {kernels[b]} / expand {expands[b]} not allowed")
    return SubnetConfig(config.stem, tuple(config.widths), tuple(config.depths), tuple(kernels), tuple(expands))


def block_index(spec: SupernetSpec, stage: int, j: int) -> int:
    """Index of block j of `stage` in the flat block list."""
    return sum(s.depth for s in spec.stages[:stage]) + j


def largest(spec: SupernetSpec) -> SubnetConfig:
    """Every choice at its maximum."""
    return SubnetConfig(spec.stem, tuple(s.width for s in spec.stages), tuple(s.depth for s in spec.stages),
                        (max(spec.kernels),) * spec.blocks, (max(spec.expands),) * spec.blocks)


def smallest(spec: SupernetSpec) -> SubnetConfig:
    """Every choice at its minimum."""
    return validate(spec, SubnetConfig(
        min(spec.widths(spec.stem)), tuple(min(spec.widths(s.width)) for s in spec.stages),
        (spec.min_depth,) * len(spec.stages), (min(spec.kernels),) * spec.blocks, (min(spec.expands),) * spec.blocks))


def sample(spec: SupernetSpec, rng: random.Random) -> SubnetConfig:
    """A uniformly random sub-network."""
    return validate(spec, SubnetConfig(
        rng.choice(spec.widths(spec.stem)),
        tuple(rng.choice(spec.widths(s.width)) for s in spec.stages),
        tuple(rng.randint(spec.min_depth, s.depth) for s in spec.stages),
        tuple(rng.choice(spec.kernels) for _ in range(spec.blocks)),
        tuple(rng.choice(spec.expands) for _ in range(spec.blocks))))


@dataclass(frozen=True)
class BlockShape:
    """One active block of a sub-network as plain numbers."""

    index: int
    c_in: int
    mid: int
    c_out: int
    kernel: int
    stride: int
    residual: bool


def block_shapes(spec: SupernetSpec, config: SubnetConfig) -> list[BlockShape]:
    """The active blocks of `config`, in order."""
    shapes, c = [], config.stem
    for s, (stage, w, d) in enumerate(zip(spec.stages, config.widths, config.depths)):
        for j in range(d):
            b = block_index(spec, s, j)
            shapes.append(BlockShape(b, c, c * config.expands[b], w, config.kernels[b],
                                     stage.stride if j == 0 else 1, j > 0))
            c = w
    return shapes


# --------------------------------------------------------------------------- elastic layers


class ElasticConv(nn.Module):
    """A conv whose sub-networks use weight[:c_out, :c_in] and the centred k x k window."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups_depthwise: bool = False):
        super().__init__()
        self.depthwise = groups_depthwise
        self.weight = nn.Parameter(torch.empty(c_out, 1 if groups_depthwise else c_in, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def sliced(self, c_in: int, c_out: int, kernel: int) -> torch.Tensor:
        """The sub-network's weight: a nested slice of the shared tensor."""
        k = self.weight.shape[-1]
        o = (k - kernel) // 2
        return self.weight[:c_out, : (1 if self.depthwise else c_in), o:o + kernel, o:o + kernel]

    def forward(self, x: torch.Tensor, c_out: int, kernel: int, stride: int = 1) -> torch.Tensor:
        w = self.sliced(x.shape[1], c_out, kernel)
        return F.conv2d(x, w, stride=stride, padding=kernel // 2, groups=x.shape[1] if self.depthwise else 1)


class ElasticBN(nn.BatchNorm2d):
    """BatchNorm over the first c channels (affine parameters shared, statistics recalibrated)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        c = x.shape[1]
        assert self.running_mean is not None and self.running_var is not None
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training or not self.track_running_stats, self.momentum or 0.0, self.eps)


class ElasticBlock(nn.Module):
    """Inverted residual block with elastic mid width, kernel size and output width."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int):
        super().__init__()
        mid = c_in * expand
        self.expand = ElasticConv(c_in, mid, 1)
        self.expand_bn = ElasticBN(mid)
        self.depthwise = ElasticConv(mid, mid, kernel, groups_depthwise=True)
        self.depthwise_bn = ElasticBN(mid)
        self.project = ElasticConv(mid, c_out, 1)
        self.project_bn = ElasticBN(c_out)

    def forward(self, x: torch.Tensor, shape: BlockShape) -> torch.Tensor:
        shortcut = x
        x = F.relu6(self.expand_bn(self.expand(x, shape.mid, 1)))
        x = F.relu6(self.depthwise_bn(self.depthwise(x, shape.mid, shape.kernel, shape.stride)))
        x = self.project_bn(self.project(x, shape.c_out, 1))
        if shape.residual:
            x = x + shortcut
        return x


class DynamicSupernet(nn.Module):
    """The super-network; `forward(x, config)` runs one sub-network on the shared weights."""

    def __init__(self, spec: SupernetSpec):
        super().__init__()
        self.spec = spec
        c_in = spec.input_shape[0]
        self.stem = ElasticConv(c_in, spec.stem, 3)
        self.stem_bn = ElasticBN(spec.stem)
        blocks, c = [], spec.stem
        for stage in spec.stages:
            for _ in range(stage.depth):
                blocks.append(ElasticBlock(c, stage.width, max(spec.expands), spec.max_kernel))
                c = stage.width
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(c, spec.num_classes)

    def forward(self, x: torch.Tensor, config: SubnetConfig) -> torch.Tensor:
        x = F.relu6(self.stem_bn(self.stem(x, config.stem, 3)))
        for shape in block_shapes(self.spec, config):
            x = self.blocks[shape.index](x, shape)
        x = x.mean((2, 3))
        c = x.shape[1]
        return F.linear(x, self.fc.weight[:, :c], self.fc.bias)

    def shared_tensors(self) -> dict[str, np.ndarray]:
        """Every weight a sub-network reads, by its parameter name (the compiler shares these)."""
        return {name: p.detach().cpu().numpy().copy() for name, p in self.named_parameters()
                if not name.endswith("_bn.weight") and not name.endswith("_bn.bias")}
