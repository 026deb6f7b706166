""".tflite models in the compile path: int8 ones compile to integer kernels whose C equals the TFLite
Micro interpreter bit for bit (host and QEMU, every core), float ones compile to float32 C."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from onnx import TensorProto
from tvm import relax

from tvmnas.compiler import compile_model
from tvmnas.errors import QuantizationError, UnsupportedOperatorError
from tvmnas.frontend import import_model
from tvmnas.frontend_tflite import tflite_to_onnx
from tvmnas.passes import MCULowering, QuantizeToInteger, extract_call_graph
from tvmnas.quant.tflite_models import TFLITE_NETS, write_tflite_models
from tvmnas.quant.tflite_writer import run_tflite_micro
from tvmnas.measure.runner import build, build_host, run, run_host
from tvmnas.targets import load_target

CORES = ["cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55"]
CI_NETS = ["conv", "depthwise", "pool", "concat"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (int8 .tflite, float .tflite) for the whole set (tvmnas.quant.tflite_models)."""
    return write_tflite_models(tmp_path_factory.mktemp("tflite"))


def _int8_inputs(shape, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.randint(-128, 128, shape).astype(np.int8) for _ in range(n)]


def _tflm(model: Path, x: np.ndarray) -> np.ndarray:
    return run_tflite_micro(model.read_bytes(), x)[0].reshape(-1)


def _ops(mod: tvm.IRModule) -> set[str]:
    found = set()

    def visit(e) -> None:
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            found.add(e.op.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


# ---- the reading -------------------------------------------------------------------------------


def test_int8_tflite_imports_as_quantize_dequantize_and_rewrites_to_integer_kernels(models) -> None:
    mod = import_model(models["residual"][0])
    assert {"relax.quantize", "relax.dequantize", "relax.nn.conv2d"} <= _ops(mod)
    rewritten = QuantizeToInteger()(mod)
    assert not {"relax.quantize", "relax.dequantize", "relax.nn.conv2d"} & _ops(rewritten)
    main = rewritten["main"]
    assert str(main.params[0].ty.dtype) == "int8" and tuple(int(d) for d in main.params[0].ty.shape) == (1, 9, 9, 3)
    graph = extract_call_graph(MCULowering()(rewritten))
    assert all(str(c.dtype) == "int8" for c in graph.constants.values() if c.ndim == 4)


def test_reader_writes_qdq_onnx_with_int8_weights_per_channel(models) -> None:
    proto = tflite_to_onnx(models["depthwise"][0])
    inits = {t.name: t for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(convs) == 5 and any(a.name == "group" and a.i == 8 for n in convs for a in n.attribute)
    dq_weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                  and inits[n.input[0]].data_type == TensorProto.INT8]
    assert dq_weights and all(len(inits[n.input[1]].dims) == 1 for n in dq_weights)  # one scale per channel


def test_flatten_for_dense_permutes_weights_instead_of_transposing(models) -> None:
    """conv's NHWC flatten before the dense layer reads as an NCHW Flatten with the dense weights'
    columns reordered: no transpose besides the input's."""
    proto = tflite_to_onnx(models["conv"][0])
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Transpose") == 1 and "Flatten" in ops


# ---- bit for bit against TFLite Micro ---------------------------------------------------------


@pytest.mark.parametrize("name", [n if n in ("residual", "preact") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in TFLITE_NETS])
def test_int8_tflite_is_bit_exact_on_host(models, name: str, tmp_path: Path) -> None:
    """On the host (no emulator): residual (add) and preact (stand-alone RELU / RELU6) in CI, the
    networks of the cortex-m4 QEMU test and the rest with the slow tests."""
    path = models[name][0]
    bundle = compile_model(path, load_target("cortex-m4"), tmp_path / "c")
    assert bundle.manifest["precision"] == "int8"
    assert all("int8" in k["name"] or k["name"] in ("transpose", "reshape", "concatenate")
               for k in bundle.manifest["kernels"])  # no float island left
    xs = _int8_inputs(bundle.manifest["inputs"][0]["shape"], 3, seed=1)
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), _tflm(path, x))


