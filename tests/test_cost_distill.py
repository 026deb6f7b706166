"""DistilledCostModel: the search's CostModel protocol, exact table values, gradients w.r.t. widths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tvmnas.cost.distill import DistilledCostModel, fit_mlp
from tvmnas.search.cost import CostModel, CostSlot, CostTerm
from tvmnas.search.layer_spec import LayerSpec

# The module fixture fits an MLP (about 20-30 s on a shared 2-core host).
pytestmark = [pytest.mark.slow, pytest.mark.ci]

WIDTHS = (4, 8, 12, 16, 24, 32)


def specs() -> list[LayerSpec]:
    out = []
    for c_in in WIDTHS:
        for c_out in WIDTHS:
            for hw in (8, 16):
                out.append(LayerSpec("mb_k3_e3", c_in, c_out, hw, hw, 1, kernel=3, expand=3))
                out.append(LayerSpec("sep_conv_3x3", c_in, c_in, hw, hw, 1, kernel=3))
    return out


def true_cycles(s: LayerSpec) -> float:
    """A made-up cost growing with channels and resolution."""
    k = 9 if s.op == "mb_k3_e3" else 18
    return 40.0 * s.c_in * s.c_out * s.h * s.w / 64 + k * s.c_in * s.h * s.w + 500


@pytest.fixture(scope="module")
def model() -> DistilledCostModel:
    torch.set_num_threads(1)
    train = specs()
    mlp = fit_mlp(train, np.log([true_cycles(s) for s in train]), steps=600)
    return DistilledCostModel("cortex-m4", mlp, table={train[0]: 12345.0})


def test_implements_the_search_cost_protocol(model: DistilledCostModel) -> None:
    assert isinstance(model, CostModel)
    cost = model.layer_cost(LayerSpec("mb_k3_e3", 8, 16, 8, 8, 1, kernel=3, expand=3))
    assert cost.cycles.dim() == 0 and cost.param_bytes.dim() == 0 and cost.act_bytes.dim() == 0


def test_mlp_fits_the_distilled_cost(model: DistilledCostModel) -> None:
    test = [LayerSpec("mb_k3_e3", 10, 20, 12, 12, 1, kernel=3, expand=3), LayerSpec("sep_conv_3x3", 20, 20, 12, 12, 1, kernel=3)]
    for s in test:
        assert float(model.cycles(s).detach()) == pytest.approx(true_cycles(s), rel=0.3)


def test_tabulated_spec_returns_the_exact_value_with_gradients(model: DistilledCostModel) -> None:
    spec = specs()[0]
    cycles = model.cycles(spec)
    assert float(cycles) == pytest.approx(12345.0)
    cycles.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mlp.parameters())
    model.mlp.zero_grad()


def test_gradient_with_respect_to_width_is_positive(model: DistilledCostModel) -> None:
    c_out = torch.tensor(16.0, requires_grad=True)
    model.mlp_cycles("mb_k3_e3", 16, c_out, 8, 8, stride=1).backward()
    assert c_out.grad is not None and float(c_out.grad) > 0
    model.mlp.zero_grad()


def test_free_ops_cost_nothing(model: DistilledCostModel) -> None:
    assert float(model.cycles(LayerSpec("skip", 8, 8, 8, 8))) == 0.0
    assert float(model.cycles(LayerSpec("skip_connect", 8, 8, 8, 8, 1))) == 0.0
    assert float(model.cycles(LayerSpec("skip_connect", 8, 8, 8, 8, 2))) > 0.0


def test_cost_term_expected_cost_is_differentiable_in_alphas(model: DistilledCostModel) -> None:
    cands = (LayerSpec("mb_k3_e3", 8, 8, 8, 8, 1, kernel=3, expand=3), LayerSpec("sep_conv_3x3", 8, 8, 8, 8, 1, kernel=3))
    term = CostTerm([CostSlot(cands, "a", 0)], model)
    alpha = torch.zeros(1, 2, requires_grad=True)
    norm, _ = term.loss({"a": alpha})
    norm.backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0


def test_save_load_round_trip(model: DistilledCostModel, tmp_path: Path) -> None:
    path = tmp_path / "d.pt"
    model.save(path)
    again = DistilledCostModel.load(path)
    spec = LayerSpec("mb_k3_e3", 12, 24, 16, 16, 2, kernel=3, expand=3)
    assert float(again.cycles(spec)) == pytest.approx(float(model.cycles(spec)))
    assert again.table == model.table
    assert again.target == "cortex-m4"


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7"])
def test_shipped_distilled_models_price_wider_layers_higher(target: str) -> None:
    shipped = DistilledCostModel.shipped(target)
    assert shipped.target == target and shipped.surrogate is not None and shipped.table
    narrow = float(shipped.layer_cost(LayerSpec("mb_k5_e3", 16, 16, 16, 16, 1, kernel=5, expand=3)).cycles.detach())
    wide = float(shipped.layer_cost(LayerSpec("mb_k5_e3", 16, 48, 16, 16, 1, kernel=5, expand=3)).cycles.detach())
    assert 0 < narrow < wide
    width = torch.tensor(24.0, requires_grad=True)
    shipped.mlp_cycles("sep_conv_3x3", width, width, 16, 16, kernel=3).backward()
    assert float(width.grad) > 0
