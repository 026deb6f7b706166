"""Integer-only reference interpreter for int8 QDQ ONNX models, with TFLite Micro's semantics.

Every operator runs as TFLite's int8 reference kernels do (checked bit for bit against the
tflite-micro interpreter in tests/test_quant_reference.py), so it is what the generated C must
equal:

- conv / depthwise conv / dense (over the last axis, a [.., T, C] input being T rows): ``sum(w * (x - x_zp))`` in int32 (padding contributes nothing,
  as if padded with the input zero point), plus the int32 bias, requantized per output channel by
  :func:`fixed_point.requantize` with multipliers from :func:`fixed_point.conv_multipliers`;
  a fused Relu/ReLU6 is the requantize clamp.
- batch_matmul (two int8 activations, e.g. attention's Q.K^T and scores.V): TFLite Micro's
  BATCH_MATMUL, ``sum((a - zp_a) * (b - zp_b))`` in int32, requantized with the multiplier of
  ``float32(s_a * s_b) / s_out`` (:func:`fixed_point.batch_matmul_multiplier`).
- add: TFLite's rescale (inputs shifted left 20 bits, each scaled by its own multiplier, the sum
  scaled to the output), :func:`fixed_point.add_params`.
- mul (two int8 tensors, broadcasting): TFLite's MUL, ``(a - zp_a) * (b - zp_b)`` requantized
  with the multiplier of ``s_a * s_b / s_out`` (:func:`fixed_point.mul_multiplier`).
- average pool: the raw int8 values summed over the in-bounds window and divided with
  :func:`fixed_point.rounding_average`; max pool: the max; both keep the input's quantization.
- mean: the int32 sum less ``zp_in * count``, requantized with the multiplier of
  ``in_scale / out_scale`` with ``1/count`` folded in, as TFLite Micro's ``QuantizedMeanOrSum``
  does (whether or not input and output share their quantization).
- reshape / flatten: the int8 values unchanged (same quantization), requantized otherwise.
- relu (a Relu/Clip on its own): ``zp_out + MBQM(x - zp_in)`` with the multiplier of
  ``in_scale / out_scale``, clamped to the activation range (TFLite Micro's ``ReluQuantized``).
- softmax (over the last axis, output scale 1/256, zero point -128): TFLite Micro's int8 SOFTMAX
  (gemmlowp exp of the Q5.26 difference from the row maximum, a Q12.19 sum, GetReciprocal),
  passes/activation_tables.py.
- layer_norm (over the last axis, constant scale and bias): TFLite has no int8 LayerNorm; tvmnas's
  integer kernel (int64 sums, a normalised integer square root, per-channel fixed-point affine),
  passes/int8_layer_norm.py, the same integers as the C.
- pad: a constant Pad keeping its input's quantization, padded with the quantized value (TFLite's PAD).
- lut (Sigmoid, Tanh, HardSwish, GELU): TFLite Micro's int8 LOGISTIC / TANH / HARD_SWISH / GELU, evaluated
  for all 256 inputs by passes/activation_tables.py and looked up.
- float islands (ops with no integer form, such as a Softmax over another axis, or a Sigmoid whose output is not
  quantized as TFLite's LOGISTIC requires): dequantized,
  run in float32 by onnx's reference evaluator, quantized as ONNX QuantizeLinear does (ties to
  even). These are not TFLite semantics: TFLite has int8 kernels for them.
- concat: inputs with the output's quantization are copied, others requantized with a Q31
  multiplier ``in_scale / out_scale``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tvmnas.errors import QuantizationError
from tvmnas.passes.activation_tables import softmax_rows
from tvmnas.passes.int8_layer_norm import layer_norm_rows
from tvmnas.passes.fixed_point import (
    add_params,
    batch_matmul_multiplier,
    conv_multipliers,
    mean_multiplier,
    mul_multiplier,
    multiply_by_quantized_multiplier,
    requantize,
    rescale_multiplier,
    rounding_average,
)
from tvmnas.quant.qgraph import QGraph, QOp, QTensor, load_onnx, read_qdq


def quantize_input(x: np.ndarray, t: QTensor) -> np.ndarray:
    """Float to int8 as ONNX QuantizeLinear does it (round half to even, then saturate)."""
    q = np.rint(np.asarray(x, np.float32) / np.float32(t.scale)) + t.zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, t: QTensor) -> np.ndarray:
    """int8 to float32: ``scale * (q - zero_point)``."""
    return (np.float32(t.scale) * (q.astype(np.float32) - np.float32(t.zero_point))).astype(np.float32)


def _pad(x: np.ndarray, pads: tuple[int, int, int, int], value: int) -> np.ndarray:
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def _windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], dilations=(1, 1)) -> np.ndarray:
    """(N, C, OH, OW, kh, kw) views of the windows of an NCHW array."""
    kh, kw = kernel
    dh, dw = dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    v = np.lib.stride_tricks.sliding_window_view(x, (eh, ew), axis=(2, 3))
    return v[:, :, :: strides[0], :: strides[1], ::dh, ::dw]


def _conv(op: QOp, x: np.ndarray, tin: QTensor, tout: QTensor) -> np.ndarray:
    a = op.attrs
    if x.ndim == 3:  # a 1-D conv, read as a 2-D one over a single row
        x = x[:, :, None, :]
    xs = x.astype(np.int64) - tin.zero_point
    xs = _pad(xs, a["pads"], 0)
    w = op.weight.astype(np.int64)
    o, cig, kh, kw = w.shape
    win = _windows(xs, (kh, kw), a["strides"], a["dilations"])  # N, C, OH, OW, kh, kw
    g = a["group"]
    og = o // g
    accs = []
    for gi in range(g):
        wg = w[gi * og:(gi + 1) * og]
        xg = win[:, gi * cig:(gi + 1) * cig]
        accs.append(np.einsum("nchwij,ocij->nohw", xg, wg, optimize=True))
    acc = np.concatenate(accs, axis=1) + op.bias.astype(np.int64)[None, :, None, None]
    _check_int32(acc, op)
    m, s = conv_multipliers(tin.scale, op.weight_scale, tout.scale)
    return requantize(acc, m, s, tout.zero_point, *op.act, axis=1)


def _dense(op: QOp, x: np.ndarray, tin: QTensor, tout: QTensor) -> np.ndarray:
    """TFLite's FULLY_CONNECTED over the last axis (keep_num_dims: a [.., T, C] input is T rows)."""
    xs = x.reshape(-1, op.weight.shape[1]).astype(np.int64) - tin.zero_point
    acc = xs @ op.weight.astype(np.int64).T + op.bias.astype(np.int64)
    _check_int32(acc, op)
    m, s = conv_multipliers(tin.scale, op.weight_scale, tout.scale)
    return requantize(acc, m, s, tout.zero_point, *op.act, axis=-1)


