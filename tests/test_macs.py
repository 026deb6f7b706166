"""The one MAC convention: lowered kernels (passes.kernel_macs) and torch modules
(search.cost.count_module) count the same multiply-accumulates; pooling counts zero in both."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tvmnas.compiler import lower_model
from tvmnas.frontend import import_model
from tvmnas.measure.profiler import count_macs
from tvmnas.search.cost import count_module
from zoo import list_zoo

FAST = {"lenet5", "m0_mlp"}  # pooling and a classifier head; the rest of the zoo runs in the slow tier


def _lowered_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    lowered, graph = lower_model(import_model(module, input_shape))
    return sum(count_macs(lowered, graph))


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name, marks=() if e.name in FAST else pytest.mark.slow)
                                   for e in list_zoo()])
def test_lowered_kernels_and_torch_modules_count_the_same_macs_on_the_zoo(entry) -> None:
    torch.manual_seed(0)
    model = entry.factory().eval()
    assert count_module(model, tuple(entry.input_shape[1:])).macs == _lowered_macs(model, tuple(entry.input_shape))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(3, 1, 1), nn.AdaptiveAvgPool2d(1)],
                         ids=["max", "avg", "global"])
def test_pooling_counts_no_macs(pool: nn.Module) -> None:
    assert count_module(pool, (4, 8, 8)).macs == 0 == _lowered_macs(pool, (1, 4, 8, 8))


def test_linear_over_a_sequence_counts_every_row() -> None:
    layer = nn.Linear(6, 5)
    assert count_module(layer, (3, 6)).macs == 3 * 6 * 5 == _lowered_macs(layer, (1, 3, 6))
