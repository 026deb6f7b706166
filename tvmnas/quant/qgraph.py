"""Read an int8 QDQ ONNX graph as a list of integer operators (the form TFLite executes).

A QDQ graph spells integer arithmetic as float ops between QuantizeLinear and DequantizeLinear:
``DQ(x) -> Conv(DQ(w), DQ(b)) -> [Relu|Clip] -> Q``. This module finds those patterns and gives
each one as a :class:`QOp` holding the int8 weights, int32 bias, per-channel weight scales, the
input and output quantization and the clamp of a fused activation. The integer reference
(:mod:`tvmnas.quant.reference`) executes the ops; the TFLite writer
(:mod:`tvmnas.quant.tflite_writer`) serialises the same ops, so both read one graph one way.

Activations stay in ONNX's NCHW layout. What the reading cannot express as an integer op (a float
op between quantized ones, a QOperator node) is rejected naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvmnas.errors import ModelLoadError, QuantizationError, UnsupportedOperatorError

QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearAveragePool",
                 "QLinearGlobalAveragePool", "QLinearConcat", "QLinearMul", "QLinearSigmoid",
                 "QLinearLeakyRelu", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}

COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "Add", "AveragePool", "MaxPool", "GlobalAveragePool",
               "ReduceMean", "Flatten", "Reshape", "Concat", "Pad", "Mul"}

# element-wise activations with an int8 TFLite kernel, run as a 256-entry table (passes/activation_tables.py)
LUT_OPS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hard_swish"}


@dataclass(frozen=True)
class QTensor:
    """An int8 activation: NCHW shape, scale and zero point (real = scale * (q - zero_point))."""

    name: str
    shape: tuple[int, ...]
    scale: np.float32
    zero_point: int


@dataclass
class QOp:
    """One integer operator.

    kind: conv, dense (over the last axis: a [.., T, C] input is T rows), batch_matmul (two int8
    activations, TFLite's BATCH_MATMUL), add, mul (two int8 tensors of one rank, broadcasting), avgpool, maxpool, mean, reshape, concat, relu (a Relu/Clip that
    follows no conv, dense or add: TFLite's RELU/RELU6 op, which may requantize), lut (Sigmoid,
    Tanh, HardSwish or GELU as TFLite's int8 LOGISTIC / TANH / HARD_SWISH / GELU: attrs["function"] and the
    256-entry attrs["table"] indexed by q + 128), softmax (over the last axis, TFLite's int8 SOFTMAX:
    attrs["exp_table"] the exp of each difference from the row maximum), layer_norm (over the last
    axis, passes/int8_layer_norm.py: attrs its integer constants eps, fg, g, b), pad (a constant Pad keeping its input's
    quantization: attrs["pads"] as (before, after) per axis, attrs["value"] the int8 pad value) or
    float (a
    float island: an op with no integer form, e.g. Softmax or Sigmoid, run in float32 between
    DequantizeLinear and QuantizeLinear; attrs hold the ONNX node and its constant inputs).
    inputs / output: names of int8 tensors (keys of :attr:`QGraph.tensors`).
    weight: int8, (O, I/group, kh, kw) for conv, (O, I) for dense; weight_scale: float32 (O,),
    symmetric (zero point 0). bias: int32 (O,), scale input_scale * weight_scale.
    act: the int8 clamp of a fused Relu/Clip; activation: "NONE", "RELU" or "RELU6" as TFLite
    fuses it (None where the clamp is no TFLite activation).
    attrs: strides, pads (top, left, bottom, right), dilations, group, kernel, axis.
    """

    kind: str
    name: str
    inputs: list[str]
    output: str
    weight: np.ndarray | None = None
    weight_scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    act: tuple[int, int] = (-128, 127)
    activation: str | None = "NONE"
    attrs: dict = field(default_factory=dict)


@dataclass
class QGraph:
    """The integer operators in execution order, the int8 tensors, and the graph's inputs/outputs."""

    ops: list[QOp]
    tensors: dict[str, QTensor]
    inputs: list[str]
    outputs: list[str]
    input_names: list[str]  # the ONNX (float) graph input names, in order
    output_names: list[str]
    # int8 tensors that are constants of the model (QuantizeLinear of an initializer, e.g. a
    # position embedding added to the tokens), their values quantized as ONNX QuantizeLinear does
    constants: dict[str, np.ndarray] = field(default_factory=dict)