def _batch_matmul(op: QOp, a: np.ndarray, b: np.ndarray, ta: QTensor, tb: QTensor, tout: QTensor) -> np.ndarray:
    """TFLite Micro's int8 BATCH_MATMUL (kernels/batch_matmul.cc, reference_ops::BatchMatMul<int8_t,
    int32_t>): ``sum((a - zp_a) * (b - zp_b))`` in int32 over the shared axis, batch axes
    broadcast, requantized by ``float32(s_a * s_b) / s_out`` (no fused activation)."""
    acc = np.matmul(a.astype(np.int64) - ta.zero_point, b.astype(np.int64) - tb.zero_point)
    _check_int32(acc, op)
    m, s = batch_matmul_multiplier(ta.scale, tb.scale, tout.scale)
    return requantize(acc, m, s, tout.zero_point, *op.act)


def _add(op: QOp, a: np.ndarray, b: np.ndarray, ta: QTensor, tb: QTensor, tout: QTensor) -> np.ndarray:
    p = add_params(ta.scale, tb.scale, tout.scale)
    sa = (a.astype(np.int64) - ta.zero_point) * (1 << p["left_shift"])
    sb = (b.astype(np.int64) - tb.zero_point) * (1 << p["left_shift"])
    ra = multiply_by_quantized_multiplier(sa, p["input1_multiplier"], p["input1_shift"]).astype(np.int64)
    rb = multiply_by_quantized_multiplier(sb, p["input2_multiplier"], p["input2_shift"]).astype(np.int64)
    return requantize(ra + rb, p["output_multiplier"], p["output_shift"], tout.zero_point, *op.act)


def _mul(op: QOp, a: np.ndarray, b: np.ndarray, ta: QTensor, tb: QTensor, tout: QTensor) -> np.ndarray:
    """TFLite's int8 MUL: (a - zp_a) * (b - zp_b) requantized by in1_scale * in2_scale / out_scale."""
    m, s = mul_multiplier(ta.scale, tb.scale, tout.scale)
    product = (a.astype(np.int64) - ta.zero_point) * (b.astype(np.int64) - tb.zero_point)
    return requantize(product, m, s, tout.zero_point, *op.act)


