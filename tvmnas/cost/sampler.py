"""Candidate operators of the search spaces over MCU-sized shapes, sampled deterministically from a seed.

Each sample is an OpSpec: an op type (a key of OP_BUILDERS) plus shape parameters. `OpSpec.build`
returns a small eval-mode torch module that compiles alone as a single-op network, so the kernels it
lowers to can be timed in isolation. The op types are data: a new candidate is one line in OP_TYPES
and one in OP_BUILDERS (and its parameter choices in OP_CHOICES).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tvmnas.search.cost import count_module
from tvmnas.search.ops import OPS, InvertedResidual

RESOLUTIONS: tuple[int, ...] = (4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)
CHANNELS: tuple[int, ...] = (4, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 256)
STRIDES: tuple[int, ...] = (1, 2)

OP_TYPES: list[str] = [
    "conv",
    "depthwise",
    "pointwise",
    "inverted_residual",
    "sep_conv",
    "dil_conv",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "linear",
    "add",
    "concat",
]

# op type -> {parameter: choices}; parameters not listed keep their OpSpec default.
OP_CHOICES: dict[str, dict[str, tuple[int, ...]]] = {
    "conv": {"kernel": (1, 3, 5, 7), "stride": STRIDES},
    "depthwise": {"kernel": (3, 5, 7), "stride": STRIDES},
    "pointwise": {},
    "inverted_residual": {"kernel": (3, 5, 7), "expand": (1, 3, 6), "stride": STRIDES},
    "sep_conv": {"kernel": (3, 5), "stride": STRIDES},
    "dil_conv": {"kernel": (3, 5), "stride": STRIDES},
    "max_pool": {"kernel": (3,), "stride": STRIDES},
    "avg_pool": {"kernel": (3,), "stride": STRIDES},
    "global_avg_pool": {},
    "linear": {},
    "add": {},
    "concat": {},
}

# Op types whose output channels equal their input channels.
SAME_CHANNELS = frozenset({"depthwise", "sep_conv", "dil_conv", "max_pool", "avg_pool", "global_avg_pool", "add"})


@dataclass(frozen=True)
class OpSpec:
    """One candidate operator at one shape: NCHW input (1, c_in, resolution, resolution).

    For `linear` the input is (1, c_in) and `resolution` is 1; for `concat` c_out is the total.
    """

    op: str
    resolution: int
    c_in: int
    c_out: int
    kernel: int = 1
    stride: int = 1
    expand: int = 1
    dilation: int = 1

    @property
    def key(self) -> str:
        """Stable text key, e.g. 'conv k3 s2 e1 d1 r16 c8->16'."""
        return (
            f"{self.op} k{self.kernel} s{self.stride} e{self.expand} d{self.dilation} "
            f"r{self.resolution} c{self.c_in}->{self.c_out}"
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape the single-op network takes."""
        if self.op == "linear":
            return (1, self.c_in)
        return (1, self.c_in, self.resolution, self.resolution)

    @property
    def out_resolution(self) -> int:
        if self.op == "global_avg_pool":
            return 1
        return -(-self.resolution // self.stride)

    def params_json(self) -> str:
        """The parameters as sorted compact JSON (what the profile database stores)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> "OpSpec":
        """Inverse of params_json."""
        return OpSpec(**json.loads(text))

    def build(self, seed: int = 0) -> nn.Module:
        """The op as an eval-mode module with weights drawn from `seed` (global RNG left untouched)."""
        if self.op not in OP_BUILDERS:
            raise KeyError(f"unknown candidate op '{self.op}' (known: {', '.join(OP_TYPES)})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = OP_BUILDERS[self.op](self)
            for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
                with torch.no_grad():
                    bn.running_mean.normal_(0.0, 0.1)
                    bn.running_var.uniform_(0.5, 1.5)
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module

    def activation_bytes(self) -> int:
        """Float32 bytes of the input plus the output (and the widest inner tensor of a block)."""
        r, ro = self.resolution, self.out_resolution
        inner = self.c_in * self.expand * r * r if self.op == "inverted_residual" else 0
        return 4 * (self.c_in * r * r + self.c_out * ro * ro + inner)


def _conv_bn_act(c_in: int, c_out: int, kernel: int, stride: int, groups: int, act: nn.Module | None) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


class AddConstant(nn.Module):
    """x + y with y a stored tensor of x's shape: the element-wise add of a residual join."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.other = nn.Parameter(torch.randn(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.other


class ConcatConstant(nn.Module):
    """cat([x, y], channels) with y a stored tensor: the channel concat that joins branches."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.other = nn.Parameter(torch.randn(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.other], dim=1)


OP_BUILDERS: dict[str, Callable[[OpSpec], nn.Module]] = {
    "conv": lambda s: _conv_bn_act(s.c_in, s.c_out, s.kernel, s.stride, 1, nn.ReLU()),
    "depthwise": lambda s: _conv_bn_act(s.c_in, s.c_in, s.kernel, s.stride, s.c_in, nn.ReLU6()),
    "pointwise": lambda s: _conv_bn_act(s.c_in, s.c_out, 1, 1, 1, None),
    "inverted_residual": lambda s: InvertedResidual(s.c_in, s.c_out, s.stride, s.kernel, s.expand),
    "sep_conv": lambda s: OPS[f"sep_conv_{s.kernel}x{s.kernel}"](s.c_in, s.stride, True, False),
    "dil_conv": lambda s: OPS[f"dil_conv_{s.kernel}x{s.kernel}"](s.c_in, s.stride, True, False),
    "max_pool": lambda s: OPS["max_pool_3x3"](s.c_in, s.stride, True, False),
    "avg_pool": lambda s: OPS["avg_pool_3x3"](s.c_in, s.stride, True, False),
    "global_avg_pool": lambda s: nn.AdaptiveAvgPool2d(1),
    "linear": lambda s: nn.Linear(s.c_in, s.c_out),
    "add": lambda s: AddConstant((1, s.c_in, s.resolution, s.resolution)),
    "concat": lambda s: ConcatConstant((1, s.c_out - s.c_in, s.resolution, s.resolution)),
}


def spec_macs(spec: OpSpec) -> int:
    """Multiply-accumulates of the op: search.cost.count_module on the op built (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        return count_module(OP_BUILDERS[spec.op](spec), spec.input_shape[1:]).macs


def _draw(op: str, rng: random.Random) -> OpSpec:
    params = {name: rng.choice(choices) for name, choices in OP_CHOICES[op].items()}
    c_in = rng.choice(CHANNELS)
    if op == "linear":
        return OpSpec(op, 1, c_in, rng.choice(CHANNELS))
    resolution = rng.choice(RESOLUTIONS)
    if op in SAME_CHANNELS:
        c_out = c_in
    elif op == "concat":
        c_out = c_in + rng.choice(CHANNELS)
    else:
        c_out = rng.choice(CHANNELS)
    dilation = 2 if op == "dil_conv" else 1
    return OpSpec(op, resolution, c_in, c_out, dilation=dilation, **params)


def sample_ops(
    count: int,
    seed: int = 0,
    *,
    ops: list[str] | None = None,
    max_macs: int = 2_000_000,
    max_activation_bytes: int = 256 * 1024,
    max_weight_count: int = 64 * 1024,
) -> list[OpSpec]:
    """`count` distinct candidates, the same for the same arguments, cycling through `ops` in order.

    Shapes are drawn uniformly from RESOLUTIONS x CHANNELS x strides and redrawn while they exceed
    the caps (MACs, float32 activation bytes, weight count), so every sample fits an MCU's memory
    and times in well under a second on the emulator. Duplicates (same key) are redrawn.
    """
    ops = list(OP_TYPES if ops is None else ops)
    unknown = [op for op in ops if op not in OP_BUILDERS]
    if unknown:
        raise KeyError(f"unknown candidate op '{unknown[0]}' (known: {', '.join(OP_TYPES)})")
    rng = random.Random(seed)
    seen: set[str] = set()
    specs: list[OpSpec] = []
    attempts = 0
    while len(specs) < count:
        op = ops[len(specs) % len(ops)]
        spec = _draw(op, rng)
        attempts += 1
        if attempts > 1000 * max(count, 1):
            raise ValueError(f"cannot draw {count} distinct candidates under the caps (got {len(specs)})")
        if spec.key in seen or spec.activation_bytes() > max_activation_bytes or weight_count(spec) > max_weight_count:
            continue
        if spec_macs(spec) > max_macs:  # last: the only check that builds the op
            continue
        seen.add(spec.key)
        specs.append(spec)
    return specs


def weight_count(spec: OpSpec) -> int:
    """Number of stored float parameters of the candidate (flash it needs / 4)."""
    k2 = spec.kernel * spec.kernel
    if spec.op == "conv":
        return spec.c_out * spec.c_in * k2
    if spec.op == "pointwise":
        return spec.c_out * spec.c_in
    if spec.op == "linear":
        return spec.c_out * spec.c_in
    if spec.op == "inverted_residual":
        mid = spec.c_in * spec.expand
        return (mid * spec.c_in if spec.expand != 1 else 0) + mid * k2 + spec.c_out * mid
    if spec.op in ("sep_conv", "dil_conv"):
        return (2 if spec.op == "sep_conv" else 1) * (spec.c_in * k2 + spec.c_in * spec.c_in)
    if spec.op == "add":
        return spec.c_in * spec.resolution ** 2
    if spec.op == "concat":
        return (spec.c_out - spec.c_in) * spec.resolution ** 2
    return spec.c_in
