"""Post-training static int8 quantization of a float ONNX or .pt2 model into QDQ ONNX.

The scheme is TFLite's, so that the result runs bit-exactly on TFLite Micro's integer kernels:

- weights: int8, symmetric (zero point 0), one scale per output channel, ``max|w| / 127``
  (values in [-127, 127]); ``DequantizeLinear(w_q, scale, 0, axis=out-channel axis)``;
- biases: int32, zero point 0, scale ``input_scale * weight_scale[c]``;
- activations: int8, one scale and zero point per tensor, from the min and max seen over the
  calibration samples, widened to include 0: ``scale = (max - min) / 255``,
  ``zero_point = round(-128 - min / scale)``;
- BatchNormalization after a Conv is folded into it first; a Relu or Clip right after a Conv,
  Gemm, MatMul or Add is fused: only its output is quantized, giving the standard pattern
  ``DQ(x) -> Conv(DQ(w), DQ(b)) -> Relu -> Q``;
- max pool, average pool, flatten, reshape, pad and a Clip that is not fused keep their input's
  quantization (TFLite's int8 kernels require it); a Relu that is not fused gets its own;
- a MatMul over tokens with a constant 2-D weight and a bias Add after it (a Linear on [.., T, C],
  as torch exports it) is one dense layer: int8 weights per output channel, an int32 bias, only the
  Add's output quantized (TFLite's FULLY_CONNECTED with keep_num_dims); a MatMul of two activations
  (attention's Q.K^T and scores.V) has both inputs and its output quantized (TFLite's BATCH_MATMUL);
- GELU as torch exports it (``x * (erf(x / sqrt 2) + 1) * 0.5``) is one op: only its input and
  output are quantized (TFLite's int8 GELU is a lookup table of the whole function);
- Sigmoid and Softmax outputs get scale 1/256, zero point -128 and Tanh outputs 1/128, 0, the
  fixed output quantization of TFLite's int8 LOGISTIC, SOFTMAX and TANH (as TFLite's converter).

Only the ONNX graph is rewritten: a .pt2 program is first exported to ONNX.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvmnas.errors import CalibrationError, ModelLoadError, QuantizationError
from tvmnas.quant.qgraph import dense_bias_add, fold_constants, load_onnx, match_gelu, reject_qoperator, tflite_round

WEIGHTED_OPS = {"Conv", "Gemm", "MatMul"}
FUSING_OPS = WEIGHTED_OPS | {"Add"}
# outputs quantized as TFLite's int8 kernels require (scale, zero point), whatever the calibration says
FIXED_OUTPUT_QUANT = {"Sigmoid": (np.float32(1.0 / 256.0), -128), "Softmax": (np.float32(1.0 / 256.0), -128),
                      "Tanh": (np.float32(1.0 / 128.0), 0)}
# Ops whose output keeps the input's quantization (TFLite's int8 kernels require it; a Clip here
# is one that follows no conv, dense or add: TFLite Micro's int8 RELU6 only clamps).
SAME_QUANT_OPS = {"MaxPool", "AveragePool", "Flatten", "Reshape", "Clip", "Pad"}


def load_calibration(calibration: np.ndarray | str | Path) -> np.ndarray:
    """The calibration array itself, or loaded from a .npy file (CalibrationError if it cannot be)."""
    if isinstance(calibration, np.ndarray):
        return calibration
    path = Path(calibration)
    if not path.is_file():
        raise CalibrationError(f"calibration file '{path}' does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise CalibrationError(f"calibration file '{path}' is not a .npy array: {err}") from None
    if not isinstance(data, np.ndarray):
        raise CalibrationError(f"calibration file '{path}' holds several arrays; give one .npy array")
    return data


def _program_module(program):
    """The module of a torch.export program, wrapped so the TorchScript ONNX exporter can trace it
    (it switches the model to eval mode, which an exported program's module refuses; the
    program is already in inference form)."""
    import torch

    class ProgramModule(torch.nn.Module):
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def train(self, mode: bool = True) -> "ProgramModule":
            return self

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x)

    return ProgramModule(program.module())


def _load_float_model(model_path: str | Path) -> onnx.ModelProto:
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"model file '{path}' does not exist")
    if path.suffix.lower() == ".onnx":
        return load_onnx(path)
    if path.suffix.lower() == ".pt2":
        import torch

        from tvmnas.model_file import export_onnx

        try:
            program = torch.export.load(str(path))
        except Exception as err:  # torch raises many types for a bad archive
            raise ModelLoadError(f"'{path}' is not a torch.export program: {str(err).splitlines()[0]}") from None
        placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
        if len(placeholders) != 1:
            raise QuantizationError(f"'{path}' has {len(placeholders)} inputs; quantization takes one-input models")
        shape = tuple(int(d) for d in placeholders[0].meta["val"].shape)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_onnx(_program_module(program), shape, Path(tmp) / "model.onnx")
            return onnx.load(str(onnx_path))
    raise ModelLoadError(f"'{path}': quantization reads .onnx or .pt2 models, not '{path.suffix}'")


def _fold_batch_norm(model: onnx.ModelProto) -> None:
    """Fold every BatchNormalization that directly follows a Conv with constant weights into it."""
    g = model.graph
    init = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    producer = {o: n for n in g.node for o in n.output}
    graph_outputs = {o.name for o in g.output}
    removed = []
    for bn in g.node:
        if bn.op_type != "BatchNormalization":
            continue
        conv = producer.get(bn.input[0])
        if (conv is None or conv.op_type != "Conv" or consumers.get(conv.output[0]) != 1
                or conv.output[0] in graph_outputs or not all(i in init for i in bn.input[1:5])
                or conv.input[1] not in init):
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(init[i]).astype(np.float64) for i in bn.input[1:5])
        w = numpy_helper.to_array(init[conv.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(init[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0]))
        k = gamma / np.sqrt(var + eps)
        w_new = (w * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        b_new = ((b - mean) * k + beta).astype(np.float32)
        wn, bn_name = conv.input[1] + "_bnfold", bn.output[0] + "_bias"
        g.initializer.extend([numpy_helper.from_array(w_new, wn), numpy_helper.from_array(b_new, bn_name)])
        del conv.input[1:]
        conv.input.extend([wn, bn_name])
        conv.output[0] = bn.output[0]
        removed.append(bn)
    for bn in removed:
        g.node.remove(bn)


def _fold_pad(model: onnx.ModelProto) -> None:
    """Fold every zero-valued constant Pad of the spatial axes that only a Conv reads into that
    Conv's pads (TFLite's converters do the same: the conv pads with the input zero point)."""
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    removed = []
    for pad in g.node:
        if pad.op_type != "Pad" or pad.output[0] in graph_outputs or len(consumers.get(pad.output[0], [])) != 1:
            continue
        conv = consumers[pad.output[0]][0]
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        value = init.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        if (conv.op_type != "Conv" or conv.input[0] != pad.output[0] or attrs.get("mode", b"constant") != b"constant"
                or len(pad.input) < 2 or pad.input[1] not in init or value is None or np.any(value != 0)
                or (len(pad.input) > 3 and pad.input[3]) or conv_attrs.get("auto_pad", b"NOTSET") != b"NOTSET"):
            continue
        pads = [int(p) for p in init[pad.input[1]].reshape(-1)]
        rank = len(pads) // 2
        spatial = rank - 2
        if pads[0] or pads[1] or pads[rank] or pads[rank + 1] or spatial < 1:
            continue
        old = list(conv_attrs.get("pads", [0] * 2 * spatial))
        new = [old[i] + pads[2 + i] for i in range(spatial)] + [old[spatial + i] + pads[rank + 2 + i] for i in range(spatial)]
        for a in list(conv.attribute):
            if a.name == "pads":
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        removed.append(pad)
    for pad in removed:
        g.node.remove(pad)


def _split_to_slices(model: onnx.ModelProto) -> None:
    """Write each Split with constant sizes as one Slice per output (the same values): every int8
    op, float islands included, has one output."""
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    shapes = {}
    for vi in list(onnx.shape_inference.infer_shapes(model).graph.value_info) + list(g.input):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    new_nodes = []
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type != "Split" or n.input[0] not in shapes:
            new_nodes.append(n)
            continue
        rank = len(shapes[n.input[0]])
        axis = int(attrs.get("axis", 0)) % rank
        if len(n.input) > 1 and n.input[1]:
            if n.input[1] not in init:
                new_nodes.append(n)
                continue
            sizes = [int(v) for v in init[n.input[1]].reshape(-1)]
        else:
            total, parts = shapes[n.input[0]][axis], len(n.output)
            sizes = [-(-total // parts)] * parts
            sizes[-1] = total - sum(sizes[:-1])
        start = 0
        for i, (out, size) in enumerate(zip(n.output, sizes)):
            prefix = f"{n.name or n.output[0]}_slice{i}"
            for suffix, value in (("starts", start), ("ends", start + size), ("axes", axis)):
                g.initializer.append(numpy_helper.from_array(np.array([value], np.int64), f"{prefix}_{suffix}"))
            new_nodes.append(helper.make_node("Slice", [n.input[0], f"{prefix}_starts", f"{prefix}_ends", f"{prefix}_axes"],
                                              [out], name=prefix))
            start += size
    del g.node[:]
    g.node.extend(new_nodes)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    g = model.graph
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    inputs = [vi for vi in g.input if vi.name in used or vi.name not in {t.name for t in model.graph.initializer}]
    del g.input[:]
    g.input.extend(inputs)


def _activation_ranges(model: onnx.ModelProto, names: list[str], data: np.ndarray, input_name: str) -> dict[str, tuple[float, float]]:
    """Min and max of each named float tensor over the calibration samples (onnxruntime, CPU)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for sample in data:
        outs = sess.run(names, {input_name: sample[None].astype(np.float32)})
        for n, v in zip(names, outs):
            lo[n] = min(lo[n], float(v.min()))
            hi[n] = max(hi[n], float(v.max()))
    return {n: (lo[n], hi[n]) for n in names}