def _same_quant(op: QOp, tin: QTensor, tout: QTensor, what: str) -> None:
    if (tin.scale, tin.zero_point) != (tout.scale, tout.zero_point):
        raise QuantizationError(
            f"{what} '{op.name}' changes the quantization ({tin.scale:g}, {tin.zero_point}) -> "
            f"({tout.scale:g}, {tout.zero_point}); TFLite's int8 {what} keeps the input's")


def _pool(op: QOp, x: np.ndarray, tin: QTensor, tout: QTensor) -> np.ndarray:
    a = op.attrs
    if x.ndim == 3:  # a 1-D pool, read as a 2-D one over a single row
        x = x[:, :, None, :]
    _same_quant(op, tin, tout, "average pool" if op.kind == "avgpool" else "max pool")
    if op.kind == "maxpool":
        xp = _pad(x.astype(np.int64), a["pads"], -(1 << 40))
        out = _windows(xp, a["kernel"], a["strides"]).max(axis=(-2, -1))
    else:
        xp = _pad(x.astype(np.int64), a["pads"], 0)
        inside = _pad(np.ones((1, 1) + x.shape[2:], np.int64), a["pads"], 0)
        acc = _windows(xp, a["kernel"], a["strides"]).sum(axis=(-2, -1))
        count = _windows(inside, a["kernel"], a["strides"]).sum(axis=(-2, -1))
        out = rounding_average(acc, count)
    return np.clip(out, *op.act).astype(np.int8)


def _mean(op: QOp, x: np.ndarray, tin: QTensor, tout: QTensor) -> np.ndarray:
    axes = op.attrs["axes"]
    count = int(np.prod([x.shape[i] for i in axes]))
    total = x.astype(np.int64).sum(axis=axes, keepdims=op.attrs["keepdims"])
    m, s = mean_multiplier(tin.scale, tout.scale, count)  # TFLite Micro's QuantizedMeanOrSum
    out = multiply_by_quantized_multiplier(total - tin.zero_point * count, m, s).astype(np.int64) + tout.zero_point
    return np.clip(out, *op.act).astype(np.int8)


def _requant_copy(x: np.ndarray, tin: QTensor, tout: QTensor, act: tuple[int, int], always: bool = False) -> np.ndarray:
    """x in tout's quantization: copied where they agree (unless `always`), else requantized."""
    if not always and (tin.scale, tin.zero_point) == (tout.scale, tout.zero_point):
        return np.clip(x, *act).astype(np.int8)
    m, s = rescale_multiplier(tin.scale, tout.scale)
    return requantize(x.astype(np.int64) - tin.zero_point, m, s, tout.zero_point, *act)


