"""The public-architecture zoo: each entry builds a network with seeded weights and calibrated
BatchNorm statistics, and gives a seeded input of its fixed shape. Nothing is downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

_CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class PublicModel:
    """One public architecture: its family, how to build it, its input shape, and, where a route is
    known to be unsupported today, why (the benchmark still runs it and reports what happens)."""

    name: str
    family: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    expected_failure: str = ""

    @property
    def description(self) -> str:
        return (self.factory.__doc__ or "").strip().splitlines()[0]

    def build(self, seed: int = 0) -> nn.Module:
        """The network in eval mode, weights drawn from `seed`; the global RNG state is left as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self.factory()
            _randomize_normalization(model, self.input_shape)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def sample_input(self, seed: int = 0) -> torch.Tensor:
        """A seeded standard-normal float32 input, independent of the global RNG."""
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(self.input_shape, generator=gen, dtype=torch.float32)


def _randomize_normalization(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """BatchNorm statistics from one seeded training-mode batch, then non-trivial affine parameters
    for BatchNorm and LayerNorm, so a folding or normalisation bug shows in the outputs."""
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