@pytest.mark.parametrize("name", ["conv", pytest.param("preact", marks=pytest.mark.slow),
                                  pytest.param("concat", marks=pytest.mark.slow)])
def test_float_tflite_compiles_to_float32_within_tolerance(models, name: str, tmp_path: Path) -> None:
    path = models[name][1]
    bundle = compile_model(path, load_target("cortex-m4"), tmp_path / "c")
    assert bundle.manifest["precision"] == "float32"
    shape = bundle.manifest["inputs"][0]["shape"]
    xs = [np.random.RandomState(k).randn(*shape).astype(np.float32) for k in range(2)]
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), xs)
    for x, y in zip(xs, outs):
        want = _tflm(path, x)
        assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()


def _run_on_qemu(model: Path, core: str, xs: list[np.ndarray], tmp_path: Path):
    target = load_target(core)
    bundle = compile_model(model, target, tmp_path / "c")
    return run(build(bundle.out_dir, target, tmp_path / "b"), target, [x.astype(np.float32) for x in xs], timeout_s=300)


@pytest.mark.slow
@pytest.mark.ci
def test_int8_tflite_is_bit_exact_on_qemu_cortex_m4(models, tmp_path: Path) -> None:
    """Several networks of the set on the representative core (SIMD kernels)."""
    for name in CI_NETS:
        path = models[name][0]
        xs = _int8_inputs(_input_shape(path), 2, seed=3)
        result = _run_on_qemu(path, "cortex-m4", xs, tmp_path / name)
        for x, y in zip(xs, result.outputs):
            np.testing.assert_array_equal(y.astype(np.int8), _tflm(path, x), err_msg=name)
        assert all(n > 0 for n in result.instructions)


@pytest.mark.slow
@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("name", TFLITE_NETS)
def test_int8_tflite_is_bit_exact_on_every_core(models, name: str, core: str, tmp_path: Path) -> None:
    path = models[name][0]
    xs = _int8_inputs(_input_shape(path), 2, seed=5)
    result = _run_on_qemu(path, core, xs, tmp_path)
    for x, y in zip(xs, result.outputs):
        np.testing.assert_array_equal(y.astype(np.int8), _tflm(path, x))


def _input_shape(path: Path) -> tuple[int, ...]:
    proto = tflite_to_onnx(path)
    return tuple(d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim)


# ---- the command line --------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmnas", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_cli_compiles_tflite_and_run_raw_gives_tflite_micro_int8(models, tmp_path: Path) -> None:
    path = models["pool"][0]
    out = tmp_path / "bundle"
    res = _cli("compile", str(path), "--target", "cortex-m4", "--out", str(out))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["inputs"][0]["shape"] == [1, 12, 12, 2]
    x = _int8_inputs((1, 12, 12, 2), 1, seed=9)[0]
    np.save(tmp_path / "x.npy", x)
    res = _cli("run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--raw")
    assert res.returncode == 0, res.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y.reshape(-1), _tflm(path, x))


