"""Read a `.tflite` flatbuffer as an ONNX graph: QDQ ONNX for int8 models, plain ONNX for float ones.

An int8 TFLite operator is written the way a QDQ exporter writes it: `DequantizeLinear` of each
int8 input, the float ONNX operator (with the fused activation as Relu / Clip), `QuantizeLinear`
with the output tensor's scale and zero point; int8 weights and int32 biases stay initializers
behind a `DequantizeLinear` (per-channel scales on the output channel). The compiler then imports
it like any QDQ model (`relax.frontend.onnx`) and QuantizeToInteger turns it into integer kernels,
which compute TFLite's integer arithmetic (docs/int8.md). A float .tflite is plain float ONNX.

Why not TVM's own TFLite frontend (`relax.frontend.tflite.from_tflite`): in TVM 0.27 it refuses
int8 PAD (which converters emit before a stride-2 convolution), imports NHWC / HWIO where the
integer rewrite and its kernels are NCHW / OIHW, transposes int8 fully connected weights before
dequantizing them and applies fused activations as an int8 clip after the quantize.

Layout: TFLite activations are NHWC. Feature maps are moved to NCHW where an operator needs it
(a transpose of int8 values, exact), so the model's input and output keep the .tflite's NHWC
shapes; a flatten read only by fully connected layers permutes their weight columns instead.
What the reading cannot express is refused naming the operator and its output tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvmnas.errors import ModelLoadError, QuantizationError, UnsupportedOperatorError

OPSET = 17
NCHW_OF_NHWC = (0, 3, 1, 2)
NHWC_OF_NCHW = (0, 2, 3, 1)
NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}  # an NHWC axis -> the same axis of the NCHW tensor

ACTIVATIONS = {0: None, 1: ("Relu", None, None), 2: ("Clip", -1.0, 1.0), 3: ("Clip", 0.0, 6.0)}
ACTIVATION_NAMES = {4: "TANH", 5: "SIGN_BIT"}

FLOAT_ONLY = {"SOFTMAX": "Softmax", "LOGISTIC": "Sigmoid", "TANH": "Tanh", "HARD_SWISH": "HardSwish"}
"""Operators read as their float ONNX op. On int8 tensors they are float islands between
DequantizeLinear and QuantizeLinear: TFLite computes them with integer tables, so an int8 model
using them agrees with TFLite Micro within a step, not bit for bit."""


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    return fb


@dataclass
class _Value:
    """An ONNX value standing for a TFLite tensor: int8 (the QuantizeLinear output `q`, read in
    float through one DequantizeLinear) or float32 (`f`); 4-d ones held NHWC or NCHW.

    flat_chw: a 2-d tensor flattened from an NCHW map (C, H, W) where TFLite flattens NHWC; only
    fully connected layers read it (their weight columns are permuted to match).
    pads: a pending TFLite PAD (top, left, bottom, right) that the convolution reading it applies.
    """

    shape: tuple[int, ...]  # the TFLite (NHWC) shape
    int8: bool
    q: str | None = None
    f: str | None = None
    nchw: bool = False
    scale: float = 0.0
    zero_point: int = 0
    flat_chw: tuple[int, int, int] | None = None
    pads: tuple[int, int, int, int] | None = None
    other_layout: _Value | None = field(default=None, repr=False, compare=False)  # the other layout, once made


@dataclass
class _Graph:
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    used: set = field(default_factory=set)

    def name(self, base: str) -> str:
        base = base or "t"
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def const(self, value: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], base: str, node_name: str | None = None, **attrs) -> str:
        out = self.name(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(node_name or out + "/" + op), **attrs))
        return out


class _Reader:
    def __init__(self, buf: bytes, label: str) -> None:
        fb = _schema()
        self.fb = fb
        try:
            self.model = fb.ModelT.InitFromPackedBuf(buf, 0)
        except Exception as err:  # flatbuffers raises struct and index errors on corrupt data
            raise ModelLoadError(f"{label} is not a TFLite model: {err}") from None
        if not self.model.subgraphs:
            raise ModelLoadError(f"{label} holds no subgraph")
        if len(self.model.subgraphs) > 1:
            raise UnsupportedOperatorError("subgraphs", label, f"{len(self.model.subgraphs)} subgraphs (control flow); one is read")
        self.sg = self.model.subgraphs[0]
        self.op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
        self.g = _Graph()
        self.values: dict[int, _Value] = {}
        self.readers: dict[int, list] = {}
        for op in self.sg.operators:
            for i in op.inputs:
                self.readers.setdefault(int(i), []).append(op)

    # ---- tensors ---------------------------------------------------------------------------
    def tname(self, i: int) -> str:
        name = self.sg.tensors[i].name
        return (name.decode() if isinstance(name, bytes) else name) or f"tensor_{i}"

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.sg.tensors[i].shape)

    def data(self, i: int) -> np.ndarray | None:
        t = self.sg.tensors[i]
        buf = self.model.buffers[t.buffer] if t.buffer < len(self.model.buffers) else None
        if buf is None or buf.data is None or len(buf.data) == 0:
            return None
        dtype = {self.fb.TensorType.INT8: np.int8, self.fb.TensorType.INT32: np.int32, self.fb.TensorType.FLOAT32: np.float32,
                 self.fb.TensorType.INT64: np.int64}.get(t.type)
        if dtype is None:
            raise QuantizationError(f"constant tensor '{self.tname(i)}' has TFLite type {t.type}; int8, int32 and float32 are read")
        return np.frombuffer(np.asarray(buf.data, np.uint8).tobytes(), dtype).reshape(self.shape(i))

    def quant(self, i: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        q = self.sg.tensors[i].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros(len(q.scale)), np.int64)
        return np.asarray(q.scale, np.float32), zp, int(q.quantizedDimension)

    def activation_kind(self, i: int, node: str, op_name: str) -> bool:
        """True for an int8 activation, False for float32; other types are refused."""
        t = self.sg.tensors[i]
        if t.type == self.fb.TensorType.FLOAT32:
            return False
        if t.type != self.fb.TensorType.INT8:
            types = {v: k for k, v in vars(self.fb.TensorType).items() if not k.startswith("_")}
            raise UnsupportedOperatorError(op_name, node, f"tensor '{self.tname(i)}' is {types.get(t.type, t.type)}; "
                                           "int8 and float32 activations are read")
        q = self.quant(i)
        if q is None:
            raise QuantizationError(f"int8 tensor '{self.tname(i)}' of node '{node}' has no scale and zero point")
        if q[0].size != 1:
            raise QuantizationError(f"activation '{self.tname(i)}' of node '{node}' is quantized per channel; int8 activations are per tensor")
        return True

    # ---- values ------------------------------------------------------------------------------
    def float_of(self, v: _Value) -> str:
        """The float ONNX value of `v` (a DequantizeLinear of an int8 one, made once)."""
        if v.f is None:
            s = self.g.const(np.float32(v.scale), v.q + "_scale")
            z = self.g.const(np.int8(v.zero_point), v.q + "_zero_point")
            v.f = self.g.node("DequantizeLinear", [v.q, s, z], v.q.removesuffix("_int8"))
        return v.f

    def result(self, i: int, float_name: str, nchw: bool, node: str, op_name: str, flat_chw=None) -> _Value:
        """Record TFLite tensor `i` as computed by `float_name` (quantized where `i` is int8)."""
        shape = self.shape(i)
        if not self.activation_kind(i, node, op_name):
            v = _Value(shape, False, f=float_name, nchw=nchw, flat_chw=flat_chw)
        else:
            scale, zp, _ = self.quant(i)
            s = self.g.const(np.float32(scale[0]), self.tname(i) + "_scale")
            z = self.g.const(np.int8(zp[0]), self.tname(i) + "_zero_point")
            q = self.g.node("QuantizeLinear", [float_name, s, z], self.tname(i) + "_int8")
            v = _Value(shape, True, q=q, nchw=nchw, scale=float(scale[0]), zero_point=int(zp[0]), flat_chw=flat_chw)
        self.values[i] = v
        return v

    def layout(self, v: _Value, nchw: bool) -> _Value:
        """`v` held NCHW (nchw True) or NHWC; a transpose where the two orders differ in memory."""
        if len(v.shape) != 4 or v.nchw == nchw:
            return v
        if v.other_layout is None:
            v.other_layout = self._transposed(v, nchw)
        return v.other_layout

    def _transposed(self, v: _Value, nchw: bool) -> _Value:
        n, h, w, c = v.shape
        x = self.float_of(v) if v.int8 else v.f
        base = (v.q or v.f).removesuffix("_int8") + ("_nchw" if nchw else "_nhwc")
        if c == 1 or h * w == 1:  # the same bytes either way
            shape = (n, c, h, w) if nchw else (n, h, w, c)
            y = self.g.node("Reshape", [x, self.g.const(np.array(shape, np.int64), base + "_shape")], base)
        else:
            y = self.g.node("Transpose", [x], base, perm=list(NCHW_OF_NHWC if nchw else NHWC_OF_NCHW))
        if not v.int8:
            return replace(v, f=y, nchw=nchw, other_layout=v)
        s = self.g.const(np.float32(v.scale), base + "_scale")
        z = self.g.const(np.int8(v.zero_point), base + "_zero_point")
        return replace(v, q=self.g.node("QuantizeLinear", [y, s, z], base + "_int8"), f=None, nchw=nchw, other_layout=v)

    def input_of(self, op, k: int, node: str, op_name: str, nchw: bool | None = None) -> _Value:
        i = int(op.inputs[k])
        if i not in self.values:
            raise UnsupportedOperatorError(op_name, node, f"input '{self.tname(i)}' is neither a graph input nor computed")
        v = self.values[i]
        if v.pads is not None and op_name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            v = self.apply_pad(v)
        if v.flat_chw is not None and op_name != "FULLY_CONNECTED":
            raise UnsupportedOperatorError(op_name, node, "reads a flattened feature map that only fully connected layers read")
        return v if nchw is None else self.layout(v, nchw)

    def apply_pad(self, v: _Value) -> _Value:
        """A pending PAD as an ONNX Pad of zeros (real zero: the zero point of an int8 tensor)."""
        t, l, b, r = v.pads
        v = self.layout(replace(v, pads=None, other_layout=None), True)
        x = self.float_of(v) if v.int8 else v.f
        base = (v.q or v.f).removesuffix("_int8") + "_padded"
        pads = self.g.const(np.array([0, 0, t, l, 0, 0, b, r], np.int64), base + "_pads")
        y = self.g.node("Pad", [x, pads], base)
        n, h, w, c = v.shape
        shape = (n, h + t + b, w + l + r, c)
        if not v.int8:
            return _Value(shape, False, f=y, nchw=True)
        s = self.g.const(np.float32(v.scale), base + "_scale")
        z = self.g.const(np.int8(v.zero_point), base + "_zero_point")
        q = self.g.node("QuantizeLinear", [y, s, z], base + "_int8")
        return _Value(shape, True, q=q, nchw=True, scale=v.scale, zero_point=v.zero_point)

    def fused(self, y: str, code: int, node: str, op_name: str) -> str:
        """`y` with the fused activation `code` applied (Relu or Clip before the QuantizeLinear)."""
        if code in ACTIVATION_NAMES:
            raise UnsupportedOperatorError(f"{op_name} with fused {ACTIVATION_NAMES[code]}", node)
        act = ACTIVATIONS.get(code, "unknown")
        if act == "unknown":
            raise UnsupportedOperatorError(f"{op_name} with fused activation {code}", node)
        if act is None:
            return y
        kind, lo, hi = act
        if kind == "Relu":
            return self.g.node("Relu", [y], y + "_relu")
        lo_c = self.g.const(np.float32(lo), y + "_min")
        hi_c = self.g.const(np.float32(hi), y + "_max")
        return self.g.node("Clip", [y, lo_c, hi_c], y + "_clip")

    # ---- weights -----------------------------------------------------------------------------
    def weight(self, op, k: int, node: str, op_name: str, x: _Value, perm=None, axis_from: int = 0) -> str:
        """A weight tensor as an initializer in ONNX's layout (`perm` applied): int8 behind a
        DequantizeLinear along output-channel axis 0 (per channel) for an int8 model, float32 for
        a float one. Fully connected weights read by a flattened NCHW map (`x.flat_chw`) get
        their columns reordered from H, W, C to C, H, W."""
        i = int(op.inputs[k])
        w = self.data(i)
        if w is None:
            raise UnsupportedOperatorError(op_name, node, f"weights '{self.tname(i)}' are not a constant")
        if perm is not None:
            w = w.transpose(perm)
        if x.flat_chw is not None:
            c, h, wd = x.flat_chw
            if w.shape[1:] != (h * wd * c,):
                raise UnsupportedOperatorError(op_name, node, f"weights {w.shape} do not match the flattened {(h, wd, c)} map")
            w = w.reshape(-1, h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
        w = np.ascontiguousarray(w)
        base = self.tname(i)
        if w.dtype == np.float32:
            if x.int8:
                raise QuantizationError(f"node '{node}' has float32 weights '{base}' and an int8 input; quantize its weights")
            return self.g.const(w, base)
        if w.dtype != np.int8:
            raise QuantizationError(f"weights '{base}' of node '{node}' are {w.dtype}; int8 is read")
        if not x.int8:
            raise QuantizationError(f"node '{node}' has int8 weights and a float32 input (dynamic-range quantization); "
                                    "convert with full integer quantization")
        scale, zp, qdim = self.quant(i)
        if np.any(zp != 0):
            raise QuantizationError(f"weights '{base}' of node '{node}' have a non-zero zero point; TFLite int8 weights are symmetric")
        if scale.size > 1 and qdim != axis_from:
            raise QuantizationError(f"weights '{base}' of node '{node}' are quantized along axis {qdim}; expected the output channel")
        q = self.g.const(w, base + "_int8")
        s = self.g.const(scale if scale.size > 1 else np.float32(scale[0]), base + "_scale")
        z = self.g.const(np.zeros(scale.size, np.int8) if scale.size > 1 else np.int8(0), base + "_zero_point")
        return self.g.node("DequantizeLinear", [q, s, z], base, axis=0)

    def bias(self, op, k: int, node: str, x: _Value, channels: int) -> str | None:
        if len(op.inputs) <= k or int(op.inputs[k]) < 0:
            return None
        i = int(op.inputs[k])
        b = self.data(i)
        if b is None:
            raise UnsupportedOperatorError("bias", node, f"bias '{self.tname(i)}' is not a constant")
        base = self.tname(i)
        b = b.reshape(-1)
        if b.dtype == np.float32:
            return self.g.const(b, base)
        if b.dtype != np.int32:
            raise QuantizationError(f"bias '{base}' of node '{node}' is {b.dtype}; int32 is read")
        q = self.quant(i)
        scale = q[0] if q is not None else np.float32(x.scale) * self.quant(int(op.inputs[1]))[0]
        scale = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (channels,))
        qi = self.g.const(b, base + "_int32")
        s = self.g.const(np.ascontiguousarray(scale), base + "_scale")
        z = self.g.const(np.zeros(channels, np.int32), base + "_zero_point")
        return self.g.node("DequantizeLinear", [qi, s, z], base, axis=0)


def _same_pads(in_hw, out_hw, kernel, strides, dilations=(1, 1)) -> list[int]:
    """TFLite's SAME padding as ONNX pads (top, left, bottom, right): the odd pixel at the end."""
    before, after = [], []
    for i in range(2):
        k = (kernel[i] - 1) * dilations[i] + 1
        total = max((out_hw[i] - 1) * strides[i] + k - in_hw[i], 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


def _convert(r: _Reader, op, index: int) -> None:
    fb = r.fb
    code = r.model.operatorCodes[op.opcodeIndex]
    op_name = r.op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"builtin {code.builtinCode}")
    outs = [int(o) for o in op.outputs]
    node = r.tname(outs[0]) if outs else f"operator {index}"
    opts = op.builtinOptions
    g = r.g
    out = outs[0] if outs else None

    if op_name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        x = r.input_of(op, 0, node, op_name)
        pre = x.pads or (0, 0, 0, 0)
        x = r.layout(x if x.pads is None else replace(x, pads=None, other_layout=None), True)
        n, h, w, c = x.shape
        wshape = r.shape(int(op.inputs[1]))
        if op_name == "CONV_2D":
            o, kh, kw, cin = wshape
            wname = r.weight(op, 1, node, op_name, x, perm=(0, 3, 1, 2))
            group = c // cin
        else:
            _, kh, kw, o = wshape
            wname = r.weight(op, 1, node, op_name, x, perm=(3, 0, 1, 2), axis_from=3)
            group = c
        strides = (opts.strideH, opts.strideW)
        dil = (max(opts.dilationHFactor, 1), max(opts.dilationWFactor, 1))
        oshape = r.shape(out)
        in_hw = (h + pre[0] + pre[2], w + pre[1] + pre[3])
        pads = [0, 0, 0, 0] if opts.padding == fb.Padding.VALID else _same_pads(in_hw, oshape[1:3], (kh, kw), strides, dil)
        pads = [pads[0] + pre[0], pads[1] + pre[1], pads[2] + pre[2], pads[3] + pre[3]]
        inputs = [r.float_of(x) if x.int8 else x.f, wname]
        b = r.bias(op, 2, node, x, o)
        if b is not None:
            inputs.append(b)
        y = g.node("Conv", inputs, node + "_conv", node_name=node, strides=list(strides), pads=pads,
                   dilations=list(dil), group=group, kernel_shape=[kh, kw])
        r.result(out, r.fused(y, opts.fusedActivationFunction, node, op_name), True, node, op_name)
    elif op_name == "FULLY_CONNECTED":
        x = r.input_of(op, 0, node, op_name)
        o, i = r.shape(int(op.inputs[1]))
        if len(x.shape) == 4 and x.flat_chw is None:
            x = _flatten(r, x, node)
        if len(x.shape) != 2 or x.shape[-1] != i:
            raise UnsupportedOperatorError(op_name, node, f"input of shape {x.shape} for weights ({o}, {i})")
        wname = r.weight(op, 1, node, op_name, x)
        inputs = [r.float_of(x) if x.int8 else x.f, wname]
        b = r.bias(op, 2, node, x, o)
        if b is not None:
            inputs.append(b)
        y = g.node("Gemm", inputs, node + "_gemm", node_name=node, transB=1)
        r.result(out, r.fused(y, opts.fusedActivationFunction, node, op_name), False, node, op_name)
    elif op_name == "ADD":
        a, b = r.input_of(op, 0, node, op_name), r.input_of(op, 1, node, op_name)
        if a.shape != b.shape:
            raise UnsupportedOperatorError(op_name, node, f"broadcasts {a.shape} and {b.shape}; equal shapes are read")
        nchw = len(a.shape) == 4
        a, b = r.layout(a, nchw), r.layout(b, nchw)
        y = g.node("Add", [r.float_of(a) if a.int8 else a.f, r.float_of(b) if b.int8 else b.f], node + "_add", node_name=node)
        r.result(out, r.fused(y, opts.fusedActivationFunction, node, op_name), nchw, node, op_name)
    elif op_name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        x = r.input_of(op, 0, node, op_name, nchw=True)
        kernel, strides = (opts.filterHeight, opts.filterWidth), (opts.strideH, opts.strideW)
        pads = [0, 0, 0, 0] if opts.padding == fb.Padding.VALID else _same_pads(x.shape[1:3], r.shape(out)[1:3], kernel, strides)
        attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=pads)
        if op_name == "AVERAGE_POOL_2D":
            y = g.node("AveragePool", [r.float_of(x) if x.int8 else x.f], node + "_pool", node_name=node, count_include_pad=0, **attrs)
        else:
            y = g.node("MaxPool", [r.float_of(x) if x.int8 else x.f], node + "_pool", node_name=node, **attrs)
        r.result(out, r.fused(y, opts.fusedActivationFunction, node, op_name), True, node, op_name)
    elif op_name == "MEAN":
        x = r.input_of(op, 0, node, op_name)
        axes = r.data(int(op.inputs[1]))
        if axes is None:
            raise UnsupportedOperatorError(op_name, node, "its axes are not a constant")
        rank = len(x.shape)
        axes = sorted({int(a) % rank for a in np.atleast_1d(axes)})
        keep = bool(opts.keepDims) if opts is not None else False
        if rank == 4 and (keep or 3 in axes or axes == [1, 2] or axes == [0, 1, 2]):
            x = r.layout(x, True)
            axes_onnx, nchw = sorted(NCHW_AXIS[a] for a in axes), keep
        else:
            x = r.layout(x, False)
            axes_onnx, nchw = axes, False
        y = g.node("ReduceMean", [r.float_of(x) if x.int8 else x.f], node + "_mean", node_name=node, axes=axes_onnx, keepdims=int(keep))
        r.result(out, y, nchw, node, op_name)
    elif op_name in ("RESHAPE", "SQUEEZE"):
        x = r.input_of(op, 0, node, op_name)
        target = r.shape(out)
        dense_only = all(_op_name(r, reader) == "FULLY_CONNECTED" for reader in r.readers.get(out, [])) and out not in r.sg.outputs
        if len(x.shape) == 4 and len(target) == 2 and x.nchw and dense_only and r.readers.get(out) \
                and _same_quantization(r, x, out, node, op_name):
            r.values[out] = _flatten(r, x, node)
            return
        x = r.layout(x, False)
        y = g.node("Reshape", [r.float_of(x) if x.int8 else x.f, g.const(np.array(target, np.int64), node + "_shape")],
                   node + "_reshape", node_name=node)
        r.result(out, y, False, node, op_name)
    elif op_name == "CONCATENATION":
        xs = [r.input_of(op, k, node, op_name) for k in range(len(op.inputs))]
        rank = len(r.shape(out))
        axis = opts.axis % rank
        if rank == 4:
            xs, axis = [r.layout(x, True) for x in xs], NCHW_AXIS[axis]
        y = g.node("Concat", [r.float_of(x) if x.int8 else x.f for x in xs], node + "_concat", node_name=node, axis=axis)
        r.result(out, r.fused(y, opts.fusedActivationFunction, node, op_name), rank == 4, node, op_name)
    elif op_name in ("RELU", "RELU6", "RELU_N1_TO_1"):
        x = r.input_of(op, 0, node, op_name)
        xf = r.float_of(x) if x.int8 else x.f
        if op_name == "RELU":
            y = g.node("Relu", [xf], node + "_relu", node_name=node)
        else:
            lo, hi = (0.0, 6.0) if op_name == "RELU6" else (-1.0, 1.0)
            y = g.node("Clip", [xf, g.const(np.float32(lo), node + "_min"), g.const(np.float32(hi), node + "_max")],
                       node + "_clip", node_name=node)
        r.result(out, y, x.nchw, node, op_name)
    elif op_name in ("PAD", "PADV2"):
        x = r.input_of(op, 0, node, op_name)
        paddings = r.data(int(op.inputs[1]))
        if paddings is None or paddings.shape != (4, 2) or np.any(paddings[[0, 3]] != 0):
            raise UnsupportedOperatorError(op_name, node, "pads other than height and width, or not a constant")
        q = r.quant(out) if x.int8 else None
        if op_name == "PADV2" or (q is not None and (float(q[0][0]) != x.scale or int(q[1][0]) != x.zero_point)):
            raise UnsupportedOperatorError(op_name, node, "pads with a value other than zero or changes the quantization")
        (t, b), (left, right) = paddings[1], paddings[2]
        prev = x.pads or (0, 0, 0, 0)
        # the values stay the unpadded tensor's (its shape too); the reader of `out` applies the pads
        r.values[out] = replace(x, pads=(prev[0] + int(t), prev[1] + int(left), prev[2] + int(b), prev[3] + int(right)),
                                other_layout=None)
    elif op_name in FLOAT_ONLY:
        x = r.input_of(op, 0, node, op_name)
        attrs = {}
        if op_name == "SOFTMAX":
            beta = opts.beta if opts is not None else 0.0  # TFLite reads missing options as beta 0
            if beta != 1.0:
                raise UnsupportedOperatorError(op_name, node, f"beta {beta}; 1.0 is read")
            attrs["axis"] = 1 if x.nchw else -1
        y = g.node(FLOAT_ONLY[op_name], [r.float_of(x) if x.int8 else x.f], node + "_" + FLOAT_ONLY[op_name].lower(),
                   node_name=node, **attrs)
        r.result(out, y, x.nchw, node, op_name)
    elif op_name == "QUANTIZE":
        x = r.input_of(op, 0, node, op_name)
        r.result(out, r.float_of(x) if x.int8 else x.f, x.nchw, node, op_name)
    elif op_name == "DEQUANTIZE":
        x = r.input_of(op, 0, node, op_name)
        if not x.int8:
            raise UnsupportedOperatorError(op_name, node, "dequantizes a tensor that is not int8")
        r.result(out, r.float_of(x), x.nchw, node, op_name)
    else:
        raise UnsupportedOperatorError(op_name, node, "no int8/float32 reading of this TFLite operator")