def _float_island(op: QOp, xs: list[np.ndarray], tins: list[QTensor], tout: QTensor) -> np.ndarray:
    """Dequantize, run the ONNX node in float32 (onnx's numpy reference evaluator), quantize."""
    from onnx.reference import ReferenceEvaluator

    node = op.attrs["node"]
    consts = op.attrs["constants"]
    feeds, inputs, k = {}, [], 0
    for i, name in enumerate(node.input):
        if i in consts:
            inputs.append(onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(consts[i].dtype), consts[i].shape))
            feeds[name] = consts[i]
        elif name:
            inputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, xs[k].shape))
            feeds[name] = dequantize(xs[k], tins[k])
            k += 1
    out = onnx.helper.make_tensor_value_info(node.output[op.attrs.get("output", 0)], onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph([node], "island", inputs, [out])
    y = ReferenceEvaluator(onnx.helper.make_model(graph)).run(None, feeds)[0]
    return np.clip(quantize_input(y, tout), *op.act).astype(np.int8)


def _check_int32(acc: np.ndarray, op: QOp) -> None:
    if acc.size and (acc.min() < -(2**31) or acc.max() > 2**31 - 1):
        raise QuantizationError(f"node '{op.name}': the int32 accumulator overflows")


def run_ops(graph: QGraph, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the integer ops on int8 NCHW inputs; every int8 tensor by name."""
    env: dict[str, np.ndarray] = {}
    for name, x in zip(graph.inputs, inputs):
        x = np.asarray(x)
        if x.dtype != np.int8 or x.shape != graph.tensors[name].shape:
            raise QuantizationError(
                f"input '{name}' must be int8 {graph.tensors[name].shape}, got {x.dtype} {x.shape}")
        env[name] = x
    env.update(graph.constants)
    for op in graph.ops:
        env[op.output] = run_op(graph, op, [env[i] for i in op.inputs])
    return env


def run_op(graph: QGraph, op: QOp, xs: list[np.ndarray]) -> np.ndarray:
    """One integer op on its int8 inputs (NCHW), its int8 output."""
    t = graph.tensors
    tin, tout = t[op.inputs[0]], t[op.output]
    if op.kind == "conv":
        y = _conv(op, xs[0], tin, tout)
    elif op.kind == "dense":
        y = _dense(op, xs[0], tin, tout)
    elif op.kind == "batch_matmul":
        y = _batch_matmul(op, xs[0], xs[1], tin, t[op.inputs[1]], tout)
    elif op.kind == "add":
        y = _add(op, xs[0], xs[1], tin, t[op.inputs[1]], tout)
    elif op.kind == "mul":
        y = _mul(op, xs[0], xs[1], tin, t[op.inputs[1]], tout)
    elif op.kind in ("avgpool", "maxpool"):
        y = _pool(op, xs[0], tin, tout)
    elif op.kind == "mean":
        y = _mean(op, xs[0], tin, tout)
    elif op.kind == "reshape":
        y = _requant_copy(xs[0], tin, tout, op.act)
    elif op.kind == "relu":
        y = _requant_copy(xs[0], tin, tout, op.act, always=True)
    elif op.kind == "layer_norm":
        y = layer_norm_rows(xs[0], tin.zero_point, tout.zero_point, op.attrs, *op.act)
    elif op.kind == "softmax":
        y = softmax_rows(xs[0], op.attrs["exp_table"])
    elif op.kind == "pad":
        y = np.pad(xs[0], op.attrs["pads"], constant_values=op.attrs["value"])
    elif op.kind == "lut":
        y = op.attrs["table"][xs[0].astype(np.int64) + 128]
    elif op.kind == "float":
        y = _float_island(op, xs, [t[n] for n in op.inputs], tout)
    elif op.kind == "concat":
        y = np.concatenate([_requant_copy(x, t[n], tout, op.act) for x, n in zip(xs, op.inputs)], axis=op.attrs["axis"])
    else:  # pragma: no cover - read_qdq only makes the kinds above
        raise AssertionError(op.kind)
    return y.reshape(tout.shape)


def per_op_deviation(model: str | Path | onnx.ModelProto, *inputs: np.ndarray) -> dict[str, int]:
    """Each op's largest int8 difference from onnxruntime's fake-quant run, given the same inputs.

    onnxruntime (graph optimizations off) runs the QDQ model in float with every int8 tensor
    exposed; each integer op of the reference is then fed onnxruntime's int8 inputs and its
    output compared with onnxruntime's. Per op, the two semantics agree within 1 LSB (float
    arithmetic and one rounding against int32 accumulation and TFLite's double rounding); run
    end to end, such differences can grow from layer to layer, so this is the check that
    separates an arithmetic error from accumulated rounding.
    """
    import onnxruntime as ort

    proto = load_onnx(model)
    graph = read_qdq(proto)
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    names = list(dict.fromkeys(list(graph.tensors)))
    for n in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT8, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = dict(zip(graph.input_names, (np.asarray(x, np.float32) for x in inputs)))
    env = dict(zip(names, sess.run(names, feeds)))
    return {op.name: int(np.abs(run_op(graph, op, [env[i] for i in op.inputs]).astype(np.int64)
                                - env[op.output].astype(np.int64)).max())
            for op in graph.ops}


class ReferenceModel:
    """An int8 QDQ ONNX model run with integer-only TFLite semantics.

    ``run_int8`` takes and returns int8 arrays; ``run`` takes float32 inputs (quantized as ONNX
    QuantizeLinear does) and returns dequantized float32 outputs.
    """

    def __init__(self, model: str | Path | onnx.ModelProto) -> None:
        self.graph = read_qdq(model)

    def run_int8(self, *inputs: np.ndarray) -> list[np.ndarray]:
        env = run_ops(self.graph, list(inputs))
        return [env[o] for o in self.graph.outputs]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        g = self.graph
        q = [quantize_input(x, g.tensors[n]) for x, n in zip(inputs, g.inputs)]
        return [dequantize(y, g.tensors[o]) for y, o in zip(self.run_int8(*q), g.outputs)]
