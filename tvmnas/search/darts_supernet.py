"""The DARTS cell supernet: every cell edge is a MixedOp over PRIMITIVES, weighted by the shared
alpha of its cell kind (normal / reduce); optional PC-DARTS partial-channel sampling."""

from __future__ import annotations

import torch
from torch import nn

from tvmnas.search.cost import CostSlot
from tvmnas.search.genotype import CellEdge, CellGenotype, Genotype
from tvmnas.search.layer_spec import LayerSpec
from tvmnas.search.ops import OPS, PRIMITIVES, ConvBN, Classifier, FactorizedReduce, ReLUConvBN
from tvmnas.search.sampling import mixing_weights


def reduction_cells(cells: int) -> tuple[int, ...]:
    """Indices of reduction cells: at 1/3 and 2/3 of the depth, as in DARTS."""
    return tuple(sorted({cells // 3, 2 * cells // 3})) if cells >= 2 else ()


def darts_op_kernel(name: str) -> tuple[int, int]:
    """(kernel, dilation) of a DARTS op name, as cost-model features."""
    if name.startswith(("sep_conv", "dil_conv", "max_pool", "avg_pool")):
        kernel = int(name.rsplit("_", 1)[1].split("x")[0])
        return kernel, 2 if name.startswith("dil_conv") else 1
    return 1, 1


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channel groups (PC-DARTS): the sampled part moves each step."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MixedOp(nn.Module):
    """Weighted sum of all candidate ops on one edge; with partial_channels=k only C/k channels pass
    through the ops and the rest bypass them (PC-DARTS)."""

    def __init__(self, channels: int, stride: int, partial_channels: int = 1):
        super().__init__()
        self.partial_channels = partial_channels
        self.stride = stride
        c = channels // partial_channels
        self.ops = nn.ModuleList(OPS[name](c, stride, False, True) for name in PRIMITIVES)
        self.bypass_pool = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        k = self.partial_channels
        if k == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops))
        c = x.shape[1] // k
        sampled, bypass = x[:, :c], x[:, c:]
        mixed = sum(w * op(sampled) for w, op in zip(weights, self.ops))
        out = torch.cat([mixed, self.bypass_pool(bypass)], dim=1)
        return channel_shuffle(out, k)


class SearchCell(nn.Module):
    """A DARTS cell: two preprocessed inputs, `nodes` intermediate nodes, each fed by every earlier state."""

    def __init__(self, nodes: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 partial_channels: int):
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList()
        for i in range(nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(c, stride, partial_channels))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.nodes):
            node = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class DartsSupernet(nn.Module):
    """Stem -> cells (reductions at 1/3, 2/3) -> classifier; alphas 'normal' and 'reduce'."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, *, channels: int = 8, cells: int = 3,
                 nodes: int = 4, stem_multiplier: int = 3, partial_channels: int = 1, gumbel: bool = False,
                 tau: float = 1.0):
        super().__init__()
        if channels % (2 * partial_channels) != 0:
            raise ValueError(f"channels {channels} must be a multiple of 2 x partial_channels ({partial_channels})")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.channels = channels
        self.cells_count = cells
        self.nodes = nodes
        self.stem_multiplier = stem_multiplier
        self.reductions = reduction_cells(cells)
        self.gumbel = gumbel
        self.tau = tau
        c_in, h, w = input_shape
        c_stem = stem_multiplier * channels
        self.stem = ConvBN(c_in, c_stem, 3)
        self._slots: list[CostSlot] = [CostSlot((LayerSpec("conv_bn", c_in, c_stem, h, w, 1, kernel=3),))]
        c_pp, c_p, c = c_stem, c_stem, channels
        hw_pp, hw_p = (h, w), (h, w)
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(cells):
            reduction = i in self.reductions
            if reduction:
                c *= 2
            self.cells.append(SearchCell(nodes, c_pp, c_p, c, reduction, reduction_prev, partial_channels))
            self._slots += self._cell_slots(c_pp, c_p, c, hw_pp, hw_p, reduction, reduction_prev)
            hw_out = (-(-hw_p[0] // 2), -(-hw_p[1] // 2)) if reduction else hw_p
            reduction_prev = reduction
            c_pp, c_p = c_p, nodes * c
            hw_pp, hw_p = hw_p, hw_out
        self.classifier = Classifier(c_p, num_classes)
        self._slots.append(CostSlot((LayerSpec("classifier", c_p, num_classes, *hw_p),)))
        n_edges = sum(2 + i for i in range(nodes))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(n_edges, len(PRIMITIVES)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, len(PRIMITIVES)))

    def _cell_slots(self, c_pp: int, c_p: int, c: int, hw_pp: tuple[int, int], hw_p: tuple[int, int],
                    reduction: bool, reduction_prev: bool) -> list[CostSlot]:
        if reduction_prev:
            pre0 = LayerSpec("factorized_reduce", c_pp, c, *hw_pp, stride=2)
        else:
            pre0 = LayerSpec("relu_conv_bn", c_pp, c, *hw_pp)
        slots = [CostSlot((pre0,)), CostSlot((LayerSpec("relu_conv_bn", c_p, c, *hw_p),))]
        hw_node = (-(-hw_p[0] // 2), -(-hw_p[1] // 2)) if reduction else hw_p
        row = 0
        for i in range(self.nodes):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                hw = hw_p if j < 2 else hw_node
                specs = tuple(
                    LayerSpec(name, c, c, *hw, stride=stride, kernel=darts_op_kernel(name)[0],
                              dilation=darts_op_kernel(name)[1])
                    for name in PRIMITIVES
                )
                slots.append(CostSlot(specs, "reduce" if reduction else "normal", row))
                row += 1
        return slots

    def arch_parameters(self) -> dict[str, nn.Parameter]:
        """The architecture parameters by name."""
        return {"normal": self.alpha_normal, "reduce": self.alpha_reduce}

    def arch_logits(self) -> dict[str, torch.Tensor]:
        """Logits whose softmax is each slot's candidate distribution."""
        return dict(self.arch_parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the alphas."""
        return [p for n, p in self.named_parameters() if not n.startswith("alpha_")]

    def cost_slots(self) -> list[CostSlot]:
        """The network as cost slots, in execution order."""
        return list(self._slots)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_normal = mixing_weights(self.alpha_normal, gumbel=self.gumbel, tau=self.tau, training=self.training)
        w_reduce = mixing_weights(self.alpha_reduce, gumbel=self.gumbel, tau=self.tau, training=self.training)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return self.classifier(s1)

    def derive(self) -> tuple[Genotype, dict[str, dict[int, int]]]:
        """The DARTS rule: per node keep the two inputs with the strongest non-'none' op.

        Returns the genotype and the chosen candidate per alpha row (for the exact cost).
        """
        cells: dict[str, CellGenotype] = {}
        choices: dict[str, dict[int, int]] = {}
        none = PRIMITIVES.index("none")
        for kind, alpha in self.arch_parameters().items():
            probs = torch.softmax(alpha.detach(), dim=-1)
            edges: list[CellEdge] = []
            chosen: dict[int, int] = {}
            start = 0
            for i in range(self.nodes):
                n_in = 2 + i
                rows = range(start, start + n_in)
                best = {r: max((k for k in range(len(PRIMITIVES)) if k != none), key=lambda k: float(probs[r, k]))
                        for r in rows}
                top = sorted(rows, key=lambda r: -float(probs[r, best[r]]))[:2]
                for r in sorted(top):
                    edges.append(CellEdge(PRIMITIVES[best[r]], r - start))
                    chosen[r] = best[r]
                start += n_in
            cells[kind] = CellGenotype(tuple(edges), tuple(range(2, 2 + self.nodes)))
            choices[kind] = chosen
        genotype = Genotype(
            space="darts",
            input_shape=self.input_shape,  # type: ignore[arg-type]
            num_classes=self.num_classes,
            channels=self.channels,
            cells=self.cells_count,
            stem_multiplier=self.stem_multiplier,
            reduction_cells=self.reductions,
            normal=cells["normal"],
            reduce=cells["reduce"],
        )
        return genotype, choices
