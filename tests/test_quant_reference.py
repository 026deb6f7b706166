"""The numpy integer reference equals TFLite Micro's interpreter bit for bit.

Each network of tvmnas.quant.int8_nets and single-operator QDQ models with random quantization
parameters are written as .tflite (tvmnas.quant.tflite_writer) and run by the tflite-micro
interpreter (TFLite Micro's reference kernels); the reference runs the QDQ ONNX. Equal int8
outputs are the evidence that the reference has TFLite Micro's integer semantics.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvmnas.errors import QuantizationError, UnsupportedOperatorError
from tvmnas.quant.int8_nets import INT8_NETS, write_int8_net
from tvmnas.quant.qgraph import read_qdq
from tvmnas.quant.reference import ReferenceModel, quantize_input
from tvmnas.quant.tflite_writer import run_tflite_micro, to_nhwc as _nhwc, write_tflite


def _assert_bit_exact(model, inputs: list[np.ndarray]) -> None:
    ref = ReferenceModel(model)
    tfl = write_tflite(model)
    for k, x in enumerate(inputs):
        got = _nhwc(ref.run_int8(x)[0])
        want = run_tflite_micro(tfl, _nhwc(x))[0]
        assert got.shape == want.shape
        diff = np.count_nonzero(got != want)
        assert diff == 0, f"input {k}: {diff} of {got.size} int8 outputs differ from TFLite Micro"


def _int8_inputs(shape, n, seed, real_tensor=None):
    """Uniform int8 (saturates the arithmetic) plus normal data quantized as a real input would be."""
    rng = np.random.RandomState(seed)
    xs = [rng.randint(-128, 128, shape).astype(np.int8) for _ in range(n)]
    if real_tensor is not None:
        xs += [quantize_input(rng.randn(*shape).astype(np.float32), real_tensor) for _ in range(n)]
    return xs


@pytest.fixture(scope="module")
def int8_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8_nets")
    return {name: write_int8_net(name, out) for name in INT8_NETS}


@pytest.mark.parametrize("name", sorted(INT8_NETS))
def test_network_matches_tflite_micro_bit_for_bit(int8_files, name):
    files = int8_files[name]
    g = read_qdq(files.qdq_onnx)
    xs = _int8_inputs(INT8_NETS[name].input_shape, 6, seed=1, real_tensor=g.tensors[g.inputs[0]])
    ref = ReferenceModel(files.qdq_onnx)
    tfl = files.tflite.read_bytes()
    for x in xs:
        np.testing.assert_array_equal(_nhwc(ref.run_int8(x)[0]), run_tflite_micro(tfl, _nhwc(x))[0])


def test_make_int8_tflite_script_writes_and_checks_the_files(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_int8_tflite.py"
    spec = importlib.util.spec_from_file_location("make_int8_tflite", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path), "--check", "pool"]) == 0
    assert "TFLite Micro == reference on 8 inputs" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.calibration.npy", "pool.onnx", "pool.qdq.onnx", "pool.tflite"]
    assert module.main(["--out", str(tmp_path), "nosuch"]) == 2


def test_network_set_covers_every_operator(int8_files):
    kinds = {op.kind for f in int8_files.values() for op in read_qdq(f.qdq_onnx).ops}
    assert kinds >= {"conv", "dense", "add", "avgpool", "maxpool", "mean", "reshape", "relu"}
    acts = {op.activation for f in int8_files.values() for op in read_qdq(f.qdq_onnx).ops}
    assert acts >= {"NONE", "RELU", "RELU6"}
    depthwise = [op for f in int8_files.values() for op in read_qdq(f.qdq_onnx).ops
                 if op.kind == "conv" and op.attrs["group"] > 1]
    assert depthwise


# ---- single-operator QDQ models with random quantization parameters ----


class _QDQ:
    """Builds a one-operator QDQ ONNX model."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def input(self, name, shape, scale, zp):
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        return self.qdq(name, scale, zp)

    def qdq(self, name, scale, zp):
        s, z = self.const(name + "_s", np.float32(scale)), self.const(name + "_z", np.int8(zp))
        self.nodes.append(helper.make_node("QuantizeLinear", [name, s, z], [name + "_q"]))
        self.nodes.append(helper.make_node("DequantizeLinear", [name + "_q", s, z], [name + "_dq"]))
        return name + "_dq"

    def weight(self, name, q, scales, axis=0):
        s, z = self.const(name + "_s", np.asarray(scales, np.float32)), self.const(name + "_z", np.zeros(len(scales), q.dtype))
        self.nodes.append(helper.make_node("DequantizeLinear", [self.const(name, q), s, z], [name + "_dq"], axis=axis))
        return name + "_dq"

    def node(self, op, inputs, out, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [out], name=op.lower(), **attrs))
        return out

    def model(self, out, scale, zp):
        s, z = self.const(out + "_s", np.float32(scale)), self.const(out + "_z", np.int8(zp))
        self.nodes.append(helper.make_node("QuantizeLinear", [out, s, z], [out + "_q"]))
        self.nodes.append(helper.make_node("DequantizeLinear", [out + "_q", s, z], ["y"]))
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        g = helper.make_graph(self.nodes, "g", self.inputs, [y], self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _scale(rng):
    return float(np.exp(rng.uniform(np.log(1e-3), np.log(0.5))))


@pytest.mark.parametrize("seed", range(8))
def test_add_with_random_scales_matches_tflite_micro(seed):
    rng = np.random.RandomState(seed)
    b = _QDQ()
    shape = [1, 4, 5, 3]
    x1 = b.input("a", shape, _scale(rng), rng.randint(-128, 128))
    x2 = b.input("b", shape, _scale(rng), rng.randint(-128, 128))
    b.node("Add", [x1, x2], "sum")
    relu = seed % 2 == 1
    if relu:
        b.node("Relu", ["sum"], "act")
    model = b.model("act" if relu else "sum", _scale(rng), rng.randint(-128, 128))
    ref = ReferenceModel(model)
    tfl = write_tflite(model)
    for k in range(4):
        xa, xb = (rng.randint(-128, 128, shape).astype(np.int8) for _ in range(2))
        np.testing.assert_array_equal(_nhwc(ref.run_int8(xa, xb)[0]), run_tflite_micro(tfl, _nhwc(xa), _nhwc(xb))[0])


@pytest.mark.parametrize("seed", range(6))
def test_conv_per_channel_random_scales_matches_tflite_micro(seed):
    rng = np.random.RandomState(seed)
    c_in, c_out, k = 3, 5, 3
    depthwise = seed % 3 == 2
    b = _QDQ()
    x = b.input("x", [1, c_in if not depthwise else c_out, 7, 7], _scale(rng), rng.randint(-100, 100))
    w_shape = (c_out, 1 if depthwise else c_in, k, k)
    w = rng.randint(-127, 128, w_shape).astype(np.int8)
    ws = [_scale(rng) * 0.1 for _ in range(c_out)]
    bias = rng.randint(-5000, 5000, c_out).astype(np.int32)
    in_s = float(numpy_helper.to_array(b.inits[0]))
    bq = b.weight("bias", bias, [np.float32(in_s) * np.float32(s) for s in ws])
    stride, pads = (2, [1, 1, 1, 1]) if seed % 2 else (1, [1, 1, 1, 1])
    b.node("Conv", [x, b.weight("w", w, ws), bq], "conv", strides=[stride, stride], pads=pads,
           group=c_out if depthwise else 1)
    act = ["Relu", None, "Clip"][seed % 3]
    out = "conv"
    if act == "Relu":
        out = b.node("Relu", ["conv"], "act")
    elif act == "Clip":
        out = b.node("Clip", ["conv", b.const("lo", np.float32(0)), b.const("hi", np.float32(6))], "act")
    model = b.model(out, _scale(rng) * 4, rng.randint(-128, 128))
    _assert_bit_exact(model, _int8_inputs([1, c_out if depthwise else c_in, 7, 7], 3, seed))


@pytest.mark.parametrize("seed", range(4))
def test_dense_matches_tflite_micro(seed):
    rng = np.random.RandomState(seed)
    b = _QDQ()
    x = b.input("x", [1, 24], _scale(rng), rng.randint(-128, 128))
    w = rng.randint(-127, 128, (24, 9)).astype(np.int8)  # MatMul layout (in, out): per channel on axis 1
    ws = [_scale(rng) * 0.1 for _ in range(9)]
    b.node("MatMul", [x, b.weight("w", w, ws, axis=1)], "mm")
    model = b.model("mm", _scale(rng) * 4, rng.randint(-128, 128))
    _assert_bit_exact(model, _int8_inputs([1, 24], 4, seed))


@pytest.mark.parametrize("seed", range(6))
def test_mean_matches_tflite_micro_same_and_different_quantization(seed):
    rng = np.random.RandomState(seed)
    h, w = [(1, 2), (3, 4), (5, 5), (8, 8), (7, 3), (2, 16)][seed]
    b = _QDQ()
    s, z = _scale(rng), rng.randint(-128, 128)
    x = b.input("x", [1, 6, h, w], s, z)
    b.node("ReduceMean", [x, b.const("axes", np.array([2, 3], np.int64))], "m", keepdims=1)
    same = seed % 2 == 0
    model = b.model("m", s if same else _scale(rng), z if same else rng.randint(-128, 128))
    _assert_bit_exact(model, _int8_inputs([1, 6, h, w], 4, seed))


@pytest.mark.parametrize("seed", range(4))
def test_pools_with_padding_match_tflite_micro(seed):
    rng = np.random.RandomState(seed)
    s, z = _scale(rng), rng.randint(-128, 128)
    for op, attrs in [("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}),
                      ("AveragePool", {"kernel_shape": [3, 3], "pads": [0, 0, 1, 1], "strides": [2, 2]}),
                      ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}),
                      ("MaxPool", {"kernel_shape": [3, 3], "pads": [0, 0, 1, 1], "strides": [2, 2]})]:
        b = _QDQ()
        x = b.input("x", [1, 4, 6, 6], s, z)
        b.node(op, [x], "p", **attrs)
        model = b.model("p", s, z)
        _assert_bit_exact(model, _int8_inputs([1, 4, 6, 6], 3, seed))


