"""ScheduleForMCU: each rule's effect on a conv kernel, untouched functions, and equal outputs on QEMU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import tirx

from tvmnas.compiler import compile_model, emit_kernels, lower_model
from tvmnas.frontend import import_model
from tvmnas.passes import ScheduleForMCU
from tvmnas.passes.mcu_schedule import schedule_primfunc
from tvmnas.runner import build, run
from tvmnas.targets import load_target
from tvmnas.zoo import ZOO


class ConvReluSoftmax(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return torch.softmax(y.flatten(1), dim=1)


@pytest.fixture(scope="module")
def unscheduled():
    mod = import_model(ConvReluSoftmax(), (1, 4, 8, 8))
    return lower_model(mod, schedule=False)


def _prim(mod: tvm.IRModule, prefix: str) -> tuple[str, tirx.PrimFunc]:
    for gv, f in mod.functions.items():
        if isinstance(f, tirx.PrimFunc) and gv.name_hint.startswith(prefix):
            return gv.name_hint, f
    raise AssertionError(f"no kernel named {prefix}*")


def test_all_rules_off_leaves_the_kernel_unchanged(unscheduled) -> None:
    lowered, _ = unscheduled
    _, conv = _prim(lowered, "fused_conv2d")
    same = schedule_primfunc(conv, inline_padding=False, fuse_epilogue=False, register_tile=False,
                             unroll_window=False)
    tvm.ir.assert_structural_equal(same, conv)


def test_softmax_with_several_reductions_is_untouched(unscheduled) -> None:
    lowered, _ = unscheduled
    _, softmax = _prim(lowered, "softmax")
    tvm.ir.assert_structural_equal(schedule_primfunc(softmax), softmax)


def test_fused_epilogue_leaves_no_full_size_intermediate(unscheduled) -> None:
    lowered, graph = unscheduled
    before = emit_kernels(lowered, graph)
    after_mod = ScheduleForMCU()(lowered)
    after = emit_kernels(after_mod, graph)
    name, _ = _prim(lowered, "fused_conv2d")
    scratch_before = sum(n for _, _, n in before[name].signature.scratch)
    scratch_after = sum(n for _, _, n in after[name].signature.scratch)
    assert scratch_before >= 8 * 8 * 8            # conv output staged before bias/relu
    assert scratch_after <= 4 * 3 * 10            # only one padded row band of the input
    assert "tvmnas_maxf" in after[name].text      # relu computed in the same loop nest


def test_inline_padding_needs_no_scratch(unscheduled) -> None:
    lowered, graph = unscheduled
    inlined = ScheduleForMCU(inline_padding=True)(lowered)
    name, _ = _prim(lowered, "fused_conv2d")
    assert emit_kernels(inlined, graph)[name].signature.scratch == []


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("name", ["m0_resnet", "dilated_context"])
def test_scheduled_and_unscheduled_agree_on_qemu(name: str, tmp_path: Path) -> None:
    entry = ZOO[name]
    model = entry.build()
    x = entry.sample_input(0).numpy()
    target = load_target("cortex-m4")
    outputs, counts = [], []
    for schedule in (False, True):
        bundle = compile_model(model, target, tmp_path / str(schedule), input_shape=x.shape,
                               ignore_budget=True, schedule=schedule)
        result = run(build(bundle.out_dir, target, tmp_path / f"b{schedule}"), target, [x], timeout_s=600)
        outputs.append(result.outputs[0])
        counts.append(result.instructions[0])
    scale = float(np.abs(outputs[0]).max())
    assert float(np.abs(outputs[0] - outputs[1]).max()) <= 1e-5 * scale
    assert counts[1] < counts[0]  # the schedule removes work: fewer instructions
