"""Write int8 .tflite flatbuffers without TensorFlow, from the integer ops of a QDQ ONNX graph.

The .tflite holds exactly the int8 weights, int32 biases, scales and zero points of the QDQ graph
(:func:`tvmnas.quant.qgraph.read_qdq`), laid out as TFLite wants them: NHWC activations, OHWI conv
filters, 1HWO depthwise filters, per-channel weight scales on the output-channel dimension, and
the fused activation (NONE/RELU/RELU6) on the op. ONNX explicit padding becomes TFLite's SAME or
VALID where they agree, or a PAD op (padding with the input zero point) before a VALID conv.
A flatten of a feature map with H*W > 1 read only by dense layers flattens NHWC and the dense
weights' columns are permuted to match (as TFLite converters do); other such flattens get a
TRANSPOSE to NCHW first, so the flattened order matches ONNX's. Needs the ``tflite-micro`` package (``pip install .[int8]``) for the generated
schema classes.
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
import onnx

from tvmnas.errors import QuantizationError
from tvmnas.quant.qgraph import QGraph, QOp, read_qdq


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    return fb


def _nhwc(shape: tuple[int, ...]) -> list[int]:
    return [shape[0], shape[2], shape[3], shape[1]] if len(shape) == 4 else list(shape)


class _Builder:
    """Tensors, buffers and operators of one subgraph. With float32, every quantized tensor is
    written dequantized as float32 (a float model with the same operators and real values)."""

    def __init__(self, float32: bool = False) -> None:
        self.fb = _schema()
        self.float32 = float32
        self.tensors: list = []
        self.buffers: list = [self.fb.BufferT()]  # buffer 0 is the empty sentinel
        self.opcodes: list[int] = []
        self.operators: list = []
        self.index: dict[str, int] = {}

    def tensor(self, name: str, shape: list[int], ttype: int, data: np.ndarray | None = None,
               scale=None, zero_point=None, qdim: int = 0) -> int:
        if self.float32 and scale is not None:
            if data is not None:
                real_shape = [1] * data.ndim
                if np.size(scale) > 1:
                    real_shape[qdim] = -1
                zp = np.asarray(zero_point if zero_point is not None else 0, np.float32).reshape(real_shape if np.size(zero_point) > 1 else ())
                data = ((data.astype(np.float32) - zp) * np.asarray(scale, np.float32).reshape(real_shape if np.size(scale) > 1 else ())).astype(np.float32)
            ttype, scale = self.fb.TensorType.FLOAT32, None
        t = self.fb.TensorT()
        t.name = name
        t.shape = [int(d) for d in shape]
        t.type = ttype
        if data is not None:
            b = self.fb.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8).tolist()
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = self.fb.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            q.zeroPoint = [int(z) for z in np.atleast_1d(zero_point)]
            q.quantizedDimension = qdim
            t.quantization = q
        self.tensors.append(t)
        self.index[name] = len(self.tensors) - 1
        return len(self.tensors) - 1

    def const_i32(self, name: str, values) -> int:
        v = np.asarray(values, np.int32)
        return self.tensor(name, list(v.shape), self.fb.TensorType.INT32, v)

    def op(self, code: int, inputs: list[int], outputs: list[int], opt_type: int = 0, opts=None) -> None:
        if code not in self.opcodes:
            self.opcodes.append(code)
        o = self.fb.OperatorT()
        o.opcodeIndex = self.opcodes.index(code)
        o.inputs = inputs
        o.outputs = outputs
        o.builtinOptionsType = opt_type
        o.builtinOptions = opts
        self.operators.append(o)

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        fb = self.fb
        sg = fb.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = self.tensors, inputs, outputs, self.operators, "main"
        codes = []
        for c in self.opcodes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = c
            oc.deprecatedBuiltinCode = min(c, 127)
            oc.version = 1
            codes.append(oc)
        m = fb.ModelT()
        m.version = 3
        m.operatorCodes = codes
        m.subgraphs = [sg]
        m.buffers = self.buffers
        m.description = "tvmnas float32" if self.float32 else "tvmnas int8"
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _padding(op: QOp, in_hw: tuple[int, int], out_hw: tuple[int, int], kernel: tuple[int, int],
             strides: tuple[int, int], dilations=(1, 1)) -> str:
    """'VALID', 'SAME' or 'EXPLICIT' (needs a PAD op) for ONNX pads (top, left, bottom, right)."""
    t, l, b, r = op.attrs["pads"]
    if (t, l, b, r) == (0, 0, 0, 0):
        return "VALID"
    for i, before in enumerate((t, l)):
        k = (kernel[i] - 1) * dilations[i] + 1
        if out_hw[i] != -(-in_hw[i] // strides[i]):
            return "EXPLICIT"
        total = max((out_hw[i] - 1) * strides[i] + k - in_hw[i], 0)
        if before != total // 2:
            return "EXPLICIT"
    return "SAME"


_ACT = {"NONE": 0, "RELU": 1, "RELU6": 3}


def write_tflite(model: str | Path | onnx.ModelProto | QGraph, float32: bool = False) -> bytes:
    """The .tflite bytes of an int8 QDQ ONNX model (or of its read :class:`QGraph`); with
    float32, the same network with every tensor dequantized (a float .tflite).

    Raises QuantizationError naming the node where TFLite has no equal (a clamp that is not
    NONE/RELU/RELU6, pooling with padding TFLite cannot express, grouped convolution).
    """
    g = model if isinstance(model, QGraph) else read_qdq(model)
    bld = _Builder(float32)
    fb = bld.fb
    BO, OPT, I8 = fb.BuiltinOperator, fb.BuiltinOptions, fb.TensorType.INT8
    t = g.tensors

    def act_tensor(name: str) -> int:
        if name not in bld.index:
            q = t[name]
            bld.tensor(name, _nhwc(q.shape), I8, scale=q.scale, zero_point=q.zero_point)
        return bld.index[name]

    def fused(op: QOp) -> int:
        if op.activation not in _ACT:
            raise QuantizationError(f"node '{op.name}': its Clip{op.act} is no TFLite fused activation")
        return _ACT[op.activation]

    # Flattens of NHWC feature maps read only by dense layers: flatten in NHWC order and permute
    # the dense weights' columns to match (what TFLite converters do) instead of a TRANSPOSE.
    readers: dict[str, list[QOp]] = {}
    for op in g.ops:
        for name in op.inputs:
            readers.setdefault(name, []).append(op)
    nhwc_flat: dict[str, tuple[int, int, int]] = {}
    for op in g.ops:
        shape_in = t[op.inputs[0]].shape
        if (op.kind == "reshape" and len(shape_in) == 4 and shape_in[2] * shape_in[3] > 1 and shape_in[1] > 1
                and len(t[op.output].shape) == 2 and op.output not in g.outputs
                and all(r.kind == "dense" for r in readers.get(op.output, []))):
            nhwc_flat[op.output] = tuple(shape_in[1:])

    for name in g.inputs:
        act_tensor(name)
    for op in g.ops:
        tin, tout = t[op.inputs[0]], t[op.output]
        x = act_tensor(op.inputs[0])
        if op.kind == "conv":
            a = op.attrs
            if len(tin.shape) != 4:
                raise QuantizationError(f"node '{op.name}': a {len(tin.shape) - 2}-D convolution is not written to .tflite")
            o, cig, kh, kw = op.weight.shape
            depthwise = a["group"] == tin.shape[1] and cig == 1 and a["group"] > 1
            if a["group"] != 1 and not depthwise:
                raise QuantizationError(f"node '{op.name}': grouped convolution (group {a['group']}) has no TFLite op")
            pad = _padding(op, tin.shape[2:], tout.shape[2:], (kh, kw), a["strides"], a["dilations"])
            if pad == "EXPLICIT":
                pt, pl, pb, pr = a["pads"]
                n, c, h, w = tin.shape
                padded = bld.tensor(f"{op.name}/pad", [n, h + pt + pb, w + pl + pr, c], I8, scale=tin.scale, zero_point=tin.zero_point)
                paddings = bld.const_i32(f"{op.name}/paddings", [[0, 0], [pt, pb], [pl, pr], [0, 0]])
                bld.op(BO.PAD, [x, paddings], [padded], OPT.PadOptions, fb.PadOptionsT())
                x, pad = padded, "VALID"
            padding = fb.Padding.SAME if pad == "SAME" else fb.Padding.VALID
            if depthwise:
                w = op.weight.reshape(o, kh, kw).transpose(1, 2, 0)[None]  # 1, kh, kw, O
                wt = bld.tensor(f"{op.name}/weights", list(w.shape), I8, w, op.weight_scale, np.zeros(o, np.int64), qdim=3)
                opts = fb.DepthwiseConv2DOptionsT()
                opts.depthMultiplier = o // tin.shape[1]
                code, otype = BO.DEPTHWISE_CONV_2D, OPT.DepthwiseConv2DOptions
            else:
                w = op.weight.transpose(0, 2, 3, 1)  # O, kh, kw, I
                wt = bld.tensor(f"{op.name}/weights", list(w.shape), I8, w, op.weight_scale, np.zeros(o, np.int64), qdim=0)
                opts = fb.Conv2DOptionsT()
                code, otype = BO.CONV_2D, OPT.Conv2DOptions
            opts.padding, opts.strideH, opts.strideW = padding, a["strides"][0], a["strides"][1]
            opts.dilationHFactor, opts.dilationWFactor = a["dilations"]
            opts.fusedActivationFunction = fused(op)
            bt = bld.tensor(f"{op.name}/bias", [o], fb.TensorType.INT32, op.bias.astype(np.int32),
                            np.float32(tin.scale) * op.weight_scale, np.zeros(o, np.int64))
            bld.op(code, [x, wt, bt], [act_tensor(op.output)], otype, opts)
        elif op.kind == "dense":
            o, i = op.weight.shape
            if len(tin.shape) not in (2, 3):
                raise QuantizationError(f"node '{op.name}': dense on a {len(tin.shape)}-d input; flatten it first")
            w = op.weight
            if op.inputs[0] in nhwc_flat:
                c, h, wd = nhwc_flat[op.inputs[0]]
                w = w.reshape(o, c, h, wd).transpose(0, 2, 3, 1).reshape(o, i)
            wt = bld.tensor(f"{op.name}/weights", [o, i], I8, w, op.weight_scale, np.zeros(o, np.int64), qdim=0)
            bt = bld.tensor(f"{op.name}/bias", [o], fb.TensorType.INT32, op.bias.astype(np.int32),
                            np.float32(tin.scale) * op.weight_scale, np.zeros(o, np.int64))
            opts = fb.FullyConnectedOptionsT()
            opts.fusedActivationFunction = fused(op)
            opts.keepNumDims = len(tin.shape) == 3  # a dense layer over tokens: [N, T, C] -> [N, T, D]
            bld.op(BO.FULLY_CONNECTED, [x, wt, bt], [act_tensor(op.output)], OPT.FullyConnectedOptions, opts)
        elif op.kind == "batch_matmul":
            if len(tin.shape) == 4:
                raise QuantizationError(f"node '{op.name}': a 4-d batch matmul is not written to .tflite")
            opts = fb.BatchMatMulOptionsT()
            opts.adjX, opts.adjY = False, False
            bld.op(BO.BATCH_MATMUL, [x, act_tensor(op.inputs[1])], [act_tensor(op.output)], OPT.BatchMatMulOptions, opts)
        elif op.kind == "mul":
            opts = fb.MulOptionsT()
            opts.fusedActivationFunction = fused(op)
            bld.op(BO.MUL, [x, act_tensor(op.inputs[1])], [act_tensor(op.output)], OPT.MulOptions, opts)
        elif op.kind == "add":
            opts = fb.AddOptionsT()
            opts.fusedActivationFunction = fused(op)
            bld.op(BO.ADD, [x, act_tensor(op.inputs[1])], [act_tensor(op.output)], OPT.AddOptions, opts)
        elif op.kind in ("avgpool", "maxpool"):
            a = op.attrs
            if len(tin.shape) != 4:
                raise QuantizationError(f"node '{op.name}': a 1-D pool is not written to .tflite")
            pad = _padding(op, tin.shape[2:], tout.shape[2:], a["kernel"], a["strides"])
            if pad == "EXPLICIT":
                raise QuantizationError(f"node '{op.name}': pooling pads {a['pads']} are neither TFLite SAME nor VALID")
            opts = fb.Pool2DOptionsT()
            opts.padding = fb.Padding.SAME if pad == "SAME" else fb.Padding.VALID
            opts.strideH, opts.strideW = a["strides"]
            opts.filterHeight, opts.filterWidth = a["kernel"]
            opts.fusedActivationFunction = fused(op)
            code = BO.AVERAGE_POOL_2D if op.kind == "avgpool" else BO.MAX_POOL_2D
            bld.op(code, [x], [act_tensor(op.output)], OPT.Pool2DOptions, opts)
        elif op.kind == "mean":
            axes = op.attrs["axes"]
            if len(tin.shape) == 4:
                axes = tuple(sorted({0: 0, 1: 3, 2: 1, 3: 2}[ax] for ax in axes))
            opts = fb.ReducerOptionsT()
            opts.keepDims = op.attrs["keepdims"]
            if len(tin.shape) == 4 and not opts.keepDims and 3 in axes:
                raise QuantizationError(f"node '{op.name}': mean over channels without keepdims")
            out = act_tensor(op.output)
            if len(tin.shape) == 4 and not opts.keepDims:
                bld.tensors[out].shape = [d for i, d in enumerate(_nhwc(tin.shape)) if i not in axes]
            bld.op(BO.MEAN, [x, bld.const_i32(f"{op.name}/axes", list(axes))], [out], OPT.ReducerOptions, opts)
        elif op.kind == "reshape":
            if (tin.scale, tin.zero_point) != (tout.scale, tout.zero_point):
                raise QuantizationError(f"node '{op.name}': reshape changes the quantization; TFLite's int8 reshape copies")
            if len(tin.shape) == 4 and tin.shape[2] * tin.shape[3] > 1 and tin.shape[1] > 1 and op.output not in nhwc_flat:
                nchw = bld.tensor(f"{op.name}/nchw", list(tin.shape), I8, scale=tin.scale, zero_point=tin.zero_point)
                bld.op(BO.TRANSPOSE, [x, bld.const_i32(f"{op.name}/perm", [0, 3, 1, 2])], [nchw], OPT.TransposeOptions, fb.TransposeOptionsT())
                x = nchw
            if len(tout.shape) == 4 and tout.shape[2] * tout.shape[3] > 1 and tout.shape[1] > 1:
                raise QuantizationError(f"node '{op.name}': reshape to a 4-d feature map is not written")
            shape = _nhwc(tout.shape)
            opts = fb.ReshapeOptionsT()
            opts.newShape = shape
            bld.op(BO.RESHAPE, [x, bld.const_i32(f"{op.name}/shape", shape)], [act_tensor(op.output)], OPT.ReshapeOptions, opts)
        elif op.kind == "relu":
            if op.activation not in ("RELU", "RELU6"):
                raise QuantizationError(f"node '{op.name}': its Clip{op.act} is no TFLite activation op")
            if op.activation == "RELU6" and (tin.scale, tin.zero_point) != (tout.scale, tout.zero_point):
                raise QuantizationError(f"node '{op.name}': ReLU6 changes the quantization; TFLite Micro's int8 RELU6 keeps the input's")
            code = BO.RELU if op.activation == "RELU" else BO.RELU6
            bld.op(code, [x], [act_tensor(op.output)])
        elif op.kind == "softmax":
            if len(tin.shape) == 4:
                raise QuantizationError(f"node '{op.name}': softmax over NCHW channels is not written to .tflite")
            opts = fb.SoftmaxOptionsT()
            opts.beta = 1.0
            bld.op(BO.SOFTMAX, [x], [act_tensor(op.output)], OPT.SoftmaxOptions, opts)
        elif op.kind == "pad":
            if op.attrs["value"] != tout.zero_point:
                raise QuantizationError(f"node '{op.name}': pads with {op.attrs['value']}, not the zero point; not written")
            pads = op.attrs["pads"]
            if len(tin.shape) == 4:
                pads = [pads[0], pads[2], pads[3], pads[1]]
            bld.op(BO.PAD, [x, bld.const_i32(f"{op.name}/paddings", [list(p) for p in pads])], [act_tensor(op.output)],
                   OPT.PadOptions, fb.PadOptionsT())
        elif op.kind == "lut" and op.attrs["function"] == "gelu":
            opts = fb.GeluOptionsT()
            opts.approximate = False
            bld.op(BO.GELU, [x], [act_tensor(op.output)], OPT.GeluOptions, opts)
        elif op.kind == "lut":
            code = {"sigmoid": BO.LOGISTIC, "tanh": BO.TANH, "hard_swish": BO.HARD_SWISH}[op.attrs["function"]]
            bld.op(code, [x], [act_tensor(op.output)])
        elif op.kind == "float":
            raise QuantizationError(f"node '{op.name}': {op.attrs['node'].op_type} runs in float between quantized ops; no int8 TFLite op is written for it")
        elif op.kind == "concat":
            for n in op.inputs:
                if (t[n].scale, t[n].zero_point) != (tout.scale, tout.zero_point):
                    raise QuantizationError(f"node '{op.name}': concat inputs quantized unlike its output; TFLite Micro's int8 concat copies")
            opts = fb.ConcatenationOptionsT()
            opts.axis = {0: 0, 1: 3, 2: 1, 3: 2}[op.attrs["axis"]] if len(tout.shape) == 4 else op.attrs["axis"]
            opts.fusedActivationFunction = fused(op)
            bld.op(BO.CONCATENATION, [act_tensor(n) for n in op.inputs], [act_tensor(op.output)], OPT.ConcatenationOptions, opts)
        else:  # pragma: no cover
            raise AssertionError(op.kind)
    return bld.finish([bld.index[n] for n in g.inputs], [bld.index[n] for n in g.outputs])


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """A 4-d NCHW array as the .tflite holds it (NHWC); other ranks unchanged."""
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def run_tflite_micro(tflite: bytes, *inputs: np.ndarray) -> list[np.ndarray]:
    """Run a .tflite with TFLite Micro's reference kernels (the ``tflite-micro`` interpreter).

    Inputs and outputs are as the .tflite holds them (NHWC for feature maps, int8 for int8 models).
    """
    from tflite_micro.python.tflite_micro import runtime

    fb = _schema()
    sg = fb.Model.GetRootAsModel(tflite, 0).Subgraphs(0)
    tensor_bytes = sum(int(np.prod(sg.Tensors(i).ShapeAsNumpy())) * 4 for i in range(sg.TensorsLength()))
    interp = runtime.Interpreter.from_bytes(tflite, arena_size=2 * tensor_bytes + (1 << 20))
    for i, x in enumerate(inputs):
        interp.set_input(np.ascontiguousarray(x), i)
    interp.invoke()
    return [np.array(interp.get_output(i)) for i in range(sg.OutputsLength())]