@pytest.mark.parametrize("seed", range(6))
def test_standalone_relu_and_relu6_match_tflite_micro(seed):
    rng = np.random.RandomState(seed)
    b = _QDQ()
    x = b.input("x", [1, 3, 5, 5], _scale(rng) * 10, rng.randint(-128, 128))
    if seed % 2:
        b.node("Clip", [x, b.const("lo", np.float32(0)), b.const("hi", np.float32(6))], "r")
    else:
        b.node("Relu", [x], "r")
    same = seed % 3 == 0 or seed % 2  # TFLite Micro's RELU6 only clamps: same quantization
    in_s = float(numpy_helper.to_array(b.inits[0]))
    in_z = int(numpy_helper.to_array(b.inits[1]))
    model = b.model("r", in_s if same else _scale(rng) * 10, in_z if same else rng.randint(-128, 128))
    assert [op.kind for op in read_qdq(model).ops] == ["relu"]
    _assert_bit_exact(model, _int8_inputs([1, 3, 5, 5], 3, seed))


def test_flatten_of_a_feature_map_as_output_matches_tflite_micro():
    # No dense layer follows to absorb the NHWC order: the writer transposes to NCHW first.
    b = _QDQ()
    x = b.input("x", [1, 3, 4, 5], 0.05, 7)
    b.node("Flatten", [x], "f", axis=1)
    model = b.model("f", 0.05, 7)
    _assert_bit_exact(model, _int8_inputs([1, 3, 4, 5], 2, 0))