def tflite_round(x: np.ndarray | float) -> np.ndarray:
    """``TfLiteRound`` / ``std::round``: halves away from zero (numpy's round is half to even)."""
    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def activation_range(kind: str, lo: float | None, hi: float | None, scale: np.float32, zero_point: int) -> tuple[int, int]:
    """TFLite's ``CalculateActivationRangeQuantized``: the int8 clamp of a fused activation.

    ``zero_point + round(f / scale)`` with the division in float32, as TFLite computes it.
    """
    def q(f: float) -> int:
        return int(zero_point + tflite_round(np.float32(f) / np.float32(scale)))

    act_min, act_max = -128, 127
    if lo is not None:
        act_min = max(act_min, q(lo))
    if hi is not None:
        act_max = min(act_max, q(hi))
    return act_min, act_max


def load_onnx(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """The ModelProto of a path or a proto; a missing or unreadable file is a ModelLoadError."""
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"model file '{path}' does not exist")
    try:
        return onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError and others
        raise ModelLoadError(f"'{path}' is not an ONNX model: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def reject_qoperator(model: onnx.ModelProto) -> None:
    """One line for QOperator ONNX (QLinearConv and friends): only QDQ is read."""
    for node in model.graph.node:
        if node.op_type in QOPERATOR_OPS:
            raise QuantizationError(
                f"node '{node.name or node.output[0]}' is {node.op_type}, a QOperator-format op; "
                "export QDQ instead (onnxruntime quantize_static(..., quant_format=QuantFormat.QDQ))")


def fold_constants(model: onnx.ModelProto) -> None:
    """Evaluate what does not depend on the input into initializers: Constant nodes, Shape of
    statically shaped tensors, and every node whose inputs are all constant (exporters build
    Clip bounds and reshape targets that way), in place; quantization nodes of constant weights
    stay. What is left computes on activations."""
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    shapes = {}
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep = []
    for n in g.node:
        values = None
        if n.op_type == "Constant" and n.attribute[0].name == "value":
            values = [numpy_helper.to_array(n.attribute[0].t)]
        elif n.op_type == "Shape" and n.input[0] in shapes and not n.attribute:
            values = [np.array(shapes[n.input[0]], np.int64)]
        elif (n.input and all((not i) or i in init for i in n.input) and not n.op_type.startswith("Random")
              and n.op_type not in ("QuantizeLinear", "DequantizeLinear")):
            feeds = {i: init[i] for i in n.input if i}
            inputs = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(init[i].dtype), init[i].shape) for i in feeds]
            outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in n.output]
            one = helper.make_model(helper.make_graph([n], "fold", inputs, outputs), opset_imports=model.opset_import)
            values = ReferenceEvaluator(one).run(None, feeds)
        if values is None:
            keep.append(n)
            continue
        for o, v in zip(n.output, values):
            init[o] = np.asarray(v)
            g.initializer.append(numpy_helper.from_array(init[o], o))
    del g.node[:]
    g.node.extend(keep)


