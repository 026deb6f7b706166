"""ScheduleForMCU: each rule's effect on a conv kernel, untouched functions, and equal outputs on QEMU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from tvm import tirx

from tvmnas.compiler import compile_model, emit_kernels, lower_model
from tvmnas.errors import TvmnasError
from tvmnas.frontend import import_model
from tvmnas.passes import ScheduleForMCU
from tvmnas.passes.mcu_schedule import schedule_primfunc
from tvmnas.measure.runner import build, run
from tvmnas.targets import load_target
from zoo import ZOO


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


def test_size_schedule_rolls_windows_and_needs_no_scratch() -> None:
    mod = import_model(ConvReluSoftmax(), (1, 4, 8, 8))
    speed, graph = lower_model(mod)
    size, _ = lower_model(mod, optimize="size")
    name, _ = _prim(size, "fused_conv2d")
    fast, small = emit_kernels(speed, graph)[name], emit_kernels(size, graph)[name]
    rolled_window = "for (int32_t ry = 0; ry < 3; ++ry)"
    assert rolled_window in small.text and rolled_window not in fast.text
    assert small.signature.scratch == [] and len(small.text) < len(fast.text)
    assert "tvmnas_maxf" in small.text  # the epilogue stays fused


def test_unknown_optimize_goal_is_refused() -> None:
    with pytest.raises(TvmnasError, match="optimize must be one of speed, size"):
        lower_model(import_model(ConvReluSoftmax(), (1, 4, 8, 8)), optimize="fast")


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("name", ["m0_resnet", "dilated_context"])
def test_scheduled_and_unscheduled_agree_on_qemu(name: str, tmp_path: Path) -> None:
    entry = ZOO[name]
    model = entry.build()
    x = entry.sample_input(0).numpy()
    target = load_target("cortex-m4")
    outputs, counts, flash = [], [], []
    for schedule, optimize in ((False, "speed"), (True, "speed"), (True, "size")):
        out = tmp_path / f"{schedule}_{optimize}"
        bundle = compile_model(model, target, out, input_shape=x.shape, ignore_budget=True, schedule=schedule,
                               optimize=optimize)
        result = run(build(bundle.out_dir, target, out / "build"), target, [x], timeout_s=600)
        outputs.append(result.outputs[0])
        counts.append(result.instructions[0])
        flash.append(bundle.manifest["flash_bytes"])
    scale = float(np.abs(outputs[0]).max())
    for scheduled in outputs[1:]:
        assert float(np.abs(outputs[0] - scheduled).max()) <= 1e-5 * scale
    assert counts[1] < counts[0]  # the schedule removes work: fewer instructions
    assert flash[2] < flash[1]    # rolled windows: less code than unrolled ones