def _op_name(r: _Reader, op) -> str:
    code = r.model.operatorCodes[op.opcodeIndex]
    return r.op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")


def _flatten(r: _Reader, x: _Value, node: str) -> _Value:
    """A 4-d map flattened to (N, H*W*C) for fully connected layers: an ONNX Flatten of the NCHW
    map, marked so that the layers reading it permute their weight columns to CHW order."""
    x = r.layout(x, True)
    n, h, w, c = x.shape
    y = r.g.node("Flatten", [r.float_of(x) if x.int8 else x.f], node + "_flatten", node_name=node + "/flatten", axis=1)
    if not x.int8:
        return _Value((n, h * w * c), False, f=y, flat_chw=(c, h, w))
    s = r.g.const(np.float32(x.scale), node + "_flat_scale")
    z = r.g.const(np.int8(x.zero_point), node + "_flat_zero_point")
    q = r.g.node("QuantizeLinear", [y, s, z], node + "_flat_int8")
    return _Value((n, h * w * c), True, q=q, scale=x.scale, zero_point=x.zero_point, flat_chw=(c, h, w))


def _same_quantization(r: _Reader, v: _Value, out: int, node: str, op_name: str) -> bool:
    """Whether TFLite tensor `out` is held like `v` (both float32, or int8 with one scale and zero point)."""
    if not r.activation_kind(out, node, op_name):
        return not v.int8
    scale, zp, _ = r.quant(out)
    return v.int8 and float(scale[0]) == v.scale and int(zp[0]) == v.zero_point


