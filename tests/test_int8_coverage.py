"""int8 coverage of the shapes the zoos use: 1-D convolutions, pools and means (as 2-D ones over one
row), ceil_mode max pooling (extra padding after the input), zero Pads folded into the next Conv by
the quantizer, a squeeze-excite gate (TFLite's int8 MUL with broadcasting) and a MatMul with a float
constant operand (a float island). Each network is
quantized by tvmnas's PTQ, compiled and run, and must equal the integer reference bit for bit; the
reference must stay within 1 LSB of onnxruntime per operator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from tvmnas.compiler import compile_model
from tvmnas.quant.qgraph import read_qdq
from tvmnas.quant.reference import ReferenceModel, per_op_deviation, quantize_input
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target


class Temporal(torch.nn.Module):
    """1-D conv (stride, padding, dilation), 1-D depthwise conv, 1-D max pool with ceil_mode,
    1-D average pool, global average pool over time, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv1d(3, 8, 5, stride=2, padding=2)
        self.dw = torch.nn.Conv1d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.b = torch.nn.Conv1d(8, 6, 1)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        y = F.max_pool1d(torch.relu(self.dw(y)), 3, 2, ceil_mode=True)
        y = F.avg_pool1d(self.b(y), 2)
        return self.fc(F.adaptive_avg_pool1d(y, 1).flatten(1))


class PadsAndCeil(torch.nn.Module):
    """An explicit zero Pad before a conv (as DS-CNN exports it), a 2-D max pool with ceil_mode
    (SqueezeNet), and a MatMul with a 1-D float constant (attention pooling's query)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 6, 3)
        self.b = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.query = torch.nn.Parameter(torch.randn(6))
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(F.pad(x, (1, 2, 1, 0))))
        y = F.max_pool2d(torch.relu(self.b(y)), 3, 2, ceil_mode=True)
        weights = torch.softmax(y.flatten(2).transpose(1, 2) @ self.query, dim=1)  # (1, HW)
        return self.fc(y.flatten(2).mean(2) * weights.max())


class SqueezeExcite(torch.nn.Module):
    """conv -> squeeze-excite (mean, 1x1 conv, ReLU, 1x1 conv, Sigmoid, channel-wise Mul) -> dense."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.reduce = torch.nn.Conv2d(8, 4, 1)
        self.expand = torch.nn.Conv2d(4, 8, 1)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        gate = torch.sigmoid(self.expand(torch.relu(self.reduce(y.mean((2, 3), keepdim=True)))))
        return self.fc((y * gate).mean((2, 3)))


NETS = {"temporal": (Temporal, (1, 3, 33)), "pads_and_ceil": (PadsAndCeil, (1, 3, 10, 11)),
        "squeeze_excite": (SqueezeExcite, (1, 3, 6, 6))}


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> dict[str, Path]:
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    out = tmp_path_factory.mktemp("coverage")
    paths = {}
    for name, (factory, shape) in NETS.items():
        torch.manual_seed(0)
        export_onnx(factory().eval(), shape, out / f"{name}.onnx")
        calib = np.random.RandomState(0).randn(8, *shape[1:]).astype(np.float32)
        onnx.save(quantize_model(out / f"{name}.onnx", calib), str(out / f"{name}.qdq.onnx"))
        paths[name] = out / f"{name}.qdq.onnx"
    return paths


def _inputs(model: Path, shape: tuple[int, ...]) -> tuple[ReferenceModel, list[np.ndarray], np.ndarray]:
    ref = ReferenceModel(model)
    xs = np.random.RandomState(4).randn(3, *shape[1:]).astype(np.float32)
    return ref, [quantize_input(x[None], ref.graph.tensors[ref.graph.inputs[0]]) for x in xs], xs[:1]


def test_temporal_ops_are_integer_ops(nets) -> None:
    graph = read_qdq(nets["temporal"])
    kinds = [op.kind for op in graph.ops]
    assert kinds.count("conv") == 3 and "maxpool" in kinds and "avgpool" in kinds and "mean" in kinds
    assert "float" not in kinds


