"""int8 transformer blocks: dense layers over tokens, BATCH_MATMUL of two activations, GELU as a
table and the integer LayerNorm. The reference against the tflite-micro interpreter (BATCH_MATMUL,
GELU, FULLY_CONNECTED with keep_num_dims) and against onnxruntime's fake-quant run (within 1 LSB per
op); the compiled C bit-exact against the reference on the host and on QEMU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from tvmnas.compiler import compile_model
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.passes.int8_layer_norm import layer_norm_params, layer_norm_rows
from tvmnas.quant.qgraph import read_qdq
from tvmnas.quant.quantize import quantize_model
from tvmnas.quant.reference import ReferenceModel, per_op_deviation, quantize_input
from tvmnas.quant.tflite_writer import run_tflite_micro, write_tflite
from tvmnas.targets import load_target
from tvmnas.model_file import export_onnx

TOKENS, DIM = 8, 16


class AttentionBlock(nn.Module):
    """x + proj(softmax(q k^T / sqrt(d)) v), two heads, as timm writes attention."""

    def __init__(self, dim: int = DIM, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class LayerNormMlp(nn.Module):
    """x + fc2(gelu(fc1(layer_norm(x)))): a transformer's MLP half."""

    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        with torch.no_grad():  # LayerNorm weights away from the 1 / 0 of initialisation
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