def tflite_to_onnx(model: str | Path | bytes) -> onnx.ModelProto:
    """The ONNX model (QDQ for int8 tensors, plain float for float32 ones) of a .tflite file."""
    if isinstance(model, (bytes, bytearray)):
        buf, label = bytes(model), "the model"
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelLoadError(f"model file '{path}' does not exist")
        buf, label = path.read_bytes(), f"'{path}'"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelLoadError(f"{label} is not a TFLite model (no TFL3 identifier)")
    r = _Reader(buf, label)
    g = r.g
    graph_inputs = []
    for i in (int(k) for k in r.sg.inputs):
        name = g.name(r.tname(i))
        graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(r.shape(i))))
        if r.activation_kind(i, name, "input"):
            scale, zp, _ = r.quant(i)
            s = g.const(np.float32(scale[0]), name + "_scale")
            z = g.const(np.int8(zp[0]), name + "_zero_point")
            q = g.node("QuantizeLinear", [name, s, z], name + "_int8")
            r.values[i] = _Value(r.shape(i), True, q=q, scale=float(scale[0]), zero_point=int(zp[0]))
        else:
            r.values[i] = _Value(r.shape(i), False, f=name)
    for index, op in enumerate(r.sg.operators):
        _convert(r, op, index)
    graph_outputs = []
    for i in (int(k) for k in r.sg.outputs):
        v = r.values.get(i)
        if v is None:
            raise ModelLoadError(f"{label}: output '{r.tname(i)}' is computed by no operator")
        if v.pads is not None:
            v = r.apply_pad(v)
        v = r.layout(v, False)
        name = g.name(r.tname(i) + "_out") if r.tname(i) in g.used else g.name(r.tname(i))
        if v.int8:
            s = g.const(np.float32(v.scale), name + "_scale")
            z = g.const(np.int8(v.zero_point), name + "_zero_point")
            g.nodes.append(helper.make_node("DequantizeLinear", [v.q, s, z], [name], name=g.name(name + "/DequantizeLinear")))
        else:
            g.nodes.append(helper.make_node("Identity", [v.f], [name], name=g.name(name + "/Identity")))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(r.shape(i))))
    graph = helper.make_graph(g.nodes, "tflite", graph_inputs, graph_outputs, g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tvmnas tflite reader")
    onnx.checker.check_model(proto)
    return proto


def tflite_io(model: bytes) -> tuple[list[tuple[float, int] | None], list[tuple[float, int] | None]]:
    """(scale, zero point) of each input and output of a .tflite (None for a float32 one)."""
    r = _Reader(model, "the model")

    def params(i: int):
        q = r.quant(i)
        return (float(q[0][0]), int(q[1][0])) if r.sg.tensors[i].type == r.fb.TensorType.INT8 and q is not None else None

    return [params(int(i)) for i in r.sg.inputs], [params(int(i)) for i in r.sg.outputs]


def tflite_micro_reference(model: bytes):
    """A float-in, float-out run of the .tflite in TFLite Micro (the `tflite-micro` interpreter):
    int8 inputs quantized as QuantizeLinear does, int8 outputs dequantized, NHWC throughout."""
    ins, outs = tflite_io(model)

    def reference(inputs) -> list[np.ndarray]:
        from tvmnas.quant.tflite_writer import run_tflite_micro
        from tvmnas.quantized import dequantize_array, quantize_array

        feeds = [x if q is None else quantize_array(x, *q) for x, q in zip(inputs, ins)]
        ys = run_tflite_micro(model, *feeds)
        return [y if q is None else dequantize_array(y, *q) for y, q in zip(ys, outs)]

    return reference


def import_tflite(path: Path, notice=None):
    """The ImportedModel of a .tflite file: read as ONNX (tflite_to_onnx) and imported through the
    ONNX frontend; its import check runs the .tflite itself in TFLite Micro."""
    from tvmnas.frontend import import_onnx_proto
    from tvmnas.input_shapes import stderr_notice

    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"reading '{path}' needs the int8 extra: pip install 'tvmnas[int8]'") from None
    proto = tflite_to_onnx(path)
    buf = Path(path).read_bytes()
    return import_onnx_proto(proto, f"'{path}'", "TFLite Micro", lambda _names: tflite_micro_reference(buf),
                             notice or stderr_notice)
