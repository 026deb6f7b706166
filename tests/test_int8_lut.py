"""int8 Sigmoid, Tanh and HardSwish as 256-entry lookup tables and int8 Softmax, with TFLite Micro's
integer semantics: the tables and the softmax against the tflite-micro interpreter, the quantizer's
fixed output quantization, and the compiled kernels bit-exact against the reference on host and QEMU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tvmnas.compiler import compile_model
from tvmnas.passes.activation_tables import activation_table
from tvmnas.quant.qgraph import read_qdq
from tvmnas.quant.reference import ReferenceModel, quantize_input
from tvmnas.quant.tflite_writer import run_tflite_micro, to_nhwc, write_tflite
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target

EVERY_INT8 = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 16, 16)


def _one_op(op: str, in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> onnx.ModelProto:
    """Q -> DQ -> op -> Q -> DQ on a 1x1x16x16 input."""
    inits = [numpy_helper.from_array(np.float32(in_scale), "s_in"), numpy_helper.from_array(np.int8(in_zp), "z_in"),
             numpy_helper.from_array(np.float32(out_scale), "s_out"), numpy_helper.from_array(np.int8(out_zp), "z_out")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xd"]),
             helper.make_node(op, ["xd"], ["f"], name=op.lower()),
             helper.make_node("QuantizeLinear", ["f", "s_out", "z_out"], ["fq"]),
             helper.make_node("DequantizeLinear", ["fq", "s_out", "z_out"], ["y"])]
    shape = list(EVERY_INT8.shape)
    graph = helper.make_graph(nodes, "lut", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _random_quant(op: str, seed: int) -> tuple[float, int, float, int]:
    rng = np.random.RandomState(seed)
    in_scale = float(np.exp(rng.uniform(np.log(1e-3), np.log(1.0))))
    in_zp = int(rng.randint(-128, 128))
    if op == "Sigmoid":
        return in_scale, in_zp, 1 / 256, -128
    if op == "Tanh":
        return in_scale, in_zp, 1 / 128, 0
    return in_scale, in_zp, float(np.exp(rng.uniform(np.log(in_scale / 100), np.log(in_scale * 2)))), int(rng.randint(-128, 128))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "HardSwish"])
def test_table_matches_tflite_micro_on_every_int8_input(op: str, seed: int) -> None:
    """The reference's table op equals TFLite Micro's int8 LOGISTIC / TANH / HARD_SWISH kernel for
    all 256 input values, with random input (and, for hard-swish, output) quantization."""
    model = _one_op(op, *_random_quant(op, seed))
    (q,) = read_qdq(model).ops
    assert q.kind == "lut"
    got = to_nhwc(ReferenceModel(model).run_int8(EVERY_INT8)[0])
    want = run_tflite_micro(write_tflite(model), to_nhwc(EVERY_INT8))[0]
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) >= 8  # the function, not a constant


@pytest.mark.parametrize("op,out", [("Sigmoid", (1 / 250, -128)), ("Tanh", (1 / 128, 5)), ("HardSwish", (1e-5, 0))])
def test_quantization_without_a_tflite_kernel_stays_a_float_island(op: str, out: tuple[float, int]) -> None:
    """LOGISTIC and TANH need their fixed output quantization, HARD_SWISH an output scale of at least
    input scale / 128; otherwise the op runs in float between DequantizeLinear and QuantizeLinear."""
    (q,) = read_qdq(_one_op(op, 0.05, 3, *out)).ops
    assert q.kind == "float"
    assert activation_table({"Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hard_swish"}[op], 0.05, 3, *out) is None


def _softmax_model(shape: list[int], in_scale: float, in_zp: int, axis: int = -1) -> onnx.ModelProto:
    model = _one_op("Softmax", in_scale, in_zp, 1 / 256, -128)
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.CopyFrom(helper.make_tensor_value_info(vi.name, TensorProto.FLOAT, shape))
    model.graph.node[2].attribute.append(helper.make_attribute("axis", axis))
    return model


@pytest.mark.parametrize("seed", range(8))
def test_softmax_matches_tflite_micro(seed: int) -> None:
    """The reference's int8 softmax equals TFLite Micro's SOFTMAX (int8 in and out), random input
    quantization, rows of 2 to 256 values, uniform int8 inputs."""
    rng = np.random.RandomState(seed)
    shape = [6, int(rng.choice([2, 10, 37, 256]))]
    model = _softmax_model(shape, *_random_quant("Sigmoid", seed)[:2])
    (q,) = read_qdq(model).ops
    assert q.kind == "softmax"
    xs = rng.randint(-128, 128, shape).astype(np.int8)
    np.testing.assert_array_equal(ReferenceModel(model).run_int8(xs)[0], run_tflite_micro(write_tflite(model), xs)[0])


def test_softmax_without_a_tflite_kernel_stays_a_float_island() -> None:
    """Over another axis than the last, or over more than 256 values: a float island."""
    assert read_qdq(_softmax_model([1, 5, 3], 0.1, 0, axis=1)).ops[0].kind == "float"
    assert read_qdq(_softmax_model([1, 300], 0.1, 0)).ops[0].kind == "float"


def test_softmax_compiles_to_the_c_kernel_and_is_bit_exact_on_host(tmp_path: Path) -> None:
    shape = [4, 37]
    model = _softmax_model(shape, 0.07, -9)
    onnx.save(model, str(tmp_path / "softmax.onnx"))
    bundle = compile_model(tmp_path / "softmax.onnx", load_target("cortex-m4"), tmp_path / "c")
    assert [k["name"] for k in bundle.manifest["kernels"]] == ["softmax_int8"]
    xs = [np.random.RandomState(k).randint(-128, 128, shape).astype(np.int8) for k in range(3)]
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ReferenceModel(model).run_int8(x)[0].reshape(-1))


class Activations(torch.nn.Module):
    """conv -> HardSwish -> conv -> Sigmoid gate and Tanh branch -> mean -> dense -> Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.b = torch.nn.Conv2d(6, 6, 1)
        self.fc = torch.nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.hardswish(self.a(x))
        z = self.b(y)
        both = torch.cat([torch.sigmoid(z), torch.tanh(z)], 1)
        return torch.softmax(self.fc(both.mean((2, 3))), 1)


