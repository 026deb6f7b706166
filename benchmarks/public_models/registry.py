"""The public-architecture zoo: each entry builds a network with seeded weights and calibrated
BatchNorm statistics, and gives a seeded input of its fixed shape. Nothing is downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tvmnas.model_file import sample_input
from zoo import randomize_normalization, seeded_build


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
        return seeded_build(self.factory, seed, lambda model: randomize_normalization(model, self.input_shape))

    def sample_input(self, seed: int = 0) -> torch.Tensor:
        """A seeded standard-normal float32 input, independent of the global RNG."""
        return sample_input(self.input_shape, seed)