def activation_qparams(lo: float, hi: float) -> tuple[np.float32, int]:
    """TFLite-style asymmetric int8 (scale, zero point) for a range, widened to include 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0.0:
        return np.float32(1.0), 0
    scale = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(tflite_round(-128.0 - lo / float(scale)), -128, 127))
    return scale, zp


def weight_qparams(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric int8 weights: (int8 values in [-127, 127], float32 scales)."""
    moved = np.moveaxis(w.astype(np.float64), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(tflite_round(w / scale.reshape(shape).astype(np.float64)), -127, 127).astype(np.int8)
    return q, scale


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    floats = set()
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            floats.add(vi.name)
    return floats


def quantize_model(model_path: str | Path, calibration: np.ndarray | str | Path) -> onnx.ModelProto:
    """Post-training static int8 quantization: a float ``.onnx`` / ``.pt2`` model to QDQ ONNX.

    ``calibration``: float32 samples ``(N, *input_shape[1:])`` with N >= 1 (or a .npy file of
    them), run through the float model to find each activation's range. One-input models.
    Raises CalibrationError for missing or wrongly shaped calibration data, QuantizationError
    for QOperator or already-quantized models.
    """
    data = load_calibration(calibration)
    model = _load_float_model(model_path)
    reject_qoperator(model)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            raise QuantizationError(f"'{model_path}' is already quantized (node '{node.name or node.output[0]}' is {node.op_type})")
    init_names = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in init_names]
    if len(inputs) != 1:
        raise QuantizationError(f"'{model_path}' has {len(inputs)} inputs; quantization takes one-input models")
    in_vi = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in in_vi.type.tensor_type.shape.dim]
    if any(d is None for d in dims[1:]) or not dims:
        raise QuantizationError(f"input '{in_vi.name}' of '{model_path}' has no static shape {dims}")
    if data.ndim != len(dims) or tuple(data.shape[1:]) != tuple(dims[1:]):
        expected = "(" + ", ".join(["N"] + [str(d) for d in dims[1:]]) + ")"
        raise CalibrationError(
            f"calibration array has shape {tuple(data.shape)}; expected {expected} for input '{in_vi.name}'")
    if data.shape[0] < 1:
        raise CalibrationError(f"calibration array has {data.shape[0]} samples; at least 1 is needed")
    if not np.issubdtype(data.dtype, np.floating) or not np.all(np.isfinite(data)):
        raise CalibrationError(f"calibration array must be finite floats, got {data.dtype}")
    model = prepare_float_graph(model)
    return insert_qdq(model, in_vi.name, lambda names: _activation_ranges(model, names, data, in_vi.name))


