"""The test zoo: small fixed-shape PyTorch networks that exercise every operator the MCU path supports.

Each entry builds an eval-mode network with deterministic weights from a seed, so compiler passes,
the C emitter and the cost model can be checked against PyTorch and onnxruntime on the same models.
BatchNorm running statistics are calibrated on seeded random data and the affine parameters are
drawn from the seed, so BatchNorm folding is really exercised. Entries flagged `m0_sized` fit a
Cortex-M0 with 16 KB SRAM (at most 4K float weights, activations well under 8 KB).

The zoo is not part of the installed package: tests (pytest's `pythonpath`) and benchmarks
(benchmarks/common.py) import it from the repository root. Writing a network as .onnx or .pt2 is
tvmnas.model_file's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tvmnas.errors import ModelLoadError
from tvmnas.model_file import sample_input
from zoo import networks as nets

Shape = tuple[int, int, int, int]

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


def randomize_normalization(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """BatchNorm statistics from one seeded training-mode batch, then non-trivial affine parameters
    for BatchNorm and LayerNorm.

    Calibrated statistics keep activations at a sane scale through deep stacks, and the random
    scale/shift make a folding or normalisation bug visible in the outputs.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics exactly
    if bns:
        model.train()
        with torch.no_grad():
            model(torch.randn((_CALIBRATION_BATCH, *input_shape[1:])))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.1
                m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))


def seeded_build(factory: Callable[[], nn.Module], seed: int, prepare: Callable[[nn.Module], None]) -> nn.Module:
    """`factory()` and `prepare` (drawing its weights) under torch.manual_seed(seed), in eval mode with
    gradients off; the global torch RNG state is left as it was. The public-architecture zoo
    (benchmarks/public_models) builds its networks with it too."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
        prepare(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass(frozen=True)
class ZooEntry:
    """One zoo network: how to build it, its fixed input shape and whether it fits a Cortex-M0."""

    name: str
    factory: Callable[[], nn.Module]
    input_shape: Shape
    m0_sized: bool
    description: str

    def build(self, seed: int = 0) -> nn.Module:
        """The network in eval mode with weights and BN statistics drawn from `seed` (see seeded_build)."""
        return seeded_build(self.factory, seed, self._draw_weights)

    def _draw_weights(self, model: nn.Module) -> None:
        _init_weights(model)
        randomize_normalization(model, self.input_shape)

    def sample_input(self, seed: int = 0) -> torch.Tensor:
        """A seeded standard-normal input of this entry's shape."""
        return sample_input(self.input_shape, seed)


def _entry(name: str, factory: Callable[[], nn.Module], shape: Shape, m0: bool = False) -> ZooEntry:
    doc = (factory.__doc__ or "").strip().splitlines()[0]
    return ZooEntry(name=name, factory=factory, input_shape=shape, m0_sized=m0, description=doc)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        _entry("resnet8", nets.ResNet8, (1, 3, 32, 32)),
        _entry("mobilenetv2_tiny", nets.mobilenetv2_tiny, (1, 3, 32, 32)),
        _entry("darts_cells", nets.darts_cells, (1, 3, 32, 32)),
        _entry("lenet5", nets.LeNet5, (1, 1, 32, 32)),
        _entry("resnet_stem7", nets.ResNetStem7, (1, 3, 64, 64)),
        _entry("resnext_tiny", nets.ResNeXtTiny, (1, 3, 32, 32)),
        _entry("dilated_context", nets.DilatedContext, (1, 3, 32, 32)),
        _entry("inception_tiny", nets.InceptionTiny, (1, 3, 32, 32)),
        _entry("mobilenetv3_tiny", nets.MobileNetV3Tiny, (1, 3, 32, 32)),
        _entry("shufflenet_tiny", nets.ShuffleNetTiny, (1, 3, 32, 32)),
        _entry("m0_mlp", nets.M0Mlp, (1, 1, 8, 8), m0=True),
        _entry("m0_cnn", nets.M0Cnn, (1, 1, 8, 8), m0=True),
        _entry("m0_dwsep", nets.M0DwSep, (1, 1, 8, 8), m0=True),
        _entry("m0_resnet", nets.M0ResNet, (1, 1, 8, 8), m0=True),
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