def test_zero_pad_folds_into_the_conv_and_ceil_mode_pools_in_integers(nets) -> None:
    graph = read_qdq(nets["pads_and_ceil"])
    first = graph.ops[0]
    assert first.kind == "conv" and first.attrs["pads"] == (1, 1, 0, 2)  # the Pad is gone, the conv pads
    pool = next(op for op in graph.ops if op.kind == "maxpool")
    assert graph.tensors[pool.output].shape[2:] == (4, 6)  # 9x12 in: the width needs ceil_mode (floor gives 5)
    assert any(op.kind == "float" and op.attrs["node"].op_type == "MatMul" for op in graph.ops)


@pytest.mark.parametrize("seed", range(6))
def test_mul_matches_tflite_micro(seed: int) -> None:
    """The reference's int8 MUL (same shapes, and a per-channel gate broadcast over H and W) equals
    TFLite Micro's, random quantization."""
    from onnx import TensorProto, helper, numpy_helper

    from tvmnas.quant.tflite_writer import run_tflite_micro, to_nhwc, write_tflite

    rng = np.random.RandomState(seed)
    shape_a, shape_b = [1, 4, 5, 3], ([1, 4, 1, 1] if seed % 2 else [1, 4, 5, 3])
    scales = np.exp(rng.uniform(np.log(1e-3), np.log(0.5), 3)).astype(np.float32)
    zps = rng.randint(-128, 128, 3).astype(np.int8)
    inits = [numpy_helper.from_array(v, n) for v, n in zip([*scales, *zps], ["sa", "sb", "so", "za", "zb", "zo"])]
    nodes = [helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "sa", "za"], ["ad"]),
             helper.make_node("QuantizeLinear", ["b", "sb", "zb"], ["bq"]),
             helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bd"]),
             helper.make_node("Mul", ["ad", "bd"], ["p"], name="mul"),
             helper.make_node("QuantizeLinear", ["p", "so", "zo"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "so", "zo"], ["y"])]
    graph = helper.make_graph(nodes, "mul", [helper.make_tensor_value_info("a", TensorProto.FLOAT, shape_a),
                                             helper.make_tensor_value_info("b", TensorProto.FLOAT, shape_b)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_a)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert read_qdq(model).ops[0].kind == "mul"
    for _ in range(3):
        a = rng.randint(-128, 128, shape_a).astype(np.int8)
        b = rng.randint(-128, 128, shape_b).astype(np.int8)
        np.testing.assert_array_equal(to_nhwc(ReferenceModel(model).run_int8(a, b)[0]),
                                      run_tflite_micro(write_tflite(model), to_nhwc(a), to_nhwc(b))[0])


def test_squeeze_excite_gate_is_an_integer_mul(nets, tmp_path: Path) -> None:
    assert [op.kind for op in read_qdq(nets["squeeze_excite"]).ops].count("mul") == 1
    bundle = compile_model(nets["squeeze_excite"], load_target("cortex-m4"), tmp_path / "c")
    names = [k["name"] for k in bundle.manifest["kernels"]]
    assert "mul_int8" in names and all("int8" in n for n in names), names


@pytest.mark.parametrize("name", sorted(NETS))
def test_reference_within_one_lsb_of_onnxruntime_per_op(nets, name: str) -> None:
    _ref, _xs, x = _inputs(nets[name], NETS[name][1])
    assert max(per_op_deviation(nets[name], x).values()) <= 1


@pytest.mark.parametrize("name", sorted(NETS))
def test_bit_exact_on_host(nets, name: str, tmp_path: Path) -> None:
    ref, xs, _x = _inputs(nets[name], NETS[name][1])
    bundle = compile_model(nets[name], load_target("cortex-m4"), tmp_path / "c")
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["cortex-m4", "cortex-m0"])
def test_temporal_net_is_bit_exact_on_qemu(nets, target_name: str, tmp_path: Path) -> None:
    ref, xs, _x = _inputs(nets["temporal"], NETS["temporal"][1])
    target = load_target(target_name)
    bundle = compile_model(nets["temporal"], target, tmp_path / "c", ignore_budget=True)
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x.astype(np.float32) for x in xs],
                 timeout_s=300)
    for x, y in zip(xs, result.outputs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))