def test_writer_refuses_relu6_that_changes_quantization():
    b = _QDQ()
    x = b.input("x", [1, 2, 3, 3], 0.1, 10)
    b.node("Clip", [x, b.const("lo", np.float32(0)), b.const("hi", np.float32(6))], "r")
    with pytest.raises(QuantizationError, match="'clip': ReLU6 changes the quantization"):
        write_tflite(b.model("r", 0.05, -100))


# ---- what the reference reads and refuses ----


def test_writer_rejects_pool_padding_tflite_cannot_express():
    b = _QDQ()
    x = b.input("x", [1, 2, 6, 6], 0.1, 0)
    b.node("MaxPool", [x], "p", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    with pytest.raises(QuantizationError, match=r"'maxpool': pooling pads \(1, 1, 1, 1\) are neither"):
        write_tflite(b.model("p", 0.1, 0))


def test_reference_rejects_average_pool_that_changes_quantization():
    b = _QDQ()
    x = b.input("x", [1, 2, 4, 4], 0.1, 0)
    b.node("AveragePool", [x], "p", kernel_shape=[2, 2], strides=[2, 2])
    model = b.model("p", 0.2, 0)
    with pytest.raises(QuantizationError, match="average pool 'averagepool' changes the quantization"):
        ReferenceModel(model).run_int8(np.zeros((1, 2, 4, 4), np.int8))


def test_op_without_integer_form_runs_as_a_float_island():
    import onnxruntime as ort

    b = _QDQ()
    x = b.input("x", [1, 4, 3, 3], 0.05, 3)
    b.node("Sigmoid", [x], "sig")
    model = b.model("sig", 1 / 250, -128)  # not the output quantization of TFLite's int8 LOGISTIC
    (op,) = read_qdq(model).ops
    assert op.kind == "float"
    xs = np.random.RandomState(0).randn(1, 4, 3, 3).astype(np.float32) * 4
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": xs})[0]
    np.testing.assert_allclose(ReferenceModel(model).run(xs)[0], want, atol=1 / 250 + 1e-6)
    with pytest.raises(QuantizationError, match="'sigmoid': Sigmoid runs in float"):
        write_tflite(model)


def test_reader_names_a_node_whose_output_is_not_quantized():
    b = _QDQ()
    x = b.input("x", [1, 4], 0.1, 0)
    b.node("Neg", [x], "neg")
    b.node("Sigmoid", ["neg"], "sig")
    model = b.model("sig", 1 / 256, -128)
    with pytest.raises(QuantizationError, match="output 'neg' of Neg node 'neg' is not quantized"):
        read_qdq(model)


def test_reader_rejects_qoperator_onnx():
    x = helper.make_tensor_value_info("x", TensorProto.INT8, [1, 1, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.INT8, None)
    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z"),
             numpy_helper.from_array(np.ones((1, 1, 1, 1), np.int8), "w")]
    node = helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "z", "s", "z"], ["y"], name="qconv")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], inits))
    with pytest.raises(QuantizationError, match="'qconv' is QLinearConv.*export QDQ instead"):
        read_qdq(model)


