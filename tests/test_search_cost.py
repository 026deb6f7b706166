"""The cost term: exact discrete cost, differentiable expectation, lambda trade-off, budget reports."""

import json
import sys

import pytest
import torch

from tvmnas.data import load_dataset
from tvmnas.models import build_model
from tvmnas.search.chain_supernet import ChainSupernet
from tvmnas.search.cost import Budgets, CostModel, CostTerm, LayerCost, MacCostModel, count_module
from tvmnas.search.darts_supernet import DartsSupernet
from tvmnas.search.layer_spec import LayerSpec
from tvmnas.search.search import SearchConfig, search

torch.set_num_threads(1)


def _supernet(space: str) -> torch.nn.Module:
    torch.manual_seed(1)
    if space == "darts":
        return DartsSupernet((1, 8, 8), 10, channels=8, cells=3, nodes=2)
    return ChainSupernet((1, 8, 8), 10)


@pytest.mark.parametrize("space", ["darts", "chain"])
def test_discrete_cost_equals_counts_of_the_built_network(space):
    net = _supernet(space)
    model = MacCostModel()
    term = CostTerm(net.cost_slots(), model)
    genotype, choices = net.derive()
    exact = term.discrete(choices)
    counted = count_module(build_model(genotype), (1, 8, 8))
    assert exact.cycles == counted.macs
    assert exact.param_bytes == 4 * counted.params
    assert exact.cycles <= term.reference.cycles and exact.param_bytes <= term.reference.param_bytes


def test_expected_cost_is_differentiable_in_alphas():
    net = _supernet("chain")
    term = CostTerm(net.cost_slots(), MacCostModel())
    norm, penalty = term.loss(net.arch_logits())
    assert 0.0 < float(norm.detach()) < 1.0 and float(penalty) == 0.0
    norm.backward()
    grad = net.alpha_layers.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    # the costliest candidate (k7, e6) is pushed down harder than the cheapest (k3, e1)
    from tvmnas.search.ops import CHAIN_PRIMITIVES
    assert float(grad[1, CHAIN_PRIMITIVES.index("mb_k7_e6")]) > float(grad[1, CHAIN_PRIMITIVES.index("mb_k3_e1")])


def test_budget_hinge_penalty_is_positive_only_over_budget():
    net = _supernet("chain")
    loose = CostTerm(net.cost_slots(), MacCostModel(), budgets=Budgets(cycles=1e12, flash_bytes=1e12))
    tight = CostTerm(net.cost_slots(), MacCostModel(), budgets=Budgets(cycles=1.0, sram_bytes=1.0))
    assert float(loose.loss(net.arch_logits())[1]) == 0.0
    assert float(tight.loss(net.arch_logits())[1]) > 0.0


class OnlyDepthwiseKernelCost:
    """A stand-in learned model: cycles grow with kernel size only (not expansion)."""

    name = "kernel-lut"
    unit = "predicted cycles"

    def layer_cost(self, spec: LayerSpec) -> LayerCost:
        return LayerCost(torch.tensor(float(spec.kernel ** 2 * 1000 + 1)), torch.tensor(4.0), torch.tensor(4.0))


def test_search_takes_any_cost_model(tmp_path):
    cost = OnlyDepthwiseKernelCost()
    assert isinstance(cost, CostModel) and isinstance(MacCostModel(), CostModel)
    data = load_dataset("digits", limit_train=128, limit_test=32)
    config = SearchConfig(space="chain", epochs=2, batch_size=32, cost_weight=50.0, arch_lr=0.05)
    result = search(data, tmp_path, config, cost_model=cost)
    assert result.cost_unit == "predicted cycles"
    assert all(layer.op in ("skip", "mb_k3_e1", "mb_k3_e3", "mb_k3_e6") for layer in result.genotype.layers)


@pytest.mark.parametrize("space", ["chain", "darts"])
def test_large_cost_weight_gives_cheaper_genotype(space, tmp_path):
    data = load_dataset("digits", limit_train=128, limit_test=32)
    cycles = {}
    for lam in (0.0, 20.0):
        config = SearchConfig(space=space, epochs=2, batch_size=32, cost_weight=lam, seed=0, arch_lr=0.01)
        cycles[lam] = search(data, tmp_path / f"lam{lam}", config).cost.cycles
    assert cycles[20.0] < cycles[0.0]


def test_budget_violation_is_reported_never_silent(tmp_path):
    data = load_dataset("digits", limit_train=128, limit_test=32)
    config = SearchConfig(space="chain", epochs=1, batch_size=32, budgets=Budgets(cycles=1000, flash_bytes=10**9))
    result = search(data, tmp_path, config)
    assert not result.within_budget and len(result.violations) == 1
    assert "cycles (MAC proxy)" in result.violations[0] and "> budget 1,000" in result.violations[0]
    record = json.loads((tmp_path / "search.json").read_text())
    assert record["budget_ok"] is False and record["violations"] == result.violations
    saved = json.loads((tmp_path / "genotype.json").read_text())
    assert saved["extra"]["search"]["budget_ok"] is False


def test_cli_search_over_budget_exits_nonzero_with_one_line(tmp_path, capsys, monkeypatch):
    from tvmnas.cli import main

    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [
        "tvmnas", "search", "--space", "chain", "--epochs", "1", "--limit-train", "64", "--batch-size", "32",
        "--budget-flash", "100", "--out", str(out), "--no-progress",
    ])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: architecture over budget: flash (parameter bytes)") and "> budget 100" in last
    assert json.loads(captured.out.strip().splitlines()[-1])["budget_ok"] is False


def test_search_runs_with_the_shipped_learned_cost(tmp_path):
    """The learned (distilled) cost plugs into the search; several architecture steps run through it."""
    from tvmnas.cost.distill import DistilledCostModel

    cost = DistilledCostModel.shipped("cortex-m4")
    assert any(p.requires_grad for p in cost.mlp.parameters())  # the table must not keep its graph
    data = load_dataset("digits", limit_train=128, limit_test=32)
    config = SearchConfig(space="chain", epochs=2, batch_size=32, cost_weight=5.0, seed=0)
    result = search(data, tmp_path, config, cost_model=cost)
    assert result.cost_unit == cost.unit
    assert result.cost.cycles > 0 and len(result.history) == 2
