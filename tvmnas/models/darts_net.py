"""The discrete DARTS network a 'darts' genotype describes: stem, cells, classifier."""

from __future__ import annotations

import torch
from torch import nn

from tvmnas.search.genotype import CellGenotype, Genotype
from tvmnas.search.ops import OPS, Classifier, ConvBN, FactorizedReduce, ReLUConvBN


class DartsCell(nn.Module):
    """Preprocess both inputs, compute each node as the sum of its two chosen edges, concat the nodes."""

    def __init__(self, cell: CellGenotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.sources = [edge.source for edge in cell.edges]
        self.concat = list(cell.concat)
        self.edges = nn.ModuleList(
            OPS[edge.op](c, 2 if reduction and edge.source < 2 else 1, True, False) for edge in cell.edges
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.edges) // 2):
            a, b = 2 * node, 2 * node + 1
            left = self.edges[a](states[self.sources[a]])
            right = self.edges[b](states[self.sources[b]])
            states.append(left + right)
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsNetwork(nn.Module):
    """Stem conv -> cells (reduction cells double channels and halve H, W) -> pool -> linear."""

    def __init__(self, genotype: Genotype):
        super().__init__()
        assert genotype.space == "darts" and genotype.normal is not None and genotype.reduce is not None
        c_in = genotype.input_shape[0]
        c_stem = genotype.stem_multiplier * genotype.channels
        self.stem = ConvBN(c_in, c_stem, 3)
        c_pp, c_p, c = c_stem, c_stem, genotype.channels
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(genotype.cells):
            reduction = i in genotype.reduction_cells
            if reduction:
                c *= 2
            cell = genotype.reduce if reduction else genotype.normal
            self.cells.append(DartsCell(cell, c_pp, c_p, c, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, len(cell.concat) * c
        self.classifier = Classifier(c_p, genotype.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(s1)
