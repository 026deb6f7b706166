"""int8 SIMD micro-kernels (passes/int8_simd.py): used where the target descriptor says "dsp",
never elsewhere, and bit-exact against the integer reference (TFLite Micro's arithmetic) on QEMU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tvmnas.compiler import compile_model
from tvmnas.measure.profiler import lower_network
from tvmnas.quant.int8_nets import INT8_NETS, write_int8_net
from tvmnas.quant.reference import ReferenceModel, quantize_input
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import list_targets, load_target

INPUT_SHAPE = (1, 3, 9, 9)


class OddShapes(torch.nn.Module):
    """Odd channel counts and pixel counts (the 2x2 tile's edges), reductions that are not a multiple
    of 4 (the tail), stride, padding, dilation, input channels a multiple of 4 or not (the two
    gathers), a 1x1 conv and a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)          # K 27, 5x5 pixels
        self.b = torch.nn.Conv2d(4, 7, 3, padding=2, dilation=2)        # K 36: 4 | C_in, the direct gather
        self.c = torch.nn.Conv2d(7, 3, 1)                               # K 7
        self.fc = torch.nn.Linear(3 * 5 * 5, 5)                         # K 75

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        y = torch.clamp(self.b(y), 0, 6)
        return self.fc(torch.flatten(self.c(y), 1))


@pytest.fixture(scope="module")
def odd_net(tmp_path_factory) -> Path:
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    out = tmp_path_factory.mktemp("simd")
    torch.manual_seed(0)
    export_onnx(OddShapes().eval(), INPUT_SHAPE, out / "odd.onnx")
    calib = np.random.RandomState(0).randn(8, *INPUT_SHAPE[1:]).astype(np.float32)
    onnx.save(quantize_model(out / "odd.onnx", calib), str(out / "odd.qdq.onnx"))
    return out / "odd.qdq.onnx"


def _inputs(model: Path, n: int = 3) -> tuple[ReferenceModel, list[np.ndarray]]:
    ref = ReferenceModel(model)
    info = ref.graph.tensors[ref.graph.inputs[0]]
    xs = np.random.RandomState(3).randn(n, *INPUT_SHAPE[1:]).astype(np.float32) * 2
    return ref, [quantize_input(x[None], info) for x in xs]


def _disassembly(bundle: Path, target_name: str, tmp: Path) -> str:
    target = load_target(target_name)
    obj = tmp / f"{target_name}.o"
    subprocess.run(["arm-none-eabi-gcc", *target.cflags, *target.opt_flags, "-ffreestanding", "-Wall", "-Wextra",
                    "-Werror", "-c", str(bundle / "model.c"), "-o", str(obj)], check=True)
    return subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True,
                          check=True).stdout


def test_descriptors_say_which_cores_have_the_dsp_extension() -> None:
    found = {t.name: t.dsp for t in list_targets()}
    assert found["cortex-m0"] is False and found["cortex-m3"] is False
    assert found["cortex-m4"] and found["cortex-m7"] and found["cortex-m33"] and found["cortex-m55"]


@pytest.mark.parametrize("target_name,simd", [("cortex-m4", True), ("cortex-m7", True), ("cortex-m33", True),
                                              ("cortex-m3", False), ("cortex-m0", False)])
def test_simd_kernels_exactly_where_the_core_has_dsp(odd_net: Path, target_name: str, simd: bool,
                                                      tmp_path: Path) -> None:
    bundle = compile_model(odd_net, load_target(target_name), tmp_path / "c")
    source = (tmp_path / "c" / "model.c").read_text()
    assert bundle.manifest["int8_kernels"] == ("simd" if simd else "scalar")
    assert source.count("tvmnas_s8_conv((") == (4 if simd else 0)  # three convs and the dense layer
    asm = _disassembly(tmp_path / "c", target_name, tmp_path)
    assert ("smlad" in asm) == simd
    assert ("sxtb16" in asm) == simd


def test_simd_can_be_switched_off(odd_net: Path, tmp_path: Path) -> None:
    bundle = compile_model(odd_net, load_target("cortex-m4"), tmp_path / "c", simd=False)
    assert bundle.manifest["int8_kernels"] == "scalar"
    assert "tvmnas_s8_conv" not in (tmp_path / "c" / "model.c").read_text()


def test_simd_kernels_keep_the_mac_count(odd_net: Path) -> None:
    scalar = lower_network(odd_net, simd=False)
    simd = lower_network(odd_net, simd=True)
    assert sum(simd.macs) == sum(scalar.macs) > 0
    assert any("tvmnas_s8_conv" in k.text for k in simd.kernels.values())


