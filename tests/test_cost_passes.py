"""AnnotateCost and EstimateMemory in a plain tvm.transform.Sequential on an ONNX-imported model."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import tvm
from torch import nn

from tvmnas.compiler import arena_buffers, emit_kernels, lower_model
from tvmnas.frontend import import_model
from tvmnas.passes import (
    AnnotateCost,
    EstimateMemory,
    MCULowering,
    estimate_memory,
    extract_call_graph,
    kernel_features,
    plan_arena,
    predicted_cycles,
)


class Tiny(nn.Module):
    """conv -> relu -> conv -> relu -> conv (same 1x1 shape twice: a repeated kernel) -> pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x))
        x = self.c(torch.relu(self.b(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(Tiny().eval(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False)
    return path


def macs_predictor(features: dict[str, float]) -> float:
    return math.expm1(features["log_macs"]) * 2.0 + 100.0


def test_annotate_cost_in_sequential_on_onnx(onnx_model: Path) -> None:
    mod = import_model(onnx_model)
    out = tvm.transform.Sequential([MCULowering(), AnnotateCost(macs_predictor)])(mod)
    total, calls = predicted_cycles(out)
    graph = extract_call_graph(out)
    assert len(calls) == len(graph.calls)
    expected = [macs_predictor(kernel_features(out[c.kernel])) for c in graph.calls]
    assert calls == pytest.approx(expected)
    assert total == pytest.approx(sum(expected))
    for c in graph.calls:
        assert float(out[c.kernel].attrs["tvmnas.predicted_cycles"]) == pytest.approx(
            macs_predictor(kernel_features(out[c.kernel])))
    # nothing but attributes changed
    plain = MCULowering()(import_model(onnx_model))
    assert sorted(gv.name_hint for gv in out.get_global_vars()) == sorted(gv.name_hint for gv in plain.get_global_vars())


def test_estimate_memory_matches_the_compilers_arena_plan(onnx_model: Path) -> None:
    lowered, graph = lower_model(import_model(onnx_model))
    plan = plan_arena(arena_buffers(graph, emit_kernels(lowered, graph)))
    est = estimate_memory(lowered)
    assert est.peak_sram_bytes == plan.arena_bytes
    weights = sum(a.nbytes for a in graph.constants.values())
    assert est.weights_bytes == weights
    assert est.flash_bytes == weights + est.code_bytes
    out = EstimateMemory()(lowered)
    assert int(out.attrs["tvmnas.peak_sram_bytes"]) == plan.arena_bytes
    assert int(out.attrs["tvmnas.flash_bytes"]) == est.flash_bytes


def test_shipped_surrogate_runs_in_a_pure_tvm_flow_without_search_code(onnx_model: Path) -> None:
    """Only onnx, TVM and the passes plus the surrogate: the search package is never imported."""
    script = textwrap.dedent(f"""
        import sys, onnx, tvm
        from tvm.relax.frontend.onnx import from_onnx
        from tvmnas.passes import AnnotateCost, EstimateMemory, MCULowering, ScheduleForMCU
        from tvmnas.cost.surrogate import load_surrogate
        mod = from_onnx(onnx.load({str(onnx_model)!r}))
        seq = tvm.transform.Sequential([MCULowering(), ScheduleForMCU(), AnnotateCost(load_surrogate("cortex-m4")),
                                        EstimateMemory()])
        out = seq(mod)
        assert "tvmnas.search" not in sys.modules, "search code was imported"
        print(float(out.attrs["tvmnas.predicted_cycles"]), int(out.attrs["tvmnas.peak_sram_bytes"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cycles, sram = proc.stdout.split()[-2:]
    assert float(cycles) > 0
    assert int(sram) > 0
