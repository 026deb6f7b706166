"""Discrete networks built from a Genotype (one explicit model file per search space)."""

from __future__ import annotations

from torch import nn

from tvmnas.models.chain_net import ChainNetwork
from tvmnas.models.darts_net import DartsNetwork
from tvmnas.search.genotype import Genotype


def build_model(genotype: Genotype) -> nn.Module:
    """The network `genotype` describes, freshly initialised."""
    if genotype.space == "darts":
        return DartsNetwork(genotype)
    return ChainNetwork(genotype)


__all__ = ["ChainNetwork", "DartsNetwork", "build_model"]