def test_simd_bundle_is_bit_exact_on_host(odd_net: Path, tmp_path: Path) -> None:
    """The host build runs the micro-kernel with the portable SXTB16 / SMLAD definitions."""
    ref, xs = _inputs(odd_net)
    bundle = compile_model(odd_net, load_target("cortex-m4"), tmp_path / "c")
    assert bundle.manifest["int8_kernels"] == "simd"
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


def _bit_exact_on_qemu(model: Path, ref: ReferenceModel, xs: list[np.ndarray], target_name: str,
                       tmp_path: Path, simd: bool | None = None) -> list[int]:
    target = load_target(target_name)
    bundle = compile_model(model, target, tmp_path / "c", simd=simd)
    assert bundle.manifest["int8_kernels"] == ("simd" if target.dsp and simd is not False else "scalar")
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x.astype(np.float32) for x in xs],
                 timeout_s=300)
    for x, y in zip(xs, result.outputs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))
    return result.instructions


@pytest.mark.slow
@pytest.mark.parametrize("target_name", [pytest.param("cortex-m4", marks=pytest.mark.ci), "cortex-m7",
                                         "cortex-m3", "cortex-m0"])
def test_odd_shapes_are_bit_exact_on_qemu(odd_net: Path, target_name: str, tmp_path: Path) -> None:
    """SIMD on M4 / M7, the portable scalar kernels on M3 / M0: the same outputs as the reference."""
    ref, xs = _inputs(odd_net)
    _bit_exact_on_qemu(odd_net, ref, xs, target_name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["cortex-m4", "cortex-m7"])
@pytest.mark.parametrize("name", sorted(INT8_NETS))
def test_int8_networks_are_bit_exact_with_simd_on_qemu(name: str, target_name: str, tmp_path: Path) -> None:
    from tvmnas.quant.int8_nets import calibration_data

    model = write_int8_net(name, tmp_path / "net").qdq_onnx
    ref = ReferenceModel(model)
    info = ref.graph.tensors[ref.graph.inputs[0]]
    xs = [quantize_input(c[None], info) for c in calibration_data(name, samples=2, seed=7)]
    _bit_exact_on_qemu(model, ref, xs, target_name, tmp_path)


@pytest.mark.slow
def test_simd_runs_fewer_instructions_than_scalar_on_m4(odd_net: Path, tmp_path: Path) -> None:
    ref, xs = _inputs(odd_net, n=1)
    simd = _bit_exact_on_qemu(odd_net, ref, xs, "cortex-m4", tmp_path / "s")
    scalar = _bit_exact_on_qemu(odd_net, ref, xs, "cortex-m4", tmp_path / "n", simd=False)
    assert sum(simd) < sum(scalar)


class DepthwiseShapes(torch.nn.Module):
    """Depthwise convs for the SIMD depthwise kernel: 3x3 and 5x5 (an odd kernel width: the zero
    weight pad), stride 1 and 2, odd output widths (the single-pixel tail), asymmetric padding,
    depth multiplier 2, a 1x3 kernel; and a dilated depthwise conv that stays scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 1)
        self.dw1 = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.dw2 = torch.nn.Conv2d(4, 8, 5, stride=2, padding=(2, 1), groups=4)  # multiplier 2
        self.dw3 = torch.nn.Conv2d(8, 8, (1, 3), padding=(0, 1), groups=8)
        self.dw4 = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.dw1(self.stem(x)))
        y = torch.clamp(self.dw2(y), 0, 6)
        y = self.dw4(self.dw3(y))
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def dw_net(tmp_path_factory) -> Path:
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    out = tmp_path_factory.mktemp("simd_dw")
    torch.manual_seed(1)
    export_onnx(DepthwiseShapes().eval(), INPUT_SHAPE, out / "dw.onnx")
    calib = np.random.RandomState(0).randn(8, *INPUT_SHAPE[1:]).astype(np.float32)
    onnx.save(quantize_model(out / "dw.onnx", calib), str(out / "dw.qdq.onnx"))
    return out / "dw.qdq.onnx"


def test_depthwise_kernel_exactly_where_the_core_has_dsp(dw_net: Path, tmp_path: Path) -> None:
    for target_name, calls in (("cortex-m4", 3), ("cortex-m3", 0)):
        compile_model(dw_net, load_target(target_name), tmp_path / target_name)
        source = (tmp_path / target_name / "model.c").read_text()
        assert source.count("tvmnas_s8_depthwise((") == calls  # the dilated one stays scalar


def test_depthwise_kernel_is_bit_exact_on_host(dw_net: Path, tmp_path: Path) -> None:
    ref, xs = _inputs(dw_net)
    bundle = compile_model(dw_net, load_target("cortex-m4"), tmp_path / "c")
    assert "tvmnas_s8_depthwise((" in (tmp_path / "c" / "model.c").read_text()
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("target_name", [pytest.param("cortex-m4", marks=pytest.mark.ci), "cortex-m0"])
def test_depthwise_shapes_are_bit_exact_on_qemu(dw_net: Path, target_name: str, tmp_path: Path) -> None:
    """The SIMD depthwise kernel on M4, the scalar one on M0: the reference's outputs."""
    ref, xs = _inputs(dw_net)
    _bit_exact_on_qemu(dw_net, ref, xs, target_name, tmp_path)


