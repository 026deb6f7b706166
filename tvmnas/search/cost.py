"""The differentiable hardware-cost term of the search loss.

A CostModel prices one LayerSpec as tensors (cycles, parameter bytes, activation bytes). The
search sees the network as CostSlots: fixed layers with one spec, and searched choices whose
candidates are weighted by softmax(alpha) of one row of an architecture parameter. The expected
cost, normalised by the cost of the largest candidate everywhere, enters the loss with the user's
weights; budgets enter as hinge penalties. The same slots give the exact cost of a derived
discrete architecture, which is what budgets are checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from tvmnas.search.layer_spec import LayerSpec
from tvmnas.search.ops import build_layer


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer: cycles (or their proxy), parameter bytes, activation working-set bytes."""

    cycles: torch.Tensor
    param_bytes: torch.Tensor
    act_bytes: torch.Tensor


@runtime_checkable
class CostModel(Protocol):
    """Anything that prices a LayerSpec; `unit` says what `cycles` means (e.g. 'MAC proxy')."""

    name: str
    unit: str

    def layer_cost(self, spec: LayerSpec) -> LayerCost:
        """Cost tensors (0-d float32) for one layer; may carry gradients of the model's own parameters."""
        ...


@dataclass(frozen=True)
class LayerCount:
    """Exact counts for one module on one input shape."""

    macs: int
    params: int
    act_elems: int