def _pad_then(reader: str) -> bytes:
    """int8 (1, 6, 6, 2) -> PAD (one pixel each side) -> a 3x3 SAME CONV_2D (per-channel weights)
    or a 2x2 MAX_POOL_2D: the pad is folded into the convolution, or kept as a pad."""
    from tvmnas.quant.tflite_writer import _Builder

    b = _Builder()
    fb = b.fb
    rng = np.random.RandomState(4)
    b.tensor("x", [1, 6, 6, 2], fb.TensorType.INT8, scale=0.05, zero_point=7)
    b.tensor("x_padded", [1, 8, 8, 2], fb.TensorType.INT8, scale=0.05, zero_point=7)
    b.const_i32("paddings", [[0, 0], [1, 1], [1, 1], [0, 0]])
    b.op(fb.BuiltinOperator.PAD, [0, 2], [1], fb.BuiltinOptions.PadOptions, fb.PadOptionsT())
    if reader == "conv":
        w_scale = np.array([0.01, 0.02, 0.015], np.float32)
        b.tensor("w", [3, 3, 3, 2], fb.TensorType.INT8, rng.randint(-127, 128, (3, 3, 3, 2)).astype(np.int8), w_scale,
                 np.zeros(3, np.int64))
        b.tensor("bias", [3], fb.TensorType.INT32, rng.randint(-500, 500, 3).astype(np.int32), 0.05 * w_scale,
                 np.zeros(3, np.int64))
        b.tensor("y", [1, 8, 8, 3], fb.TensorType.INT8, scale=0.04, zero_point=-5)
        opts = fb.Conv2DOptionsT()
        opts.padding, opts.strideH, opts.strideW = fb.Padding.SAME, 1, 1
        opts.dilationHFactor = opts.dilationWFactor = 1
        b.op(fb.BuiltinOperator.CONV_2D, [1, 3, 4], [5], fb.BuiltinOptions.Conv2DOptions, opts)
        return b.finish([0], [5])
    b.tensor("y", [1, 4, 4, 2], fb.TensorType.INT8, scale=0.05, zero_point=7)
    opts = fb.Pool2DOptionsT()
    opts.padding, opts.strideH, opts.strideW, opts.filterHeight, opts.filterWidth = fb.Padding.VALID, 2, 2, 2, 2
    b.op(fb.BuiltinOperator.MAX_POOL_2D, [1], [3], fb.BuiltinOptions.Pool2DOptions, opts)
    return b.finish([0], [3])


@pytest.mark.parametrize("reader", ["conv", "maxpool"])
def test_pad_before_a_same_convolution_or_a_pool_is_bit_exact(reader: str, tmp_path: Path) -> None:
    path = tmp_path / f"pad_{reader}.tflite"
    path.write_bytes(_pad_then(reader))
    ops = [n.op_type for n in tflite_to_onnx(path).graph.node]
    assert ("Pad" in ops) == (reader == "maxpool")  # folded into the convolution's padding
    bundle = compile_model(path, load_target("cortex-m4"), tmp_path / "c")
    xs = _int8_inputs((1, 6, 6, 2), 3, seed=8)
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y.astype(np.int8), _tflm(path, x))


def test_float_interface_quantize_and_dequantize_ops_become_the_int8_interface(tmp_path: Path) -> None:
    """A converter's float interface (QUANTIZE first, DEQUANTIZE last): the bundle takes and gives
    the int8 tensors between them, and its output dequantized equals TFLite Micro's float output."""
    from tvmnas.quant.tflite_writer import _Builder
    from tvmnas.quantized import dequantize_array

    b = _Builder()
    fb = b.fb
    b.tensor("x", [1, 8], fb.TensorType.FLOAT32)
    b.tensor("x_q", [1, 8], fb.TensorType.INT8, scale=0.03, zero_point=-4)
    b.tensor("w", [5, 8], fb.TensorType.INT8, np.random.RandomState(0).randint(-127, 128, (5, 8)).astype(np.int8),
             np.full(5, 0.02, np.float32), np.zeros(5, np.int64))
    b.tensor("y_q", [1, 5], fb.TensorType.INT8, scale=0.05, zero_point=3)
    b.tensor("y", [1, 5], fb.TensorType.FLOAT32)
    b.op(fb.BuiltinOperator.QUANTIZE, [0], [1])
    b.op(fb.BuiltinOperator.FULLY_CONNECTED, [1, 2, -1], [3], fb.BuiltinOptions.FullyConnectedOptions,
         fb.FullyConnectedOptionsT())
    b.op(fb.BuiltinOperator.DEQUANTIZE, [3], [4])
    path = tmp_path / "float_io.tflite"
    path.write_bytes(b.finish([0], [4]))
    bundle = compile_model(path, load_target("cortex-m4"), tmp_path / "c")
    (inp,), (out,) = bundle.manifest["inputs"], bundle.manifest["outputs"]
    assert (inp["dtype"], inp["zero_point"], out["dtype"], out["zero_point"]) == ("int8", -4, "int8", 3)
    xs = [np.random.RandomState(k).randn(1, 8).astype(np.float32) for k in range(3)]
    qs = [np.clip(np.sign(x / np.float32(0.03)) * np.floor(np.abs(x / np.float32(0.03)) + 0.5) - 4, -128, 127) for x in xs]
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), qs)
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(dequantize_array(y, out["scale"], out["zero_point"]), _tflm(path, x))


