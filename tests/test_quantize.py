"""Post-training static quantization (tvmnas.quant.quantize_model): the QDQ it writes, its accuracy
against onnxruntime's fake-quant run and the float model, and its one-line errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from tvmnas.errors import CalibrationError, ModelLoadError, QuantizationError
from tvmnas.quant import ReferenceModel, quantize_model
from tvmnas.quant.int8_nets import INT8_NETS, build_net, calibration_data
from tvmnas.quant.quantize import activation_qparams, weight_qparams
from tvmnas.model_file import export_onnx, export_pt2


class ConcatNet(nn.Module):
    """Two branches at different ranges concatenated (the concat requantizes one of them)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.b.weight.mul_(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.a(x)), self.b(x)], dim=1)
        y = F.max_pool2d(y, 2)
        return self.fc(y.mean(dim=(2, 3)))


def _ort(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """name -> (float net, quantized QDQ model) for the int8 network set and the concat net."""
    out = tmp_path_factory.mktemp("quantize")
    nets = {name: (build_net(name), INT8_NETS[name].input_shape) for name in INT8_NETS}
    torch.manual_seed(0)
    nets["concat"] = (ConcatNet().eval(), (1, 3, 8, 8))
    result = {}
    for name, (net, shape) in nets.items():
        path = export_onnx(net, shape, out / f"{name}.onnx", keep_batchnorm=True)
        calib = np.random.RandomState(0).randn(16, *shape[1:]).astype(np.float32)
        result[name] = (net, calib, quantize_model(path, calib))
    return result


@pytest.mark.parametrize("name", sorted(INT8_NETS) + ["concat"])
def test_integer_reference_within_one_lsb_of_onnxruntime(quantized, name):
    _, calib, model = quantized[name]
    ref = ReferenceModel(model)
    sess = _ort(model)
    scale = ref.graph.tensors[ref.graph.outputs[0]].scale
    rng = np.random.RandomState(7)
    for _ in range(4):
        x = rng.randn(*calib.shape[1:])[None].astype(np.float32)
        lsb = np.abs(sess.run(None, {sess.get_inputs()[0].name: x})[0] - ref.run(x)[0]) / scale
        assert lsb.max() <= 1.0 + 1e-3


@pytest.mark.parametrize("name", sorted(INT8_NETS) + ["concat"])
def test_quantized_within_quantization_error_of_float(quantized, name):
    # On the calibration samples (nothing clipped) the int8 output stays within a few output LSBs
    # of the float network: each layer adds at most half an LSB of rounding.
    net, calib, model = quantized[name]
    ref = ReferenceModel(model)
    scale = ref.graph.tensors[ref.graph.outputs[0]].scale
    with torch.no_grad():
        for x in calib[:8]:
            want = net(torch.from_numpy(x[None])).numpy()
            assert np.abs(ref.run(x[None])[0] - want).max() <= 4 * scale


@pytest.mark.parametrize("name", ["resnet8", "mobilenetv3_tiny", "shufflenet_tiny", "m0_resnet"])
def test_zoo_networks_quantize_and_each_op_is_within_one_lsb_of_onnxruntime(tmp_path, name):
    # Softmax (resnet8), HardSwish and Sigmoid gates (mobilenetv3_tiny, m0_resnet) run as float
    # islands; shufflenet_tiny's channel shuffle needs its Shape arithmetic folded to constants.
    # End to end the two semantics drift apart by accumulated rounding in deep networks, so the
    # check is per op, on onnxruntime's own int8 inputs.
    from tvmnas.quant.reference import per_op_deviation
    from zoo import get_entry

    entry = get_entry(name)
    path = export_onnx(entry.build(), entry.input_shape, tmp_path / f"{name}.onnx")
    calib = np.random.RandomState(0).randn(4, *entry.input_shape[1:]).astype(np.float32)
    model = quantize_model(path, calib)
    deviation = per_op_deviation(model, calib[:1])
    assert len(deviation) >= 5
    assert max(deviation.values()) <= 1, {k: v for k, v in deviation.items() if v > 1}


def test_qdq_pattern_per_channel_weights_int32_bias_fused_relu(quantized):
    model = quantized["conv"][2]
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    assert not [n for n in g.node if n.op_type == "BatchNormalization"]
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == 3
    for conv in convs:
        x_dq, w_dq, b_dq = (producer[i] for i in conv.input)
        assert x_dq.op_type == w_dq.op_type == b_dq.op_type == "DequantizeLinear"
        assert producer[x_dq.input[0]].op_type == "QuantizeLinear"
        w, w_scale, w_zp = (init[i] for i in w_dq.input)
        assert w.dtype == np.int8 and np.abs(w).max() == 127 and w.min() >= -127
        assert w_scale.shape == (w.shape[0],) and not w_zp.any()
        assert onnx.helper.get_attribute_value(w_dq.attribute[0]) == 0  # axis: output channels
        b, b_scale, b_zp = (init[i] for i in b_dq.input)
        assert b.dtype == np.int32 and not b_zp.any()
        x_scale = init[x_dq.input[1]]
        np.testing.assert_array_equal(b_scale, (x_scale * w_scale).astype(np.float32))
    # conv1 (after BatchNorm folding) -> Relu -> QuantizeLinear: the conv output itself is not quantized
    first = convs[0]
    (relu,) = consumers[first.output[0]]
    assert relu.op_type == "Relu"
    assert [n.op_type for n in consumers[relu.output[0]]] == ["QuantizeLinear"]


def test_batch_norm_is_folded_into_the_conv(quantized, tmp_path):
    net, calib, model = quantized["conv"]
    plain = export_onnx(net, INT8_NETS["conv"].input_shape, tmp_path / "plain.onnx")  # exporter folds BN
    folded_by_exporter = quantize_model(plain, calib)
    x = calib[:1]
    a = ReferenceModel(model).run(x)[0]
    b = ReferenceModel(folded_by_exporter).run(x)[0]
    scale = ReferenceModel(model).graph.tensors[ReferenceModel(model).graph.outputs[0]].scale
    assert np.abs(a - b).max() <= 1.0 * scale + 1e-6


def test_pool_and_flatten_keep_their_input_quantization(quantized):
    g = ReferenceModel(quantized["pool"][2]).graph
    for op in g.ops:
        if op.kind in ("maxpool", "avgpool", "reshape"):
            tin, tout = g.tensors[op.inputs[0]], g.tensors[op.output]
            assert (tin.scale, tin.zero_point) == (tout.scale, tout.zero_point), op.name


def test_pt2_quantizes_like_its_onnx_export(tmp_path):
    net = build_net("residual")
    shape = INT8_NETS["residual"].input_shape
    calib = calibration_data("residual", samples=4)
    from_pt2 = quantize_model(export_pt2(net, shape, tmp_path / "m.pt2"), calib)
    from_onnx = quantize_model(export_onnx(net, shape, tmp_path / "m.onnx"), calib)
    x = calib[:2]
    for xi in x:
        np.testing.assert_array_equal(
            ReferenceModel(from_pt2).run_int8(*_q(from_pt2, xi)), ReferenceModel(from_onnx).run_int8(*_q(from_onnx, xi)))


def _q(model, x):
    from tvmnas.quant.reference import quantize_input

    g = ReferenceModel(model).graph
    return [quantize_input(x[None], g.tensors[g.inputs[0]])]


def test_activation_range_includes_zero_and_weights_are_symmetric():
    scale, zp = activation_qparams(0.5, 2.0)  # all positive: the range widens to [0, 2]
    assert zp == -128 and scale == np.float32(2.0 / 255)
    scale, zp = activation_qparams(-1.0, 1.0)
    assert zp == 0 or zp == -1
    q, s = weight_qparams(np.array([[1.0, -2.0], [0.0, 0.0], [0.25, 0.5]], np.float32), axis=0)
    np.testing.assert_allclose(s, [2 / 127, 1.0, 0.5 / 127], rtol=1e-6)
    assert q.tolist() == [[64, -127], [0, 0], [64, 127]]


# ---- errors ----


@pytest.fixture()
def dense_onnx(tmp_path):
    return export_onnx(build_net("dense"), INT8_NETS["dense"].input_shape, tmp_path / "dense.onnx")


def test_missing_calibration_file_is_one_line(dense_onnx, tmp_path):
    with pytest.raises(CalibrationError, match=r"calibration file '.*nope\.npy' does not exist"):
        quantize_model(dense_onnx, tmp_path / "nope.npy")


def test_calibration_of_wrong_shape_names_the_expected_shape(dense_onnx, tmp_path):
    path = tmp_path / "calib.npy"
    np.save(path, np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(CalibrationError, match=r"shape \(4, 3, 8, 8\); expected \(N, 40\) for input 'input'"):
        quantize_model(dense_onnx, path)


def test_calibration_with_no_samples_is_refused(dense_onnx):
    with pytest.raises(CalibrationError, match="0 samples; at least 1"):
        quantize_model(dense_onnx, np.zeros((0, 40), np.float32))


def test_qoperator_onnx_says_export_qdq(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    net = build_net("conv")
    path = export_onnx(net, INT8_NETS["conv"].input_shape, tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{"input": calibration_data("conv", 2)[:1]}])

        def get_next(self):
            return next(self.data, None)

    qop = tmp_path / "qop.onnx"
    quantize_static(str(path), str(qop), Reader(), quant_format=QuantFormat.QOperator)
    with pytest.raises(QuantizationError, match="QLinearConv, a QOperator-format op; export QDQ instead"):
        quantize_model(qop, calibration_data("conv", 2))


def test_already_quantized_model_is_refused(quantized, tmp_path):
    path = tmp_path / "q.onnx"
    onnx.save(quantized["dense"][2], str(path))
    with pytest.raises(QuantizationError, match="is already quantized"):
        quantize_model(path, calibration_data("dense", 2))


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        quantize_model(tmp_path / "none.onnx", np.zeros((1, 40), np.float32))