@pytest.mark.slow
def test_simd_depthwise_runs_fewer_instructions_than_scalar_on_m4(dw_net: Path, tmp_path: Path) -> None:
    ref, xs = _inputs(dw_net, n=1)
    simd = _bit_exact_on_qemu(dw_net, ref, xs, "cortex-m4", tmp_path / "s")
    scalar = _bit_exact_on_qemu(dw_net, ref, xs, "cortex-m4", tmp_path / "n", simd=False)
    assert sum(simd) < sum(scalar)


# ---- the residual add folded into the SIMD conv (tvmnas_s8_conv_add, written in place) -------------------

def _residual_net(tmp_path: Path) -> tuple[Path, ReferenceModel, list[np.ndarray]]:
    from tvmnas.quant.int8_nets import calibration_data

    model = write_int8_net("residual", tmp_path / "net").qdq_onnx
    ref = ReferenceModel(model)
    info = ref.graph.tensors[ref.graph.inputs[0]]
    return model, ref, [quantize_input(c[None], info) for c in calibration_data("residual", samples=2, seed=7)]


def test_residual_add_runs_in_the_simd_conv_in_place(tmp_path: Path) -> None:
    """The add after a SIMD conv is folded into its micro-kernel, which writes over the residual:
    the arena drops below the bound without in-place kernels, as the scalar build's does (the
    micro-kernel's column scratch aside, which the scalar build does not have)."""
    model, _, _ = _residual_net(tmp_path)
    target = load_target("cortex-m4")
    simd = compile_model(model, target, tmp_path / "s").manifest
    scalar = compile_model(model, target, tmp_path / "n", simd=False).manifest
    source = "".join(p.read_text() for p in (tmp_path / "s").glob("*.c"))
    assert source.count("tvmnas_s8_conv_add((") >= 1
    assert scalar["arena_bytes"] < scalar["arena_lower_bound_without_in_place_bytes"]
    assert simd["arena_bytes"] < simd["arena_lower_bound_without_in_place_bytes"]


def test_residual_add_in_the_simd_conv_is_bit_exact_on_host(tmp_path: Path) -> None:
    model, ref, xs = _residual_net(tmp_path)
    bundle = compile_model(model, load_target("cortex-m4"), tmp_path / "c")
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


@pytest.mark.slow
@pytest.mark.ci
def test_residual_add_in_the_simd_conv_is_bit_exact_on_qemu_m4(tmp_path: Path) -> None:
    model, ref, xs = _residual_net(tmp_path)
    _bit_exact_on_qemu(model, ref, xs, "cortex-m4", tmp_path)


class ConvPlusInput(torch.nn.Module):
    """conv(x) + x: the residual is the conv's own input, which the conv still reads around each
    output, so the add must not be written over it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


def test_add_of_the_conv_input_is_not_folded(tmp_path: Path) -> None:
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    torch.manual_seed(0)
    shape = (1, 4, 6, 6)
    export_onnx(ConvPlusInput().eval(), shape, tmp_path / "m.onnx")
    calib = np.random.RandomState(0).randn(8, *shape[1:]).astype(np.float32)
    onnx.save(quantize_model(tmp_path / "m.onnx", calib), str(tmp_path / "m.qdq.onnx"))
    model = tmp_path / "m.qdq.onnx"
    bundle = compile_model(model, load_target("cortex-m4"), tmp_path / "c")
    source = "".join(p.read_text() for p in (tmp_path / "c").glob("*.c"))
    assert "tvmnas_s8_conv((" in source and "tvmnas_s8_conv_add((" not in source
    ref = ReferenceModel(model)
    info = ref.graph.tensors[ref.graph.inputs[0]]
    xs = [quantize_input(np.random.RandomState(i).randn(*shape).astype(np.float32), info) for i in range(2)]
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))