class _Reader:
    def __init__(self, model: onnx.ModelProto) -> None:
        reject_qoperator(model)
        folded = onnx.ModelProto()
        folded.CopyFrom(model)
        fold_constants(folded)
        model = onnx.shape_inference.infer_shapes(folded)
        self.graph = model.graph
        self.init = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.init[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in list(self.graph.value_info) + list(self.graph.input) + list(self.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(d.dim_value for d in dims)
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.tensors: dict[str, QTensor] = {}
        self.alias: dict[str, str] = {}  # a second QuantizeLinear of one output -> the first
        self.constants: dict[str, np.ndarray] = {}

    # -- quantization parameters ------------------------------------------------------------
    def _qparams(self, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
        scale = np.asarray(self.init[node.input[1]], dtype=np.float32)
        zp = self.init[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros((), np.int8)
        if zp.dtype != np.int8:
            raise QuantizationError(
                f"node '{node.name or node.output[0]}' quantizes to {zp.dtype}; only int8 is supported")
        return scale, np.asarray(zp)

    def _add_tensor(self, q_node: onnx.NodeProto) -> str:
        name = q_node.output[0]
        if name not in self.tensors:
            scale, zp = self._qparams(q_node)
            if scale.size != 1:
                raise QuantizationError(f"activation '{name}' is quantized per channel; int8 activations are per tensor")
            shape = self.shapes.get(name) or self.shapes.get(q_node.input[0])
            if shape is None:
                raise QuantizationError(f"activation '{name}' has no static shape")
            self.tensors[name] = QTensor(name, shape, np.float32(scale.reshape(())), int(zp.reshape(())))
        return name

    def activation_in(self, float_name: str, node: onnx.NodeProto) -> str:
        """The int8 tensor behind a float input of `node` (it must come out of a DequantizeLinear)."""
        dq = self.producer.get(float_name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in self.init:
            raise QuantizationError(
                f"input '{float_name}' of {node.op_type} node '{node.name}' is not quantized "
                "(no DequantizeLinear of an int8 activation before it)")
        q = self.producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            raise QuantizationError(f"'{dq.input[0]}' feeding node '{node.name}' has no QuantizeLinear")
        # The DQ must read the tensor with the Q's own parameters.
        s_q, z_q = self._qparams(q)
        s_dq, z_dq = self._qparams(dq)
        if not (np.array_equal(s_q, s_dq) and np.array_equal(z_q, z_dq)):
            raise QuantizationError(f"DequantizeLinear '{dq.name}' reads '{dq.input[0]}' with other parameters than it was quantized with")
        name = self.alias.get(q.output[0]) or self._add_tensor(q)
        if q.input[0] in self.init and name not in self.constants:  # an int8 constant tensor
            t = self.tensors[name]
            value = np.asarray(self.init[q.input[0]], np.float32)
            if value.shape != t.shape:
                value = np.broadcast_to(value, t.shape)
            self.constants[name] = np.clip(np.rint(value / np.float32(t.scale)) + t.zero_point, -128, 127).astype(np.int8)
        return name

    def constant_in(self, float_name: str, node: onnx.NodeProto, dtype: type) -> tuple[np.ndarray, np.ndarray, int]:
        """(integer values, scales, axis) of a DequantizeLinear'd initializer."""
        dq = self.producer.get(float_name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in self.init:
            raise QuantizationError(
                f"constant '{float_name}' of {node.op_type} node '{node.name}' is not an int "
                "initializer behind a DequantizeLinear (float weights between quantized ops)")
        values = self.init[dq.input[0]]
        if values.dtype != dtype:
            raise QuantizationError(f"constant '{dq.input[0]}' of node '{node.name}' is {values.dtype}, expected {np.dtype(dtype)}")
        scale = np.asarray(self.init[dq.input[1]], np.float32)
        zp = np.asarray(self.init[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else np.zeros(())
        if np.any(zp != 0):
            raise QuantizationError(f"constant '{dq.input[0]}' of node '{node.name}' has a non-zero zero point; weights must be symmetric")
        axis = 1
        for a in dq.attribute:
            if a.name == "axis":
                axis = a.i
        return values, scale, axis

    def clip_bounds(self, a: onnx.NodeProto) -> tuple[str | None, tuple[float | None, float | None]]:
        """(TFLite activation name or None, (lo, hi)) of a Relu or Clip node."""
        if a.op_type == "Relu":
            return "RELU", (0.0, None)
        lo = float(self.init[a.input[1]]) if len(a.input) > 1 and a.input[1] else None
        hi = float(self.init[a.input[2]]) if len(a.input) > 2 and a.input[2] else None
        if lo is None and len(a.input) == 1:  # opset < 11 keeps the bounds as attributes
            attrs = _attrs(a)
            lo, hi = attrs.get("min"), attrs.get("max")
        return ("RELU6" if (lo, hi) == (0.0, 6.0) else "RELU" if (lo, hi) == (0.0, None) else None), (lo, hi)

    def output_of(self, node: onnx.NodeProto) -> tuple[str, str, tuple[float | None, float | None] | None]:
        """(int8 output name, activation kind, clip bounds) following [Relu|Clip] -> QuantizeLinear."""
        users = self.consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip"):
            return self._own_output(users[0], *self.clip_bounds(users[0]), what=node)
        return self._own_output(node, "NONE", (None, None))

    def _own_output(self, node: onnx.NodeProto, act: str | None, bounds: tuple,
                    what: onnx.NodeProto | None = None, index: int = 0) -> tuple[str, str | None, tuple]:
        """The int8 tensor that quantizes `node`'s output `index` (`what` names the op in errors)."""
        what = what or node
        name = node.output[index]
        users = self.consumers.get(name, [])
        node = what
        qs = [u for u in users if u.op_type == "QuantizeLinear"]
        if not qs:
            raise QuantizationError(f"output '{name}' of {node.op_type} node '{node.name}' is not quantized (no QuantizeLinear after it)")
        out = self._add_tensor(qs[0])
        for other in qs[1:]:
            twin = self._add_tensor(other)
            if (self.tensors[twin].scale, self.tensors[twin].zero_point) != (self.tensors[out].scale, self.tensors[out].zero_point):
                raise QuantizationError(f"output '{name}' of node '{node.name}' is quantized twice with different parameters")
            del self.tensors[twin]
            self.alias[twin] = out
        return out, act, bounds


def match_gelu(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto],
               constant) -> tuple[str, list[onnx.NodeProto]] | None:
    """(x, the pattern's other nodes) where `node` ends GELU as torch exports it before opset 20,
    ``Mul(Mul(x, Add(Erf(Div(x, sqrt(2))), 1)), 0.5)`` (operands of Mul and Add in either order);
    None otherwise. `constant(name)` gives a constant input's value or None."""
    def const_is(name: str, value: float) -> bool:
        c = constant(name)
        return c is not None and np.size(c) == 1 and bool(np.isclose(float(np.asarray(c).reshape(())), value, rtol=1e-6))

    def made_by(name: str, op: str) -> onnx.NodeProto | None:
        n = producer.get(name)
        return n if n is not None and n.op_type == op else None

    if node.op_type != "Mul" or len(node.input) != 2:
        return None
    for inner_name, half in (node.input, node.input[::-1]):
        inner = made_by(inner_name, "Mul")
        if inner is None or not const_is(half, 0.5):
            continue
        for x, gate in (inner.input, inner.input[::-1]):
            add = made_by(gate, "Add")
            if add is None:
                continue
            for erf_out, one in (add.input, add.input[::-1]):
                erf = made_by(erf_out, "Erf")
                div = None if erf is None else made_by(erf.input[0], "Div")
                if (erf is not None and div is not None and const_is(one, 1.0) and div.input[0] == x
                        and const_is(div.input[1], float(np.sqrt(np.float32(2.0))))):
                    return x, [div, erf, add, inner]
    return None


def dense_bias_add(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]],
                   is_bias) -> tuple[onnx.NodeProto, int] | None:
    """(the Add, its bias input index) where a MatMul's only reader adds a bias to it (a Linear
    over tokens, [.., T, C] x [C, D] + b, as torch exports it: MatMul then Add); None otherwise.
    `is_bias(name)` says whether an input is a constant bias for it."""
    users = consumers.get(node.output[0], [])
    if node.op_type != "MatMul" or len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    for idx, name in enumerate(add.input):
        other = add.input[1 - idx] if len(add.input) == 2 else None
        if other == node.output[0] and name != node.output[0] and is_bias(name):
            return add, idx
    return None


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads(node: onnx.NodeProto, spatial: int = 2) -> tuple[int, int, int, int]:
    """(top, left, bottom, right); a 1-D op's (begin, end) as (0, begin, 0, end)."""
    a = _attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise QuantizationError(f"node '{node.name}' uses auto_pad {a['auto_pad']!r}; export explicit pads")
    p = list(a.get("pads", [0] * 2 * spatial))
    if spatial == 1:
        return 0, p[0], 0, p[1]
    return p[0], p[1], p[2], p[3]


def ceil_mode_pads(in_shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: tuple[int, int],
                   strides: tuple[int, int], pads: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The (top, left, bottom, right) pads that give a ceil_mode pool's output size with floor
    division: ceil_mode's extra windows read padding after the input (never counted, never the max)."""
    t, l, b, r = pads
    (h, w), (oh, ow) = (in_shape[2:] if len(in_shape) == 4 else (1, in_shape[2])), \
        (out_shape[2:] if len(out_shape) == 4 else (1, out_shape[2]))
    b += max((oh - 1) * strides[0] + kernel[0] - (h + t + b), 0)
    r += max((ow - 1) * strides[1] + kernel[1] - (w + l + r), 0)
    return t, l, b, r


def read_qdq(model: str | Path | onnx.ModelProto) -> QGraph:
    """The integer operators of an int8 QDQ ONNX model, in graph order."""
    r = _Reader(load_onnx(model))
    g = r.graph
    ops: list[QOp] = []
    inputs: list[str] = []
    input_names: list[str] = []
    for vi in g.input:
        if vi.name in r.init:
            continue
        qs = [u for u in r.consumers.get(vi.name, []) if u.op_type == "QuantizeLinear"]
        if not qs:
            raise QuantizationError(f"graph input '{vi.name}' is not quantized (no QuantizeLinear reads it)")
        input_names.append(vi.name)
        inputs.append(r._add_tensor(qs[0]))
    gelu_ends: dict[str, str] = {}  # output of a GELU pattern's last Mul -> its input x
    fused: set[str] = set()  # outputs of nodes read as part of another op (GELU's inside, a dense layer's bias Add)
    for node in g.node:
        gelu = match_gelu(node, r.producer, r.init.get)
        inside = {m.output[0] for m in gelu[1]} | {node.output[0]} if gelu is not None else set()
        if gelu is not None and all(u.output[0] in inside for m in gelu[1] for u in r.consumers.get(m.output[0], [])):
            gelu_ends[node.output[0]] = gelu[0]
            fused.update(m.output[0] for m in gelu[1])
    for node in g.node:
        op = node.op_type
        if node.output and node.output[0] in fused:
            continue
        if node.output and node.output[0] in gelu_ends:
            ops.append(_gelu_op(r, node, gelu_ends[node.output[0]]))
            continue
        if op in ("Relu", "Clip"):
            src = r.producer.get(node.input[0])
            if src is None or src.op_type != "DequantizeLinear":
                continue  # fused into the op before it (read with that op)
            x = r.activation_in(node.input[0], node)
            out, act, bounds = r._own_output(node, *r.clip_bounds(node))
            ops.append(_make(r, "relu", node, [x], out, act, bounds, None, None, None, {}))
            continue
        if op in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            continue
        if op == "LayerNormalization":
            norm = _layer_norm_op(r, node)
            if norm is not None:
                ops.append(norm)
                continue
        if op == "Softmax":
            soft = _softmax_op(r, node)
            if soft is not None:
                ops.append(soft)
                continue
        if op in LUT_OPS:
            lut = _lut_op(r, node)
            if lut is not None:
                ops.append(lut)
                continue
        if op not in COMPUTE_OPS:
            ops.append(_float_island(r, node))
            continue
        a = _attrs(node)
        if op == "Conv":
            x = r.activation_in(node.input[0], node)
            w, ws, axis = r.constant_in(node.input[1], node, np.int8)
            out, act, bounds = r.output_of(node)
            o = w.shape[0]
            bias = np.zeros(o, np.int32)
            if len(node.input) > 2 and node.input[2]:
                bias = r.constant_in(node.input[2], node, np.int32)[0].astype(np.int32)
            spatial = w.ndim - 2
            if spatial not in (1, 2):
                raise QuantizationError(f"Conv '{node.name}' is {spatial}-D; int8 convolutions are 1-D or 2-D")
            attrs = {"strides": tuple(a.get("strides", (1,) * spatial)), "pads": _pads(node, spatial),
                     "dilations": tuple(a.get("dilations", (1,) * spatial)), "group": int(a.get("group", 1))}
            if spatial == 1:  # a 1-D conv is a 2-D one over a single row
                w = w[:, :, None, :]
                attrs.update(strides=(1,) + attrs["strides"], dilations=(1,) + attrs["dilations"], rows=1)
            ops.append(_make(r, "conv", node, [x], out, act, bounds, w, _per_channel(ws, o, axis, 0, node), bias, attrs))
        elif op in ("Gemm", "MatMul"):
            if node.input[1] in r.init:  # a float constant operand: no int8 weights, a float island
                ops.append(_float_island(r, node))
                continue
            weight_dq = r.producer.get(node.input[1])
            if op == "MatMul" and (weight_dq is None or weight_dq.op_type != "DequantizeLinear"
                                   or weight_dq.input[0] not in r.init):
                xs = [r.activation_in(i, node) for i in node.input]  # two activations: BATCH_MATMUL
                out, act, bounds = r.output_of(node)
                ops.append(_make(r, "batch_matmul", node, xs, out, act, bounds, None, None, None, {}))
                continue
            x = r.activation_in(node.input[0], node)
            w, ws, axis = r.constant_in(node.input[1], node, np.int8)
            bias_add = None
            if op == "MatMul":
                bias_add = dense_bias_add(node, r.consumers, lambda name: _is_int32_constant(r, name))
            if bias_add is not None:  # a dense layer over tokens: the Add after it holds the bias
                add, idx = bias_add
                fused.add(add.output[0])
                out, act, bounds = r.output_of(add)
            else:
                out, act, bounds = r.output_of(node)
            transposed = op == "Gemm" and a.get("transB", 0) == 1
            if op == "Gemm" and (a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
                raise QuantizationError(f"Gemm '{node.name}' uses transA/alpha/beta; only y = x W^T + b is read")
            w_oi = w if transposed else w.T
            ws = _per_channel(ws, w_oi.shape[0], axis, 0 if transposed else 1, node)
            bias = np.zeros(w_oi.shape[0], np.int32)
            if op == "Gemm" and len(node.input) > 2 and node.input[2]:
                bias = r.constant_in(node.input[2], node, np.int32)[0].astype(np.int32)
            if bias_add is not None:
                bias = r.constant_in(add.input[idx], add, np.int32)[0].astype(np.int32).reshape(-1)
                if bias.shape != (w_oi.shape[0],):
                    raise QuantizationError(f"bias of node '{add.name}' has {bias.size} values for {w_oi.shape[0]} channels")
            ops.append(_make(r, "dense", node, [x], out, act, bounds, np.ascontiguousarray(w_oi), ws, bias, {}))
        elif op == "Mul":
            if any(i in r.init or (r.producer.get(i) is not None and r.producer[i].op_type == "DequantizeLinear"
                                   and r.producer[i].input[0] in r.init) for i in node.input):
                ops.append(_float_island(r, node))  # a product with a constant: no int8 MUL of two tensors
                continue
            xs = [r.activation_in(i, node) for i in node.input]
            out, act, bounds = r.output_of(node)
            shapes = [r.tensors[x].shape for x in xs]
            if len(shapes[0]) != len(shapes[1]):
                ops.append(_float_island(r, node))
                continue
            ops.append(_make(r, "mul", node, xs, out, act, bounds, None, None, None, {}))
        elif op == "Add":
            xs = [r.activation_in(i, node) for i in node.input]
            out, act, bounds = r.output_of(node)
            ops.append(_make(r, "add", node, xs, out, act, bounds, None, None, None, {}))
        elif op in ("AveragePool", "MaxPool"):
            x = r.activation_in(node.input[0], node)
            out, act, bounds = r.output_of(node)
            spatial = len(a["kernel_shape"])
            if spatial not in (1, 2) or any(d != 1 for d in a.get("dilations", (1,) * spatial)):
                raise QuantizationError(f"{op} '{node.name}' is {spatial}-D or dilated; int8 pooling is 1-D or 2-D, undilated")
            pads = _pads(node, spatial)
            if op == "AveragePool" and a.get("count_include_pad", 0) and any(pads):
                raise QuantizationError(f"AveragePool '{node.name}' counts padding (count_include_pad=1); TFLite's int8 average pool does not")
            kernel, strides = tuple(a["kernel_shape"]), tuple(a.get("strides", (1,) * spatial))
            if spatial == 1:  # a 1-D pool is a 2-D one over a single row
                kernel, strides = (1,) + kernel, (1,) + strides
            if a.get("ceil_mode", 0):  # the extra windows of ceil_mode: padding after, never counted
                pads = ceil_mode_pads(r.tensors[x].shape, r.tensors[out].shape, kernel, strides, pads)
            attrs = {"kernel": kernel, "strides": strides, "pads": pads}
            kind = "avgpool" if op == "AveragePool" else "maxpool"
            ops.append(_make(r, kind, node, [x], out, act, bounds, None, None, None, attrs))
        elif op in ("GlobalAveragePool", "ReduceMean"):
            x = r.activation_in(node.input[0], node)
            out, act, bounds = r.output_of(node)
            axes = tuple(range(2, len(r.tensors[x].shape)))  # GlobalAveragePool: every spatial axis
            keep = True
            if op == "ReduceMean":
                axes_v = a.get("axes")
                if axes_v is None and len(node.input) > 1 and node.input[1]:
                    axes_v = r.init[node.input[1]].tolist()
                rank = len(r.tensors[x].shape)
                axes = tuple(sorted(int(v) % rank for v in axes_v))
                keep = bool(a.get("keepdims", 1))
            ops.append(_make(r, "mean", node, [x], out, act, bounds, None, None, None, {"axes": axes, "keepdims": keep}))
        elif op in ("Flatten", "Reshape"):
            x = r.activation_in(node.input[0], node)
            out, act, bounds = r.output_of(node)
            ops.append(_make(r, "reshape", node, [x], out, act, bounds, None, None, None, {}))
        elif op == "Concat":
            xs = [r.activation_in(i, node) for i in node.input]
            out, act, bounds = r.output_of(node)
            rank = len(r.tensors[out].shape)
            ops.append(_make(r, "concat", node, xs, out, act, bounds, None, None, None, {"axis": int(a["axis"]) % rank}))
        elif op == "Pad":
            ops.append(_pad_op(r, node, a))
    outputs: list[str] = []
    output_names: list[str] = []
    for vi in g.output:
        dq = r.producer.get(vi.name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in r.tensors:
            raise QuantizationError(f"graph output '{vi.name}' is not a DequantizeLinear of an int8 activation")
        outputs.append(dq.input[0])
        output_names.append(vi.name)
    return QGraph(ops, r.tensors, inputs, outputs, input_names, output_names, r.constants)


def _is_int32_constant(r: _Reader, name: str) -> bool:
    """Whether `name` is a DequantizeLinear of an int32 initializer (a quantized bias)."""
    dq = r.producer.get(name)
    return (dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in r.init
            and r.init[dq.input[0]].dtype == np.int32)


def _gelu_op(r: _Reader, node: onnx.NodeProto, x_float: str) -> QOp:
    """The exported GELU pattern ending at `node` as TFLite's int8 GELU: a 256-entry table of the
    float function between the input and output quantizations (passes/activation_tables.py)."""
    from tvmnas.passes.activation_tables import gelu_table

    x = r.activation_in(x_float, node)
    out, _act, _bounds = r._own_output(node, "NONE", (None, None))
    tin, tout = r.tensors[x], r.tensors[out]
    return QOp("lut", node.name or node.output[0], [x], out, activation="NONE",
               attrs={"function": "gelu", "table": gelu_table(tin.scale, tin.zero_point, tout.scale, tout.zero_point)})


def _float_island(r: _Reader, node: onnx.NodeProto) -> QOp:
    """A node with no integer operator, run in float between DequantizeLinear and QuantizeLinear.

    Its inputs must be int8 activations (through DequantizeLinear) or constants, its one output
    quantized; otherwise the node is named as not quantized.
    """
    inputs, consts = [], {}
    for i, name in enumerate(node.input):
        if not name:
            continue
        if name in r.init:
            consts[i] = r.init[name]
            continue
        dq = r.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in r.init:
            consts[i] = _dequantize_constant(r, dq)
            continue
        try:
            inputs.append(r.activation_in(name, node))
        except QuantizationError:
            raise UnsupportedOperatorError(
                node.op_type, node.name, f"its input '{name}' is not an int8 activation, so it cannot run "
                "as a float island between DequantizeLinear and QuantizeLinear") from None
    outputs = {o.name for o in r.graph.output}
    read = [i for i, o in enumerate(node.output) if o and (o in r.consumers or o in outputs)]
    if not inputs or len(read) != 1:  # one output read (a GRU's sequence or its last state, not both)
        raise UnsupportedOperatorError(node.op_type, node.name, "no int8 integer operator for it")
    out, act, bounds = r._own_output(node, "NONE", (None, None), index=read[0])
    q = QOp("float", node.name or node.output[0], inputs, out, activation=None,
            attrs={"node": node, "constants": consts, "output": read[0]})
    return q


def _pad_op(r: _Reader, node: onnx.NodeProto, a: dict) -> QOp:
    """A constant Pad that keeps its input's quantization: an int8 pad with the quantized pad value
    (TFLite's PAD); any other Pad runs as a float island."""
    x = r.activation_in(node.input[0], node)
    out, act, bounds = r._own_output(node, "NONE", (None, None))
    tin, tout = r.tensors[x], r.tensors[out]
    mode = a.get("mode", b"constant")
    pads = r.init.get(node.input[1]) if len(node.input) > 1 else None
    value = r.init.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.float32)
    if (mode not in (b"constant", "constant") or pads is None or value is None or (len(node.input) > 3 and node.input[3])
            or (tin.scale, tin.zero_point) != (tout.scale, tout.zero_point)):
        return _float_island(r, node)
    rank = len(tin.shape)
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    q = int(np.clip(np.rint(np.float32(np.asarray(value).reshape(())) / tout.scale) + tout.zero_point, -128, 127))
    return QOp("pad", node.name or node.output[0], [x], out, activation="NONE",
               attrs={"pads": [(pads[i], pads[i + rank]) for i in range(rank)], "value": q})


def _layer_norm_op(r: _Reader, node: onnx.NodeProto) -> QOp | None:
    """A LayerNormalization over the last axis of an int8 tensor with constant scale and bias as
    tvmnas's integer LayerNorm (passes/int8_layer_norm.py); None (a float island) otherwise."""
    from tvmnas.passes.int8_layer_norm import layer_norm_params

    try:
        x = r.activation_in(node.input[0], node)
        out, _act, _bounds = r._own_output(node, "NONE", (None, None))
    except QuantizationError:
        return None
    a = _attrs(node)
    tin, tout = r.tensors[x], r.tensors[out]
    n = tin.shape[-1]
    gamma = r.init.get(node.input[1]) if len(node.input) > 1 else None
    beta = r.init.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(n, np.float32)
    if (int(a.get("axis", -1)) % len(tin.shape) != len(tin.shape) - 1 or len(node.output) != 1 or gamma is None
            or beta is None or np.size(gamma) != n or np.size(beta) != n):
        return None
    params = layer_norm_params(tin.scale, tout.scale, gamma, beta, float(a.get("epsilon", 1e-5)))
    if params is None:
        return None
    return QOp("layer_norm", node.name or node.output[0], [x], out, activation="NONE", attrs=params)


def _softmax_op(r: _Reader, node: onnx.NodeProto) -> QOp | None:
    """A Softmax over the last axis of an int8 tensor with TFLite's int8 output quantization (scale
    1/256, zero point -128) as TFLite's int8 SOFTMAX; None (a float island) otherwise."""
    from tvmnas.passes.activation_tables import SOFTMAX_OUTPUT, softmax_exp_table
    from tvmnas.passes.int8_softmax import MAX_DEPTH

    try:
        x = r.activation_in(node.input[0], node)
        out, _act, _bounds = r._own_output(node, "NONE", (None, None))
    except QuantizationError:
        return None
    tin, tout = r.tensors[x], r.tensors[out]
    axis = int(_attrs(node).get("axis", -1)) % len(tin.shape)
    if axis != len(tin.shape) - 1 or tin.shape[-1] > MAX_DEPTH or (tout.scale, tout.zero_point) != (np.float32(SOFTMAX_OUTPUT[0]), SOFTMAX_OUTPUT[1]):
        return None
    return QOp("softmax", node.name or node.output[0], [x], out, activation="NONE",
               attrs={"exp_table": softmax_exp_table(tin.scale)})


def _lut_op(r: _Reader, node: onnx.NodeProto) -> QOp | None:
    """A Sigmoid / Tanh / HardSwish between int8 tensors as a table op; None (a float island) where
    its input or output quantization has no TFLite int8 kernel."""
    try:
        x = r.activation_in(node.input[0], node)
        out, _act, _bounds = r._own_output(node, "NONE", (None, None))
    except QuantizationError:
        return None
    from tvmnas.passes.activation_tables import activation_table

    function = LUT_OPS[node.op_type]
    tin, tout = r.tensors[x], r.tensors[out]
    table = activation_table(function, tin.scale, tin.zero_point, tout.scale, tout.zero_point)
    if table is None:
        return None
    return QOp("lut", node.name or node.output[0], [x], out, activation="NONE",
               attrs={"function": function, "table": table})


def _dequantize_constant(r: _Reader, dq: onnx.NodeProto) -> np.ndarray:
    """The float32 value of a DequantizeLinear of an initializer (a float island's constant input)."""
    q = r.init[dq.input[0]].astype(np.float32)
    scale = np.asarray(r.init[dq.input[1]], np.float32)
    zp = np.asarray(r.init[dq.input[2]], np.float32) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.float32)
    if scale.ndim == 1 and q.ndim > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def _per_channel(scale: np.ndarray, channels: int, axis: int, expected_axis: int, node: onnx.NodeProto) -> np.ndarray:
    scale = np.asarray(scale, np.float32).reshape(-1)
    if scale.size == 1:
        return np.full(channels, scale[0], np.float32)
    if scale.size != channels or axis != expected_axis:
        raise QuantizationError(f"weights of node '{node.name}' are quantized along axis {axis}; expected per output channel (axis {expected_axis})")
    return scale


def _make(r: _Reader, kind: str, node: onnx.NodeProto, inputs: list[str], out: str, act: str,
          bounds: tuple, w, ws, bias, attrs: dict) -> QOp:
    t = r.tensors[out]
    lo, hi = bounds
    clamp = activation_range(act, lo, hi, t.scale, t.zero_point)
    return QOp(kind, node.name or node.output[0], inputs, out, w, ws, bias, clamp, act, attrs)