def prepare_float_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float graph as the quantizer reads it: opset 13 or later, constants evaluated,
    BatchNormalization folded into the Conv before it, each Split as Slices, unused initializers dropped."""
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < 13:
            model = onnx.version_converter.convert_version(model, 13)
    fold_constants(model)
    _fold_batch_norm(model)
    _fold_pad(model)
    _split_to_slices(model)
    _drop_unused_initializers(model)
    return model


def bias_qparams(b: np.ndarray, in_scale: float, w_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias values and their float32 scales ``input_scale * weight_scale[c]`` (zero point 0)."""
    b_scale = (np.float32(in_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
    q = np.clip(tflite_round(np.asarray(b).astype(np.float64) / b_scale.astype(np.float64)), -(2**31), 2**31 - 1)
    return q.astype(np.int32), b_scale


def insert_qdq(model: onnx.ModelProto, input_name: str,
               ranges: Callable[[list[str]], dict[str, tuple[float, float]]],
               weights: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> onnx.ModelProto:
    """The QDQ model of a prepared float graph (:func:`prepare_float_graph`): weights and biases
    quantized as above, each activation from its (min, max) range as ``ranges(names)`` gives it
    (post-training: measured on calibration samples; quantization-aware training: learned).

    weights: initializer name -> (int8 values, float32 per-channel scales) used for that weight
    instead of :func:`weight_qparams` of its float values (the bias follows the given scales); a
    dynamic bundle's configurations read slices of one int8 tensor this way (tvmnas.dynamic.quantize).
    """
    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    floats = _float_tensors(model)
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    outputs = {o.name for o in g.output}

    def weight_2d(n: onnx.NodeProto) -> bool:
        return len(n.input) > 1 and n.input[1] in init and init[n.input[1]].ndim == 2

    # dense layers over tokens: MatMul -> Add(bias), the MatMul's output not quantized
    bias_adds: dict[str, tuple[onnx.NodeProto, int]] = {}
    for n in g.node:
        if n.op_type == "MatMul" and weight_2d(n) and n.output[0] not in outputs:
            channels = init[n.input[1]].shape[1]
            found_bias = dense_bias_add(n, consumers, lambda name, c=channels: name in init
                                        and init[name].ndim == 1 and init[name].shape[0] == c)
            if found_bias is not None:
                bias_adds[n.output[0]] = found_bias
    # GELU patterns: the tensors inside are not quantized
    inside_gelu: set[str] = set()
    for n in g.node:
        gelu = match_gelu(n, producer, lambda name: init.get(name))
        if gelu is not None and not any(o in outputs for m in gelu[1] for o in m.output):
            inside_gelu.update(m.output[0] for m in gelu[1])

    # Activation tensors to quantize, skipping those a fused Relu/Clip consumes.
    acts: list[str] = [input_name]
    for n in g.node:
        if n.op_type == "Constant":
            continue
        for o in n.output:
            if o not in floats or o in init or o in bias_adds or o in inside_gelu:
                continue
            users = consumers.get(o, [])
            if not users and o not in {x.name for x in g.output}:  # read by nothing (a GRU's last state)
                continue
            fused = (n.op_type in FUSING_OPS and len(users) == 1 and users[0].op_type in ("Relu", "Clip")
                     and o not in {x.name for x in g.output})
            if not fused:
                acts.append(o)
    found = ranges(list(acts))
    qp: dict[str, tuple[np.float32, int]] = {}
    for a in acts:  # graph order: a same-quantization op's input is decided before it
        p = producer.get(a)
        if p is not None and p.op_type in SAME_QUANT_OPS and p.input[0] in qp:
            qp[a] = qp[p.input[0]]
        elif p is not None and p.op_type in FIXED_OUTPUT_QUANT:
            qp[a] = FIXED_OUTPUT_QUANT[p.op_type]
        else:
            qp[a] = activation_qparams(*found[a])

    new_init: list[onnx.TensorProto] = []
    new_nodes: list[onnx.NodeProto] = []
    rename: dict[str, str] = {}  # float tensor -> its dequantized copy, read by consumers

    def const(name: str, value: np.ndarray) -> str:
        new_init.append(numpy_helper.from_array(value, name))
        return name

    def qdq(a: str) -> list[onnx.NodeProto]:
        s, z = qp[a]
        sn, zn = const(a + "_scale", np.array(s, np.float32)), const(a + "_zero_point", np.array(z, np.int8))
        src = a + "_float" if a in outputs else a
        dq_out = a if a in outputs else a + "_dq"
        if a not in outputs:
            rename[a] = dq_out
        return [helper.make_node("QuantizeLinear", [src, sn, zn], [a + "_q"], name=a + "_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [a + "_q", sn, zn], [dq_out], name=a + "_DequantizeLinear")]

    def dq_weight(node: onnx.NodeProto, idx: int, axis: int) -> None:
        name = node.input[idx]
        if weights is not None and name in weights:
            q, s = weights[name]
            if q.shape != init[name].shape or q.dtype != np.int8 or s.shape != (q.shape[axis],):
                raise QuantizationError(f"given int8 weight '{name}' has shape {q.shape} and {s.shape} scales; "
                                        f"the float weight is {init[name].shape}, channels on axis {axis}")
        else:
            q, s = weight_qparams(init[name], axis)
        qn = const(name + "_quantized", q)
        sn = const(name + "_scale", s)
        zn = const(name + "_zero_point", np.zeros(s.shape, np.int8))
        new_nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [name + "_dq"], name=name + "_DequantizeLinear", axis=axis))
        node.input[idx] = name + "_dq"
        return s

    def dq_bias(node: onnx.NodeProto, idx: int, in_scale: np.float32, w_scale: np.ndarray) -> None:
        name = node.input[idx]
        q, b_scale = bias_qparams(init[name], in_scale, w_scale)
        qn, sn = const(name + "_quantized", q), const(name + "_scale", b_scale)
        zn = const(name + "_zero_point", np.zeros(q.shape, np.int32))
        new_nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [name + "_dq"], name=name + "_DequantizeLinear", axis=0))
        node.input[idx] = name + "_dq"

    # constant operands of an add or concat (a position embedding, a class token): int8 constants,
    # quantized over their own range (TFLite's converter makes them int8 constant tensors)
    bias_of = {add.output[0] for add, _ in bias_adds.values()}
    const_acts: list[str] = []
    for n in g.node:
        if n.op_type in ("Add", "Concat") and n.output[0] not in bias_of and n.output[0] not in inside_gelu:
            for name in n.input:
                if (name in init and name not in qp and init[name].dtype == np.float32
                        and any(i not in init for i in n.input)):
                    if n.op_type == "Concat" and n.output[0] in qp:  # TFLite's CONCATENATION: as the output
                        qp[name] = qp[n.output[0]]
                    else:
                        qp[name] = activation_qparams(float(init[name].min()), float(init[name].max()))
                    const_acts.append(name)
    for name in const_acts:
        new_nodes.extend(qdq(name))
    quantized = set(acts)
    pending_bias: dict[str, tuple[int, np.float32, np.ndarray]] = {}  # Add node -> (bias index, scales)
    new_nodes.extend(qdq(input_name))
    for n in g.node:
        node = onnx.NodeProto()
        node.CopyFrom(n)
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        if (n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in init
                and (n.op_type == "Conv" or init[n.input[1]].ndim == 2)):
            x = n.input[0]
            if x not in qp:
                raise QuantizationError(f"input '{x}' of {n.op_type} node '{n.name}' is not a quantized activation")
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Conv":
                w_axis = 0
            elif n.op_type == "Gemm":
                w_axis = 0 if attrs.get("transB", 0) else 1
            else:
                w_axis = 1
            w_scale = dq_weight(node, 1, w_axis)
            bias_idx = 2 if n.op_type in ("Conv", "Gemm") else None
            if bias_idx is not None and len(n.input) > 2 and n.input[2] in init:
                dq_bias(node, 2, qp[x][0], w_scale)
            if n.output[0] in bias_adds:
                add, idx = bias_adds[n.output[0]]
                pending_bias[add.output[0]] = (idx, qp[x][0], w_scale)
        if n.output and n.output[0] in pending_bias:
            idx, in_scale, w_scale = pending_bias[n.output[0]]
            dq_bias(node, idx, in_scale, w_scale)
        for i, o in enumerate(node.output):
            if o in outputs and o in quantized:
                node.output[i] = o + "_float"
        new_nodes.append(node)
        for o in n.output:
            if o in quantized:
                new_nodes.extend(qdq(o))
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_init)
    _drop_unused_initializers(model)
    del g.value_info[:]
    onnx.checker.check_model(model)
    return model