def count_module(module: nn.Module, input_shape: tuple[int, ...]) -> LayerCount:
    """Count MACs, parameters after BN folding, and the working set (input + largest leaf output)
    of `module` on one input of `input_shape` (no batch dimension).

    MACs follow the project's one convention (passes.kernel_macs counts lowered kernels the same
    way): Conv2d Cout*Hout*Wout*Cin/groups*k*k, Linear in*out per row; pooling counts zero.
    """
    macs = 0
    params = 0
    largest = 0

    def hook(mod: nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs, params, largest
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            macs += out.numel() * (mod.in_channels // mod.groups) * k
            params += mod.weight.numel() + mod.out_channels  # bias after folding BN
        elif isinstance(mod, nn.Linear):
            macs += out.numel() // mod.out_features * mod.in_features * mod.out_features
            params += mod.weight.numel() + mod.out_features
        if isinstance(out, torch.Tensor) and not list(mod.children()):
            largest = max(largest, out.numel())

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(1, *input_shape)
            module(x)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    in_elems = 1
    for d in input_shape:
        in_elems *= d
    return LayerCount(macs=macs, params=params, act_elems=in_elems + largest)


class MacCostModel:
    """Cycles approximated as cycles_per_mac x MACs: the MAC-count proxy, no target measurement."""

    name = "mac"
    unit = "MAC proxy"

    def __init__(self, *, cycles_per_mac: float = 1.0, bytes_per_param: int = 4, bytes_per_activation: int = 4):
        self.cycles_per_mac = cycles_per_mac
        self.bytes_per_param = bytes_per_param
        self.bytes_per_activation = bytes_per_activation
        self._cache: dict[LayerSpec, LayerCount] = {}

    def count(self, spec: LayerSpec) -> LayerCount:
        """Exact integer counts of the layer a spec describes (cached)."""
        if spec not in self._cache:
            self._cache[spec] = count_module(build_layer(spec), (spec.c_in, spec.h, spec.w))
        return self._cache[spec]

    def layer_cost(self, spec: LayerSpec) -> LayerCost:
        """MAC-proxy cycles, parameter bytes and activation bytes as 0-d tensors."""
        c = self.count(spec)
        return LayerCost(
            cycles=torch.tensor(float(c.macs) * self.cycles_per_mac),
            param_bytes=torch.tensor(float(c.params * self.bytes_per_param)),
            act_bytes=torch.tensor(float(c.act_elems * self.bytes_per_activation)),
        )


@dataclass(frozen=True)
class CostSlot:
    """A fixed layer (alpha is None, one candidate) or one row of architecture parameter `alpha`."""

    candidates: tuple[LayerSpec, ...]
    alpha: str | None = None
    row: int = 0


@dataclass(frozen=True)
class CostWeights:
    """User weights of the three cost components inside the normalised cost."""

    cycles: float = 1.0
    param_bytes: float = 0.0
    sram_bytes: float = 0.0


@dataclass(frozen=True)
class Budgets:
    """Hard limits; None means unlimited. flash = parameter bytes, sram = peak activation bytes."""

    cycles: float | None = None
    flash_bytes: float | None = None
    sram_bytes: float | None = None


@dataclass(frozen=True)
class CostFigures:
    """Totals of one architecture (expected or exact): cycles, parameter bytes, peak activation bytes."""

    cycles: float
    param_bytes: float
    peak_act_bytes: float

    def violations(self, budgets: Budgets, unit: str) -> list[str]:
        """One line per exceeded budget, naming value and limit."""
        out = []
        if budgets.cycles is not None and self.cycles > budgets.cycles:
            out.append(f"cycles ({unit}) {self.cycles:,.0f} > budget {budgets.cycles:,.0f}")
        if budgets.flash_bytes is not None and self.param_bytes > budgets.flash_bytes:
            out.append(f"flash (parameter bytes) {self.param_bytes:,.0f} > budget {budgets.flash_bytes:,.0f}")
        if budgets.sram_bytes is not None and self.peak_act_bytes > budgets.sram_bytes:
            out.append(f"SRAM (peak activation bytes) {self.peak_act_bytes:,.0f} > budget {budgets.sram_bytes:,.0f}")
        return out


class CostTerm:
    """Prices a supernet's slots once with a CostModel, then gives the expected cost of any alphas."""

    def __init__(self, slots: list[CostSlot], cost_model: CostModel, *, weights: CostWeights = CostWeights(),
                 budgets: Budgets = Budgets(), budget_weight: float = 10.0, device: torch.device | str = "cpu"):
        self.slots = slots
        self.cost_model = cost_model
        self.weights = weights
        self.budgets = budgets
        self.budget_weight = budget_weight
        self.device = torch.device(device)
        # per slot: [n_candidates] tensors of each component. Candidate shapes are fixed, so the table
        # is a constant for the architecture step: no graph back into a learned cost model is kept.
        self._table: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        price = getattr(cost_model, "price", None)  # a measured model prices every candidate in one batch
        if callable(price):
            price([spec for slot in slots for spec in slot.candidates])
        for slot in slots:
            with torch.no_grad():
                costs = [cost_model.layer_cost(spec) for spec in slot.candidates]
            self._table.append((
                torch.stack([c.cycles.reshape(()) for c in costs]).float().to(self.device),
                torch.stack([c.param_bytes.reshape(()) for c in costs]).float().to(self.device),
                torch.stack([c.act_bytes.reshape(()) for c in costs]).float().to(self.device),
            ))
        ref = self._totals([(t[0].max(), t[1].max(), t[2].max()) for t in self._table])
        self.reference = CostFigures(*(float(v) for v in ref))

    @staticmethod
    def _totals(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
        cycles = torch.stack([p[0] for p in parts]).sum()
        params = torch.stack([p[1] for p in parts]).sum()
        peak = torch.stack([p[2] for p in parts]).max()
        return cycles, params, peak

    def expected(self, alphas: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expected (cycles, param bytes, peak act bytes) under softmax(alpha): differentiable in alphas."""
        probs = {name: torch.softmax(a, dim=-1) for name, a in alphas.items()}
        parts = []
        for slot, (cyc, par, act) in zip(self.slots, self._table):
            if slot.alpha is None:
                parts.append((cyc[0], par[0], act[0]))
            else:
                p = probs[slot.alpha][slot.row]
                parts.append(((p * cyc).sum(), (p * par).sum(), (p * act).sum()))
        return self._totals(parts)

    def loss(self, alphas: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised weighted cost in [0, 1], budget hinge penalty) for the current alphas."""
        cycles, params, peak = self.expected(alphas)
        ref = self.reference
        w = self.weights
        total_w = max(w.cycles + w.param_bytes + w.sram_bytes, 1e-12)
        norm = (w.cycles * cycles / max(ref.cycles, 1.0) + w.param_bytes * params / max(ref.param_bytes, 1.0)
                + w.sram_bytes * peak / max(ref.peak_act_bytes, 1.0)) / total_w
        penalty = torch.zeros((), device=self.device)
        b = self.budgets
        for value, limit in ((cycles, b.cycles), (params, b.flash_bytes), (peak, b.sram_bytes)):
            if limit is not None:
                penalty = penalty + torch.relu(value / float(limit) - 1.0)
        return norm, self.budget_weight * penalty

    def figures(self, alphas: Mapping[str, torch.Tensor]) -> CostFigures:
        """Expected cost of the current alphas as plain numbers (for logs)."""
        with torch.no_grad():
            return CostFigures(*(float(v) for v in self.expected(alphas)))

    def discrete(self, choices: Mapping[str, Mapping[int, int]]) -> CostFigures:
        """Exact cost of a derived architecture: choices[alpha][row] = candidate index; rows left
        out of `choices` are edges the derivation dropped and cost nothing."""
        parts = []
        for slot, (cyc, par, act) in zip(self.slots, self._table):
            if slot.alpha is None:
                parts.append((cyc[0], par[0], act[0]))
            elif slot.row in choices.get(slot.alpha, {}):
                i = choices[slot.alpha][slot.row]
                parts.append((cyc[i], par[i], act[i]))
        with torch.no_grad():
            return CostFigures(*(float(v) for v in self._totals(parts)))
