"""KernelFeatures on kernels lowered from PyTorch and ONNX: shapes, MACs, class, hash, vector layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from torch import nn

from tvmnas.compiler import lower_model
from tvmnas.frontend import import_model
from tvmnas.passes import (
    FEATURE_NAMES,
    LowerTIRForC,
    MCULowering,
    ScheduleForMCU,
    extract_call_graph,
    extract_kernel_features,
    feature_vector,
    kernel_features,
    kernel_hash,
    kernel_macs,
)
from tvmnas.passes.kernel_features import flat_counts


def lowered(module: nn.Module, shape: tuple[int, ...]):
    torch.manual_seed(0)
    return lower_model(import_model(module.eval(), shape))


def main_kernel(mod, graph):
    """The kernel with the most MACs (the conv of a one-conv network)."""
    return max((mod[c.kernel] for c in graph.calls), key=kernel_macs)


@pytest.mark.parametrize(
    "c_in, c_out, k, stride, dilation, groups, hw",
    [(8, 16, 3, 1, 1, 1, 16), (8, 16, 1, 2, 1, 1, 16), (12, 12, 5, 2, 1, 12, 16), (6, 6, 3, 1, 2, 6, 12)],
)
def test_conv_shape_features(c_in: int, c_out: int, k: int, stride: int, dilation: int, groups: int, hw: int) -> None:
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, groups=groups)
    mod, graph = lowered(nn.Sequential(conv, nn.ReLU()), (1, c_in, hw, hw))
    f = kernel_features(main_kernel(mod, graph))
    out_hw = -(-hw // stride)
    assert (f["kernel_h"], f["kernel_w"]) == (k, k)
    assert f["stride"] == stride
    assert f["dilation"] == dilation
    assert f["channels_out"] == c_out
    assert (f["out_h"], f["out_w"]) == (out_hw, out_hw)
    assert f["class_depthwise" if groups > 1 else "class_conv"] == 1.0
    macs = out_hw * out_hw * c_out * (c_in // groups) * k * k
    assert math.isclose(f["log_macs"], math.log1p(macs), rel_tol=1e-9)
    # taps inside the input, counted per axis by brute force (PyTorch pads dilation * (k // 2))
    pad = dilation * (k // 2)
    inside = sum(0 <= o * stride + t * dilation - pad < hw for o in range(out_hw) for t in range(k)) / (out_hw * k)
    assert math.isclose(f["window_valid_frac"], inside**2, rel_tol=1e-9)
    assert math.isclose(f["log_valid_macs"], math.log1p(macs * inside**2), rel_tol=1e-9)


def test_pool_and_linear_classes() -> None:
    net = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    mod, graph = lowered(net, (1, 4, 8, 8))
    classes = {next(c for c in ("pool_max", "pool_avg", "mean", "matmul", "elementwise", "conv", "depthwise", "concat")
                    if kernel_features(mod[call.kernel])[f"class_{c}"] == 1.0) for call in graph.calls}
    assert "pool_max" in classes
    assert "matmul" in classes


def test_identical_kernels_hash_equal_across_models_and_differ_by_shape() -> None:
    a, ga = lowered(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()), (1, 4, 8, 8))
    b, gb = lowered(nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()), (1, 4, 8, 8))
    c, gc = lowered(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()), (1, 4, 10, 10))
    ha = {kernel_hash(a[k.kernel]) for k in ga.calls}
    hb = {kernel_hash(b[k.kernel]) for k in gb.calls}
    hc = {kernel_hash(c[k.kernel]) for k in gc.calls}
    assert ha <= hb
    assert not ha & hc


def test_features_from_onnx_equal_features_from_pytorch(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU6())
    torch.manual_seed(0)
    net.eval()
    onnx_path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(onnx_path), dynamo=False)
    from_torch = extract_kernel_features(lower_model(import_model(net, (1, 3, 16, 16)))[0])
    from_onnx = extract_kernel_features(lower_model(import_model(onnx_path))[0])
    shape_keys = ("log_macs", "kernel_h", "kernel_w", "stride", "dilation", "channels_out", "out_h", "out_w",
                  "class_conv", "log_bytes_out")

    def conv(features: dict) -> tuple:
        main = max(features.values(), key=lambda f: f["log_macs"])
        return tuple(main[k] for k in shape_keys)

    assert conv(from_torch) == conv(from_onnx)


def test_feature_vector_follows_feature_names() -> None:
    mod, graph = lowered(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1)), (1, 2, 6, 6))
    f = kernel_features(main_kernel(mod, graph))
    v = feature_vector(f)
    assert v.dtype == np.float32
    assert v.shape == (len(FEATURE_NAMES),)
    assert v[FEATURE_NAMES.index("channels_out")] == 4.0
    assert list(f) == list(FEATURE_NAMES)


@pytest.mark.parametrize("c_in, c_out, k, groups, hw, pad", [(8, 16, 3, 1, 10, 0), (6, 12, 1, 1, 7, 0),
                                                            (12, 12, 5, 12, 9, 0), (8, 16, 3, 1, 10, 1),
                                                            (12, 12, 5, 12, 9, 2)])
def test_flat_counts_multiply_once_per_mac(c_in: int, c_out: int, k: int, groups: int, hw: int, pad: int) -> None:
    # however the schedule tiles the loops, the C code multiplies once per MAC; with zero padding
    # it may skip the taps that fall on the padding, never more
    mod, graph = lowered(nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=pad, groups=groups)), (1, c_in, hw, hw))
    func = main_kernel(mod, graph)
    out = hw + 2 * pad - k + 1
    valid = sum(sum(0 <= o - pad + t < hw for t in range(k)) for o in range(out))  # in-bounds taps of one axis
    inside = c_out * (c_in // groups) * valid * valid
    counts = flat_counts(func)
    assert kernel_macs(func) == out * out * c_out * (c_in // groups) * k * k
    assert inside <= counts["fmul"] <= kernel_macs(func)
    if pad == 0:
        assert counts["fmul"] == kernel_macs(func)
    assert counts["mem_stores"] >= out * out * c_out  # every output element written to memory at least once
    assert counts["loop_iters"] >= counts["inner_iters"]
    assert counts["loop_iters"] + counts["unrolled_iters"] > 0


def test_short_loops_count_as_unrolled_not_as_loop_trips() -> None:
    # gcc -O3 unrolls a short loop with a small body completely: no loop overhead remains
    tiny, tiny_graph = lowered(nn.Sequential(nn.Conv2d(2, 2, 1)), (1, 2, 2, 2))
    big, big_graph = lowered(nn.Sequential(nn.Conv2d(2, 2, 1)), (1, 2, 32, 32))
    small_counts = flat_counts(main_kernel(tiny, tiny_graph))
    big_counts = flat_counts(main_kernel(big, big_graph))
    assert small_counts["unrolled_iters"] > small_counts["loop_iters"]
    assert big_counts["loop_iters"] > 10 * small_counts["loop_iters"]


def test_flat_counts_follow_the_schedule() -> None:
    # inline padding (a select per tap, no scratch) vs a padded row scratch: same computation,
    # different C code; the flat counts price the difference
    net = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU())
    torch.manual_seed(0)
    mod = MCULowering()(import_model(net.eval(), (1, 8, 12, 12)))
    graph = extract_call_graph(mod)
    name = max({c.kernel for c in graph.calls}, key=lambda n: kernel_macs(mod[n]))
    scratch = flat_counts(ScheduleForMCU()(mod)[name])
    inline = flat_counts(ScheduleForMCU(inline_padding=True)(mod)[name])
    unscheduled = flat_counts(mod[name])
    assert inline["selects"] > scratch["selects"]
    assert unscheduled["loop_iters"] > scratch["loop_iters"]  # unrolled windows and register tiles
    assert max(scratch["fmul"], inline["fmul"], unscheduled["fmul"]) <= kernel_macs(mod[name])


def test_flat_counts_of_an_already_flat_kernel_equal_those_before_lowering() -> None:
    mod, graph = lowered(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU6()), (1, 4, 8, 8))
    func = main_kernel(mod, graph)
    flat = LowerTIRForC()(tvm.IRModule({"k": func}))["k"]
    assert flat_counts(flat) == flat_counts(func)


def test_ratio_features_name_the_schedule_family_not_the_size() -> None:
    # depthwise layers that differ only in channels (both too many to unroll the channel loop) run
    # the same code per channel: the operation counts scale with the channels, their ratios do not
    def features(channels: int) -> dict[str, float]:
        net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.ReLU())
        mod, graph = lowered(net, (1, channels, 8, 8))
        return kernel_features(main_kernel(mod, graph))

    narrow, wide = features(16), features(32)
    assert wide["log_exec_fmul"] > narrow["log_exec_fmul"] + 0.5
    for op in ("fmul", "fadd", "fminmax", "mem_loads", "mem_stores", "reg_accesses", "selects", "compares"):
        for name in (f"per_unit_{op}", f"per_out_{op}"):
            assert narrow[name] > 0 and math.isclose(narrow[name], wide[name], rel_tol=1e-6), name
    assert narrow["units_per_out"] == pytest.approx(9.0) and wide["units_per_out"] == pytest.approx(9.0)
    macs = 8 * 8 * 32 * 9
    assert math.isclose(wide["per_unit_fmul"] * macs, math.expm1(wide["log_exec_fmul"]), rel_tol=1e-6)
    assert math.isclose(sum(wide[f"share_{c}"] for c in ("fmul", "fadd", "mem_loads")),
                        sum(math.expm1(wide[f"log_exec_{c}"]) for c in ("fmul", "fadd", "mem_loads"))
                        / (1.0 + sum(math.expm1(wide[n]) for n in FEATURE_NAMES if n.startswith("log_exec_"))),
                        rel_tol=1e-6)


def int8_simd_kernel(module: nn.Module, shape: tuple[int, ...]):
    """The kernel with the most MACs of the int8 build of `module` for a core with the DSP extension."""
    from tvmnas.measure.profiler import lower_network

    torch.manual_seed(0)
    network = lower_network(module.eval(), input_shape=shape, simd=True, precision="int8")
    return max((network.lowered[c.kernel] for c in network.graph.calls), key=kernel_macs)


@pytest.mark.parametrize(
    "c_in, c_out, k, stride, groups, hw",
    [(8, 16, 3, 1, 1, 16), (8, 16, 1, 2, 1, 16), (12, 12, 5, 2, 12, 16), (3, 8, 3, 2, 1, 9)],
)
def test_simd_micro_kernel_features_carry_the_call_shape(c_in: int, c_out: int, k: int, stride: int, groups: int,
                                                         hw: int) -> None:
    """An int8 conv / depthwise that calls a SIMD micro-kernel has no loop nest: its features come
    from the call's layer constants, in the slots a float32 kernel of that shape fills."""
    from tvmnas.passes.kernel_features import micro_kernel_call

    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups)
    func = int8_simd_kernel(nn.Sequential(conv, nn.ReLU()), (1, c_in, hw, hw))
    assert micro_kernel_call(func) is not None
    f = kernel_features(func)
    out_hw = -(-hw // stride)
    assert (f["kernel_h"], f["kernel_w"], f["stride"], f["dilation"]) == (k, k, stride, 1)
    assert (f["channels_out"], f["out_h"], f["out_w"]) == (c_out, out_hw, out_hw)
    assert f["class_depthwise" if groups > 1 else "class_conv"] == 1.0
    macs = out_hw * out_hw * c_out * (c_in // groups) * k * k
    assert math.isclose(f["log_macs"], math.log1p(macs), rel_tol=1e-9)
    assert math.isclose(f["log_main_out_elems"], math.log1p(c_out * out_hw * out_hw), rel_tol=1e-9)
    pad = k // 2
    inside = sum(0 <= o * stride + t - pad < hw for o in range(out_hw) for t in range(k)) / (out_hw * k)
    assert math.isclose(f["window_valid_frac"], inside**2, rel_tol=1e-9)


def test_simd_micro_kernel_features_tell_two_conv_shapes_apart() -> None:
    """Two int8 convs whose kernels are both one call of tvmnas_s8_conv: different shapes, different
    features (the call hides the loop nest the float32 features are read from)."""
    a = kernel_features(int8_simd_kernel(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()), (1, 8, 12, 12)))
    b = kernel_features(int8_simd_kernel(nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU()), (1, 16, 12, 12)))
    assert a["class_conv"] == b["class_conv"] == 1.0
    assert a["log_macs"] > b["log_macs"] > 0
    assert (a["kernel_h"], a["channels_out"]) == (3, 16) and (b["kernel_h"], b["channels_out"]) == (1, 8)
    assert feature_vector(a).tolist() != feature_vector(b).tolist()