def _quantized(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    shape = (1, TOKENS, DIM)
    float_path = export_onnx(module.eval(), shape, path.with_suffix(".float.onnx"))
    calibration = np.random.RandomState(0).randn(8, TOKENS, DIM).astype(np.float32)
    onnx.save(quantize_model(float_path, calibration), str(path))
    return path


@pytest.fixture(scope="module")
def attention_net(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return _quantized(AttentionBlock(), tmp_path_factory.mktemp("attn") / "attention.onnx")


@pytest.fixture(scope="module")
def mlp_net(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return _quantized(LayerNormMlp(), tmp_path_factory.mktemp("mlp") / "mlp.onnx")


def _inputs(model: Path) -> tuple[ReferenceModel, list[np.ndarray]]:
    ref = ReferenceModel(model)
    t = ref.graph.tensors[ref.graph.inputs[0]]
    xs = [np.random.RandomState(10 + s).randn(1, TOKENS, DIM).astype(np.float32) * (0.5 + s) for s in range(4)]
    return ref, [quantize_input(x, t) for x in xs]


# ---- the reference against TFLite Micro ---------------------------------------------------------


def _qdq(name: str, scale: float, zero_point: int) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.float32(scale), f"{name}_s"), numpy_helper.from_array(np.int8(zero_point), f"{name}_z")]


def _q_dq(name: str) -> list[onnx.NodeProto]:
    return [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_d"])]


def _model(nodes, inputs, out_shape, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("seed", range(6))
def test_batch_matmul_matches_tflite_micro(seed: int) -> None:
    """MatMul of two int8 activations is TFLite Micro's int8 BATCH_MATMUL bit for bit, with random
    scales and zero points (both zero points folded in, the float32 product of the scales)."""
    rng = np.random.RandomState(seed)
    sa, sb = rng.uniform(0.01, 0.1, 2)
    so = sa * sb * rng.uniform(2000, 6000)
    inits = _qdq("a", sa, rng.randint(-128, 128)) + _qdq("b", sb, rng.randint(-128, 128)) + _qdq("y", so, rng.randint(-20, 20))
    nodes = _q_dq("a") + _q_dq("b") + [helper.make_node("MatMul", ["a_d", "b_d"], ["f"], name="matmul"),
                                       helper.make_node("QuantizeLinear", ["f", "y_s", "y_z"], ["y_q"]),
                                       helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_z"], ["y"])]
    model = _model(nodes, [("a", [1, 6, 16]), ("b", [1, 16, 5])], [1, 6, 5], inits)
    (op,) = read_qdq(model).ops
    assert op.kind == "batch_matmul"
    a = rng.randint(-128, 128, (1, 6, 16)).astype(np.int8)
    b = rng.randint(-128, 128, (1, 16, 5)).astype(np.int8)
    got = ReferenceModel(model).run_int8(a, b)[0]
    np.testing.assert_array_equal(got, run_tflite_micro(write_tflite(model), a, b)[0])
    assert len(np.unique(got)) >= 8  # not saturated


def _gelu_model(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> onnx.ModelProto:
    """Q -> DQ -> GELU as torch exports it (Div, Erf, Add, Mul, Mul) -> Q -> DQ on every int8 value."""
    inits = _qdq("x", in_scale, in_zp) + _qdq("y", out_scale, out_zp) + [
        numpy_helper.from_array(np.float32(np.sqrt(np.float32(2.0))), "sqrt2"), numpy_helper.from_array(np.float32(1.0), "one"),
        numpy_helper.from_array(np.float32(0.5), "half")]
    nodes = _q_dq("x") + [helper.make_node("Div", ["x_d", "sqrt2"], ["t"]), helper.make_node("Erf", ["t"], ["e"]),
                          helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["x_d", "p"], ["m"]),
                          helper.make_node("Mul", ["m", "half"], ["f"], name="gelu"),
                          helper.make_node("QuantizeLinear", ["f", "y_s", "y_z"], ["y_q"]),
                          helper.make_node("DequantizeLinear", ["y_q", "y_s", "y_z"], ["y"])]
    return _model(nodes, [("x", [1, 16, 16])], [1, 16, 16], inits)


@pytest.mark.parametrize("seed", range(6))
def test_gelu_pattern_is_one_table_op_within_one_step_of_gelu(seed: int) -> None:
    """The exported GELU pattern reads as one table op; on all 256 inputs, random quantizations, the
    table (TFLite Micro's LUTPopulate in float32; the tflite-micro interpreter has no GELU kernel
    registered to compare with) is within one step of the exact GELU rounded once, and onnxruntime's
    fake-quant run of the five float ops within one step of it."""
    import math

    rng = np.random.RandomState(seed)
    in_scale, in_zp = float(np.exp(rng.uniform(np.log(0.005), np.log(0.1)))), int(rng.randint(-40, 40))
    out_scale, out_zp = in_scale * rng.uniform(0.3, 1.5), int(rng.randint(-100, 0))
    model = _gelu_model(in_scale, in_zp, out_scale, out_zp)
    (op,) = read_qdq(model).ops
    assert (op.kind, op.attrs["function"]) == ("lut", "gelu")
    every = np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16)
    got = ReferenceModel(model).run_int8(every)[0].astype(np.int64).reshape(-1)
    real = np.float64(np.float32(in_scale)) * (np.arange(-128, 128) - in_zp)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in real])
    want = np.clip(np.round(exact / np.float32(out_scale)) + out_zp, -128, 127)
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.97
    assert len(np.unique(got)) >= 16
    x = (np.float32(in_scale) * (every.astype(np.float32) - in_zp)).astype(np.float32)
    assert max(per_op_deviation(model, x).values()) <= 1


def test_dense_over_tokens_matches_tflite_micro(tmp_path: Path) -> None:
    """A Linear on [1, T, C] (MatMul + bias Add in ONNX) quantizes to one dense op with an int32
    bias, equal to TFLite Micro's FULLY_CONNECTED with keep_num_dims."""
    torch.manual_seed(1)
    model = _quantized(nn.Sequential(nn.Linear(DIM, 12), nn.ReLU()), tmp_path / "linear.onnx")
    (op,) = read_qdq(model).ops
    assert op.kind == "dense" and op.bias.dtype == np.int32 and np.any(op.bias != 0)
    ref, xs = _inputs(model)
    for x in xs:
        np.testing.assert_array_equal(ref.run_int8(x)[0], run_tflite_micro(write_tflite(model), x)[0])


# ---- integer LayerNorm ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_integer_layer_norm_is_within_one_step_of_float(seed: int) -> None:
    """The integer LayerNorm kernel against the float LayerNorm of the dequantized rows, quantized
    with one rounding: never more than one step apart, and mostly equal."""
    rng = np.random.RandomState(seed)
    n = int(rng.choice([7, 16, 64, 200]))
    s_in, zp_in = float(rng.uniform(0.005, 0.2)), int(rng.randint(-60, 60))
    s_out, zp_out = float(rng.uniform(0.01, 0.05)), int(rng.randint(-20, 20))
    gamma, beta = rng.uniform(0.2, 2.0, n).astype(np.float32), rng.uniform(-1, 1, n).astype(np.float32)
    params = layer_norm_params(s_in, s_out, gamma, beta, 1e-5)
    x = np.clip(rng.randn(64, n) * rng.uniform(5, 60) + zp_in, -128, 127).astype(np.int8)
    x[0] = zp_in  # a constant row: only eps keeps the variance above 0
    got = layer_norm_rows(x, zp_in, zp_out, params).astype(np.int64)
    real = np.float64(s_in) * (x.astype(np.float64) - zp_in)
    norm = (real - real.mean(-1, keepdims=True)) / np.sqrt(real.var(-1, keepdims=True) + np.float64(np.float32(1e-5)))
    want = np.clip(np.round((norm * gamma + beta) / s_out) + zp_out, -128, 127)
    assert np.abs(got - want).max() <= 1
    assert (got == want).mean() > 0.99


# ---- the blocks: integer ops, within 1 LSB of onnxruntime per op, bit-exact C ---------------------


def test_blocks_read_as_integer_ops_within_one_step_of_onnxruntime(attention_net: Path, mlp_net: Path) -> None:
    """Attention's matmuls, its dense layers, GELU and LayerNorm are integer ops, and every op is
    within 1 LSB of onnxruntime's fake-quant run fed the same int8 inputs."""
    kinds = {name: [op.kind for op in read_qdq(net).ops] for name, net in (("attn", attention_net), ("mlp", mlp_net))}
    assert kinds["attn"].count("batch_matmul") == 2 and kinds["attn"].count("dense") == 2
    assert "softmax" in kinds["attn"]
    assert kinds["mlp"] == ["layer_norm", "dense", "lut", "dense", "add"]
    for net in (attention_net, mlp_net):
        for s in range(3):
            x = np.random.RandomState(20 + s).randn(1, TOKENS, DIM).astype(np.float32) * (1 + s)
            deviation = per_op_deviation(net, x)
            assert max(deviation.values()) <= 1, deviation


def _check_host(net: Path, tmp_path: Path, kernels: set[str]) -> None:
    ref, xs = _inputs(net)
    bundle = compile_model(net, load_target("cortex-m4"), tmp_path / "c", ignore_budget=True)
    names = {k["name"] for k in bundle.manifest["kernels"]}
    assert kernels <= names, names
    assert not any("layer_norm" in n and "int8" not in n or "erf" in n for n in names), names  # no float LayerNorm / GELU
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


def test_attention_block_is_bit_exact_on_host(attention_net: Path, tmp_path: Path) -> None:
    _check_host(attention_net, tmp_path, {"batch_matmul_int8", "softmax_int8"})


def test_layer_norm_gelu_block_is_bit_exact_on_host(mlp_net: Path, tmp_path: Path) -> None:
    _check_host(mlp_net, tmp_path, {"layer_norm_int8", "lut_int8"})


def _check_qemu(net: Path, target_name: str, tmp_path: Path) -> None:
    ref, xs = _inputs(net)
    target = load_target(target_name)
    bundle = compile_model(net, target, tmp_path / "c", ignore_budget=True)
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x.astype(np.float32) for x in xs],
                 timeout_s=300)
    for x, y in zip(xs, result.outputs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("target_name", [pytest.param("cortex-m4", marks=pytest.mark.ci), "cortex-m0"])
def test_attention_block_is_bit_exact_on_qemu(attention_net: Path, target_name: str, tmp_path: Path) -> None:
    _check_qemu(attention_net, target_name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("target_name", ["cortex-m4", "cortex-m0"])
def test_layer_norm_gelu_block_is_bit_exact_on_qemu(mlp_net: Path, target_name: str, tmp_path: Path) -> None:
    _check_qemu(mlp_net, target_name, tmp_path)