# ---- what is refused, and float islands ---------------------------------------------------------


def _tflite(ops: list[tuple], tensors: list[tuple[str, list[int], bool]], inputs: list[int], outputs: list[int]) -> bytes:
    """A .tflite of the given operators (op, inputs, outputs[, options type, options]); tensors are
    (name, shape, int8) activations."""
    from tvmnas.quant.tflite_writer import _Builder

    b = _Builder()
    fb = b.fb
    for name, shape, int8 in tensors:
        if int8:
            b.tensor(name, shape, fb.TensorType.INT8, scale=0.05, zero_point=-3)
        else:
            b.tensor(name, shape, fb.TensorType.FLOAT32)
    for op, ins, outs, *options in ops:
        b.op(getattr(fb.BuiltinOperator, op), ins, outs, *options)
    return b.finish(inputs, outputs)


def test_unsupported_tflite_operator_names_the_operator_and_node() -> None:
    model = _tflite([("L2_NORMALIZATION", [0], [1])], [("x", [1, 8], True), ("normalized", [1, 8], True)], [0], [1])
    with pytest.raises(UnsupportedOperatorError, match="unsupported operator 'L2_NORMALIZATION' at node 'normalized'"):
        tflite_to_onnx(model)


def test_uint8_tflite_is_refused_naming_the_tensor() -> None:
    from tvmnas.quant.tflite_writer import _Builder

    b = _Builder()
    b.tensor("x", [1, 4], b.fb.TensorType.UINT8, scale=0.1, zero_point=128)
    b.tensor("y", [1, 4], b.fb.TensorType.UINT8, scale=0.1, zero_point=128)
    b.op(b.fb.BuiltinOperator.RELU, [0], [1])
    with pytest.raises(UnsupportedOperatorError, match="tensor 'x' is UINT8; int8 and float32"):
        tflite_to_onnx(b.finish([0], [1]))


def test_float_op_between_quantized_ops_compiles_as_a_float_island(tmp_path: Path) -> None:
    """DEQUANTIZE -> float SOFTMAX -> QUANTIZE: the softmax runs in float32 between integer code,
    within one step of TFLite Micro."""
    from tvmnas.quant.tflite_writer import _schema

    fb = _schema()
    softmax = fb.SoftmaxOptionsT()
    softmax.beta = 1.0
    model = _tflite([("DEQUANTIZE", [0], [1]), ("SOFTMAX", [1], [2], fb.BuiltinOptions.SoftmaxOptions, softmax),
                     ("QUANTIZE", [2], [3])],
                    [("x", [1, 10], True), ("xf", [1, 10], False), ("p", [1, 10], False), ("pq", [1, 10], True)],
                    [0], [3])
    path = tmp_path / "island.tflite"
    path.write_bytes(model)
    bundle = compile_model(path, load_target("cortex-m4"), tmp_path / "c")
    assert bundle.manifest["precision"] == "int8"
    xs = _int8_inputs((1, 10), 3, seed=2)
    outs = run_host(build_host(bundle.out_dir, tmp_path / "h"), [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, outs):
        assert np.abs(y - _tflm(path, x).astype(np.float32)).max() <= 1


def test_float_weights_on_an_int8_input_are_refused_naming_the_node(models) -> None:
    from tvmnas.quant.tflite_writer import _Builder

    b = _Builder()
    fb = b.fb
    b.tensor("x", [1, 4], fb.TensorType.INT8, scale=0.1, zero_point=0)
    b.tensor("w", [2, 4], fb.TensorType.FLOAT32, np.ones((2, 4), np.float32))
    b.tensor("y", [1, 2], fb.TensorType.INT8, scale=0.1, zero_point=0)
    b.op(fb.BuiltinOperator.FULLY_CONNECTED, [0, 1, -1], [2], fb.BuiltinOptions.FullyConnectedOptions,
         fb.FullyConnectedOptionsT())
    with pytest.raises(QuantizationError, match="node 'y' has float32 weights 'w' and an int8 input"):
        tflite_to_onnx(b.finish([0], [2]))
