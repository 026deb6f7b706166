"""The discrete chain network a 'chain' genotype describes: stem, inverted-residual layers, head."""

from __future__ import annotations

import torch
from torch import nn

from tvmnas.search.genotype import Genotype
from tvmnas.search.ops import CHAIN_OPS, Classifier, ConvBN


class ChainNetwork(nn.Module):
    """Stem conv3x3-BN-ReLU6 -> chosen layers ('skip' layers are identities) -> [1x1 head] -> classifier."""

    def __init__(self, genotype: Genotype):
        super().__init__()
        assert genotype.space == "chain"
        c = genotype.channels
        self.stem = ConvBN(genotype.input_shape[0], c, 3, act=True)
        blocks = []
        for layer in genotype.layers:
            blocks.append(CHAIN_OPS[layer.op](c, layer.out_channels, layer.stride))
            c = layer.out_channels
        self.blocks = nn.Sequential(*blocks)
        if genotype.head_channels:
            self.head: nn.Module = ConvBN(c, genotype.head_channels, 1, act=True)
            c = genotype.head_channels
        else:
            self.head = nn.Identity()
        self.classifier = Classifier(c, genotype.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.head(x)
        x = self.classifier(x)
        return x