@pytest.fixture(scope="module")
def act_net(tmp_path_factory) -> Path:
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    out = tmp_path_factory.mktemp("lut")
    torch.manual_seed(0)
    export_onnx(Activations().eval(), (1, 3, 8, 8), out / "act.onnx")
    calib = np.random.RandomState(0).randn(8, 3, 8, 8).astype(np.float32) * 2
    onnx.save(quantize_model(out / "act.onnx", calib), str(out / "act.qdq.onnx"))
    return out / "act.qdq.onnx"


def _inputs(model: Path) -> tuple[ReferenceModel, list[np.ndarray]]:
    ref = ReferenceModel(model)
    info = ref.graph.tensors[ref.graph.inputs[0]]
    return ref, [quantize_input(x[None], info) for x in np.random.RandomState(5).randn(3, 3, 8, 8).astype(np.float32) * 2]


def test_quantizer_gives_sigmoid_tanh_and_softmax_tflite_output_quantization(act_net: Path) -> None:
    graph = read_qdq(act_net)
    luts = {op.attrs["function"]: graph.tensors[op.output] for op in graph.ops if op.kind == "lut"}
    assert set(luts) == {"sigmoid", "tanh", "hard_swish"}
    assert (luts["sigmoid"].scale, luts["sigmoid"].zero_point) == (np.float32(1 / 256), -128)
    assert (luts["tanh"].scale, luts["tanh"].zero_point) == (np.float32(1 / 128), 0)
    (softmax,) = [op for op in graph.ops if op.kind == "softmax"]
    assert (graph.tensors[softmax.output].scale, graph.tensors[softmax.output].zero_point) == (np.float32(1 / 256), -128)
    assert not any(op.kind == "float" for op in graph.ops)


def test_table_kernels_compile_without_float_and_are_bit_exact_on_host(act_net: Path, tmp_path: Path) -> None:
    ref, xs = _inputs(act_net)
    bundle = compile_model(act_net, load_target("cortex-m4"), tmp_path / "c")
    names = [k["name"] for k in bundle.manifest["kernels"]]
    assert names.count("lut_int8") == 3  # one PrimFunc, called with each op's table
    assert names[-1] == "softmax_int8"
    assert all("int8" in n or "tvmnas_s8" in n for n in names), names  # no float kernel left
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("target_name", [pytest.param("cortex-m4", marks=pytest.mark.ci), "cortex-m0"])
def test_table_kernels_are_bit_exact_on_qemu(act_net: Path, target_name: str, tmp_path: Path) -> None:
    ref, xs = _inputs(act_net)
    target = load_target(target_name)
    bundle = compile_model(act_net, target, tmp_path / "c", ignore_budget=True)
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x.astype(np.float32) for x in xs],
                 timeout_s=300)
    for x, y in zip(xs, result.outputs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))