def test_reference_float_run_matches_onnxruntime_within_one_lsb(int8_files):
    import onnxruntime as ort

    files = int8_files["residual"]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(files.qdq_onnx), opts, providers=["CPUExecutionProvider"])
    ref = ReferenceModel(files.qdq_onnx)
    out = ref.graph.tensors[ref.graph.outputs[0]]
    x = np.random.RandomState(3).randn(*INT8_NETS["residual"].input_shape).astype(np.float32)
    diff = np.abs(sess.run(None, {"input": x})[0] - ref.run(x)[0]) / out.scale
    assert diff.max() <= 1.0 + 1e-3


# (weight scale, accumulator) pairs where a multiplier from the float32 product of the scales
# would round differently from TFLite's double product (input scale 0.0173, output scale 0.9);
# found by scanning accumulators with tvmnas.passes.fixed_point.
_ROUNDING_PROBES = [(0.0022937145549803972, -2664985), (0.0010938316117972136, -5302989),
                    (0.008441838435828686, -539221), (0.02817525528371334, -111707),
                    (0.006924799643456936, -709938), (0.0010606244904920459, -4684228),
                    (0.050302568823099136, -103937), (0.0016499551711604, -3231826)]


@pytest.mark.parametrize("op", ["Conv", "Gemm"])
def test_multiplier_is_the_double_product_of_the_scales_as_in_tflite_micro(op):
    from tvmnas.passes.fixed_point import multiply_by_quantized_multiplier, quantize_multiplier

    in_s, out_s = np.float32(0.0173), np.float32(0.9)
    ws = [w for w, _ in _ROUNDING_PROBES]
    acc = np.array([a for _, a in _ROUNDING_PROBES], np.int32)
    as_double = [int(multiply_by_quantized_multiplier(np.int64(a), *quantize_multiplier(float(in_s) * w / float(out_s)))) for w, a in _ROUNDING_PROBES]
    as_float = [int(multiply_by_quantized_multiplier(np.int64(a), *quantize_multiplier(float(in_s * np.float32(w)) / float(out_s)))) for w, a in _ROUNDING_PROBES]
    assert all(d != f for d, f in zip(as_double, as_float))  # each probe tells the two apart
    n = len(ws)
    b = _QDQ()
    shape = [1, 1, 2, 2] if op == "Conv" else [1, 1]
    x = b.input("x", shape, float(in_s), 0)
    w = np.ones((n, 1, 1, 1) if op == "Conv" else (n, 1), np.int8)
    bias = b.weight("bias", acc, [in_s * np.float32(s) for s in ws])
    attrs = {"transB": 1} if op == "Gemm" else {}
    b.node(op, [x, b.weight("w", w, ws), bias], "y", **attrs)  # input 0: accumulator = bias
    model = b.model("y", float(out_s), 0)
    x0 = np.zeros(shape, np.int8)
    got = ReferenceModel(model).run_int8(x0)[0].reshape(n, -1)[:, 0]
    assert got.tolist() == as_double
    _assert_bit_exact(model, [x0])


