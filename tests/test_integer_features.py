"""Integer features of int8 kernels (passes/integer_features): they tell apart int8 kernels whose loop
nests are the same and whose C costs differ, and leave float32 kernels' features as they were."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from tvm import te, tirx

from tvmnas.compiler import lower_model
from tvmnas.frontend import import_model
from tvmnas.passes import FEATURE_NAMES, kernel_features
from tvmnas.passes.integer_features import INTEGER_FEATURE_NAMES
from tvmnas.passes.integer_kernels import add_int8, avg_pool2d_int8, requantize, requantize_int8
from tvmnas.passes.kernel_features import INT8_FEATURE_NAMES, feature_names

SHAPE = (1, 8, 6, 6)


def prim_func(*tensors: te.Tensor) -> tirx.PrimFunc:
    return te.create_prim_func(list(tensors))


def requantize_kernel(shift: int, input_zero_point: int = 3, output_zero_point: int = -5,
                      act_min: int = -128) -> tirx.PrimFunc:
    x = te.placeholder(SHAPE, "int8", name="x")
    return prim_func(x, requantize_int8(x, input_zero_point=input_zero_point, output_zero_point=output_zero_point,
                                        multiplier=1 << 30, shift=shift, act_min=act_min, act_max=127))


def add_kernel(shifts: tuple[int, int]) -> tirx.PrimFunc:
    """An int8 ADD: equal input scales rescale both addends by the same left shift, unequal ones
    (TFLite's add_params) rescale the smaller-scale input with a negative shift."""
    a, b = te.placeholder(SHAPE, "int8", name="a"), te.placeholder(SHAPE, "int8", name="b")
    params = {"left_shift": 20, "input1_multiplier": 1 << 30, "input1_shift": shifts[0],
              "input2_multiplier": 1 << 30, "input2_shift": shifts[1], "output_multiplier": 1 << 30,
              "output_shift": -19}
    return prim_func(a, b, add_int8(a, b, params=params, zero_points=(0, 0), output_zero_point=0,
                                    act_min=-128, act_max=127))


def concat_kernel(requantized: int) -> tirx.PrimFunc:
    """Two int8 tensors concatenated on channels; input `requantized` (0 or 1) is rescaled, the other
    copied, as a fused requantize + concatenate chain of if_then_else."""
    half = (1, 2, 6, 6)
    a, b = te.placeholder(half, "int8", name="a"), te.placeholder((1, 6, 6, 6), "int8", name="b")

    def arm(t, which, *i):
        v = t(*i)
        if which != requantized:
            return v
        return tirx.min(tirx.max(requantize(v.astype("int32"), tirx.const(1 << 30, "int32"),
                                            tirx.const(-1, "int32")), tirx.const(-128, "int32")),
                        tirx.const(127, "int32")).astype("int8")

    out = te.compute((1, 8, 6, 6), lambda n, c, y, x: tirx.if_then_else(
        c < 2, arm(a, 0, n, c, y, x), arm(b, 1, n, c - 2, y, x)), name="concatenate")
    return prim_func(a, b, out)


def avg_pool_kernel(padding: int) -> tirx.PrimFunc:
    x = te.placeholder(SHAPE, "int8", name="x")
    return prim_func(x, avg_pool2d_int8(x, pool=(3, 3), strides=(1, 1), padding=(padding,) * 4,
                                        act_min=-128, act_max=127))


def base(f: dict[str, float]) -> list[float]:
    return [f[n] for n in FEATURE_NAMES]


def test_requantize_shift_sign_is_a_feature_the_loop_nest_does_not_show() -> None:
    """A negative shift takes tvmnas_requantize's rounding right shift (gcc drops it for a constant
    shift >= 0): same loop nest and operation counts, other cycles."""
    left, rounding = kernel_features(requantize_kernel(1)), kernel_features(requantize_kernel(-3))
    assert base(left) == base(rounding)
    assert (left["int8_per_out_requant"], rounding["int8_per_out_requant"]) == pytest.approx((1.0, 1.0))
    assert (left["int8_per_out_requant_round"], rounding["int8_per_out_requant_round"]) == pytest.approx((0.0, 1.0))
    assert (left["int8_per_out_requant_left"], rounding["int8_per_out_requant_left"]) == pytest.approx((1.0, 0.0))


def test_a_non_negative_input_and_a_relu_output_are_features() -> None:
    """Zero point -128 in: the real input is >= 0 (tvmnas_requantize's sign test always goes one
    way); the clamp at the output zero point is a ReLU (gcc skips the rounding of clamped values)."""
    plain = kernel_features(requantize_kernel(-1))
    nonneg = kernel_features(requantize_kernel(-1, input_zero_point=-128))
    relu = kernel_features(requantize_kernel(-1, output_zero_point=-20, act_min=-20))
    assert base(plain) == base(nonneg)
    assert (plain["int8_per_out_requant_nonneg_in"], nonneg["int8_per_out_requant_nonneg_in"]) == pytest.approx((0, 1))
    assert (plain["int8_per_out_requant_relu_out"], relu["int8_per_out_requant_relu_out"]) == pytest.approx((0, 1))
    assert relu["int8_per_out_requant_nonneg_in"] == 0.0


def test_an_add_of_equal_and_of_different_input_scales_gets_different_features() -> None:
    equal, different = kernel_features(add_kernel((0, 0))), kernel_features(add_kernel((0, -2)))
    assert base(equal) == base(different)
    assert (equal["int8_per_out_requant"], different["int8_per_out_requant"]) == pytest.approx((3.0, 3.0))
    assert equal["int8_per_out_requant_round"] == pytest.approx(1.0)  # the output rescale only
    assert different["int8_per_out_requant_round"] == pytest.approx(2.0)


@pytest.mark.parametrize("requantized, share", [(0, 2 / 8), (1, 6 / 8)])
def test_a_concatenation_counts_the_arm_each_element_runs(requantized: int, share: float) -> None:
    """Each output element runs one arm of the if_then_else chain: the rescale counts for the
    channels that take it, the copy for the others."""
    f = kernel_features(concat_kernel(requantized))
    assert f["int8_per_out_requant"] == pytest.approx(share)
    assert f["int8_per_out_requant_round"] == pytest.approx(share)
    assert f["int8_per_out_copies"] == pytest.approx(1.0 - share)
    assert f["int8_per_out_conds"] == pytest.approx(1.0)


def test_average_pooling_divides_by_a_variable_count_only_when_padded() -> None:
    """Over a padded border the window's count depends on the position (an SDIV per output); without
    padding it is a constant the compiler turns into a multiply."""
    padded, valid = kernel_features(avg_pool_kernel(1)), kernel_features(avg_pool_kernel(0))
    assert padded["int8_per_out_idiv_var"] > 0.0
    assert valid["int8_per_out_idiv_var"] == 0.0


def test_float32_kernels_keep_the_float32_feature_layout() -> None:
    """A float32 kernel's features are FEATURE_NAMES alone (the float32 surrogates and profile data
    stay as they were); an int8 kernel's are FEATURE_NAMES then the integer features."""
    torch.manual_seed(0)
    mod, graph = lower_model(import_model(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()).eval(), (1, 2, 6, 6)))
    for call in graph.calls:
        assert list(kernel_features(mod[call.kernel])) == list(FEATURE_NAMES)
    assert list(kernel_features(requantize_kernel(1))) == list(INT8_FEATURE_NAMES)
    assert feature_names("float32") == FEATURE_NAMES
    assert feature_names("int8") == FEATURE_NAMES + INTEGER_FEATURE_NAMES