def test_add_over_every_pair_of_int8_values_matches_tflite_micro():
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 1, 256, 256)
    c = np.tile(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 1, 256, 256)
    for s1, z1, s2, z2, so, zo in [(0.0371, 17, 0.0113, -40, 0.0297, 3), (0.02, -128, 0.02, -128, 0.04, -128),
                                   (0.5, 0, 0.0041, 100, 0.37, -7)]:
        b = _QDQ()
        b.node("Add", [b.input("a", [1, 1, 256, 256], s1, z1), b.input("c", [1, 1, 256, 256], s2, z2)], "sum")
        model = b.model("sum", so, zo)
        np.testing.assert_array_equal(_nhwc(ReferenceModel(model).run_int8(a, c)[0]),
                                      run_tflite_micro(write_tflite(model), _nhwc(a), _nhwc(c))[0])


@pytest.mark.parametrize("name", ["depthwise", "residual"])
def test_onnxruntime_quantized_qdq_reads_and_matches_tflite_micro(int8_files, tmp_path, name):
    # A model quantized by onnxruntime's own quantize_static (QDQ, per-channel int8): its Clip
    # bounds come as Constant -> Cast chains, which the reader folds.
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from tvmnas.quant.int8_nets import calibration_data
    from tvmnas.quant.reference import per_op_deviation

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter([{"input": c[None]} for c in calibration_data(name, 4)])

        def get_next(self):
            return next(self.samples, None)

    out = tmp_path / "ort_qdq.onnx"
    quantize_static(str(int8_files[name].float_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    assert max(per_op_deviation(out, calibration_data(name, 1)).values()) <= 1
    g = read_qdq(out)
    _assert_bit_exact(onnx.load(str(out)), _int8_inputs(INT8_NETS[name].input_shape, 2, 4, g.tensors[g.inputs[0]]))
