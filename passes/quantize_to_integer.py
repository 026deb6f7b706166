"""QuantizeToInteger: turn QDQ (quantize / dequantize) Relax graphs into integer-only kernels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from . import integer_kernels as K
from .activation_tables import SOFTMAX_OUTPUT, activation_table, gelu_table, softmax_exp_table
from .fixed_point import (add_params, batch_matmul_multiplier, conv_multipliers, mean_multiplier, mul_multiplier,
                          requantize, rescale_multiplier)
from .int8_layer_norm import layer_norm_params, layer_norm_primfunc
from .int8_softmax import MAX_DEPTH, softmax_primfunc


@dataclass(frozen=True)
class QuantParams:
    """Per-tensor affine quantization of an int8 tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


@dataclass(frozen=True)
class _Dequantized:
    """An operand that is `dequantize(source)` of a per-tensor int8 tensor, maybe through a reshape."""

    source: relax.Expr      # the int8 expression (original IR)
    params: QuantParams
    reshape: tuple[int, ...] | None = None


def _op_name(expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def _constant(expr) -> np.ndarray | None:
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


def _scalar(expr) -> float | None:
    value = _constant(expr)
    return None if value is None or value.size != 1 else value.reshape(-1)[0].item()


def _int_shape(expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape.values)


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def io_quantization(mod: tvm.IRModule, func_name: str = "main") -> dict[str, QuantParams]:
    """Quantization of `func_name`'s input and output where QuantizeToInteger makes them int8:
    {"input": ..., "output": ...} for a single input quantized first thing and a single output
    that is a dequantize; an entry is missing where that end stays float32."""
    func = mod[func_name]
    found: dict[str, QuantParams] = {}
    bindings = [b for block in func.body.blocks for b in block.bindings]
    uses = use_counts(func)
    if len(func.params) == 1:
        param = func.params[0]
        for b in bindings:
            if _op_name(b.value) == "relax.quantize" and b.value.args[0].same_as(param):
                params = _per_tensor(b.value)
                if params is not None and uses.get(param.__chandle__(), 0) == 1 and _dtype(b.var) == "int8":
                    found["input"] = params
    out = func.body.body
    for b in bindings:
        if b.var.same_as(out) and _op_name(b.value) == "relax.dequantize":
            params = _per_tensor(b.value)
            if params is not None and _dtype(b.value.args[0]) == "int8":
                found["output"] = params
    return found


def _per_tensor(call: relax.Call) -> QuantParams | None:
    scale, zp = _scalar(call.args[1]), _scalar(call.args[2])
    if scale is None or zp is None:
        return None
    return QuantParams(float(np.float32(scale)), int(zp))


def _min_max(value) -> tuple[str, relax.Expr, relax.Expr] | None:
    """("maximum" | "minimum", operand, bound) of relax.maximum/minimum, or of the call_tir to a
    PrimFunc of that name that the ONNX importer emits for Clip."""
    name = _op_name(value)
    if name in ("relax.maximum", "relax.minimum"):
        return name.split(".")[1], value.args[0], value.args[1]
    if name == "relax.call_tir" and isinstance(value.args[1], relax.Tuple) and len(value.args[1].fields) == 2:
        callee = value.args[0].name_hint.rstrip("0123456789")  # maximum, maximum1, ...
        if callee in ("maximum", "minimum"):
            return callee, value.args[1].fields[0], value.args[1].fields[1]
    return None


def _quantize_bound(value: float, out: QuantParams) -> int:
    """TFLite's CalculateActivationRangeQuantized for one bound: zp + round(value / scale), the
    division in float32, halves away from zero."""
    x = float(np.float32(value) / np.float32(out.scale))
    return out.zero_point + int(np.sign(x) * np.floor(abs(x) + 0.5))


def use_counts(func: relax.Function) -> dict[int, int]:
    """How many times each Relax variable (by handle) is read in `func`'s bindings and result."""
    counts: dict[int, int] = {}

    def visit(e) -> None:
        if isinstance(e, relax.Var):
            counts[e.__chandle__()] = counts.get(e.__chandle__(), 0) + 1
        elif isinstance(e, relax.Call):
            for a in e.args:
                visit(a)
        elif isinstance(e, relax.Tuple):
            for f in e.fields:
                visit(f)
        elif isinstance(e, relax.TupleGetItem):
            visit(e.tuple_value)

    for block in func.body.blocks:
        for b in block.bindings:
            visit(b.value)
    visit(func.body.body)
    return counts


_WEIGHTED = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.matmul")


@relax.expr_functor.mutator
class _IntegerRewriter(relax.PyExprMutator):
    """Rewrites, binding by binding, every `quantize` whose producer chain has an integer kernel."""

    def __init__(self, mod: tvm.IRModule, func: relax.Function, int8_input: bool, int8_output: bool) -> None:
        super().__init__(mod)
        self.defs: dict[int, relax.Expr] = {}
        for block in func.body.blocks:
            for b in block.bindings:
                self.defs[b.var.__chandle__()] = b.value
        self.param = func.params[0] if int8_input else None
        self.new_param = None
        if int8_input:
            shape = _int_shape(self.param)
            self.new_param = relax.Var(self.param.name, relax.TensorType(shape, "int8"))
        self.output = func.body.body if int8_output else None

    # ---- looking back through the original graph ---------------------------------------
    def _def(self, expr):
        if isinstance(expr, relax.Var):
            return self.defs.get(expr.__chandle__())
        return None

    def _dequantized(self, expr) -> _Dequantized | None:
        value = self._def(expr)
        reshape = None
        if _op_name(value) == "relax.reshape":
            reshape = _int_shape(expr)
            value = self._def(value.args[0])
        if _op_name(value) != "relax.dequantize" or _dtype(value.args[0]) != "int8":
            return None
        params = _per_tensor(value)
        if params is None:
            return None
        return _Dequantized(value.args[0], params, reshape)

    def _const_float(self, expr) -> np.ndarray | None:
        """The value of a float expression computed from constants only (dequantize, reshape, transpose)."""
        direct = _constant(expr)
        if direct is not None:
            return direct
        value = self._def(expr) if isinstance(expr, relax.Var) else expr
        name = _op_name(value)
        if name == "relax.dequantize":
            q, scale, zp = (_constant(a) for a in value.args)
            if q is None or scale is None or zp is None:
                return None
            axis = int(value.attrs.axis) % max(q.ndim, 1)
            bshape = [1] * q.ndim
            if scale.size > 1:
                bshape[axis] = scale.size
            s = scale.astype(np.float32).reshape(bshape if scale.size > 1 else ())
            z = zp.astype(np.int64).reshape(bshape if zp.size > 1 else ())
            return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)
        if name == "relax.reshape":
            inner = self._const_float(value.args[0])
            return None if inner is None else inner.reshape(_int_shape(value))
        if name == "relax.isnan":
            inner = self._const_float(value.args[0])
            return None if inner is None else np.isnan(inner)
        if name == "relax.where":
            parts = [self._const_float(a) for a in value.args]
            return None if any(p is None for p in parts) else np.where(*parts)
        if name == "relax.permute_dims":
            inner = self._const_float(value.args[0])
            axes = value.attrs.axes
            return None if inner is None else np.transpose(inner, None if axes is None else [int(a) for a in axes])
        return None

    def _int32_constant(self, expr) -> np.ndarray | None:
        """q of `dequantize(q)` (maybe reshaped) for an int32 constant q with zero point 0."""
        value = self._def(expr)
        if _op_name(value) == "relax.reshape":
            value = self._def(value.args[0]) if isinstance(value.args[0], relax.Var) else value.args[0]
        if _op_name(value) != "relax.dequantize":
            return None
        q, zp = _constant(value.args[0]), _constant(value.args[2])
        if q is None or zp is None or q.dtype != np.int32 or np.any(zp != 0):
            return None
        return q

    def _quantized_weight(self, expr, out_axis: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(int8 weight, float64 per-output-channel scales) of a symmetric int8 weight constant,
        with the output channel moved to axis 0; None otherwise."""
        value = self._def(expr)
        transposed = False
        if _op_name(value) == "relax.permute_dims":
            axes = value.attrs.axes
            if axes is not None and [int(a) for a in axes] != [1, 0]:
                return None
            transposed = True
            value = self._def(value.args[0])
        if _op_name(value) != "relax.dequantize":
            return None
        q, scale, zp = (_constant(a) for a in value.args)
        if q is None or scale is None or zp is None or q.dtype != np.int8 or np.any(zp != 0):
            return None
        channel = out_axis if not transposed else 1 - out_axis
        axis = int(value.attrs.axis) % q.ndim
        if scale.size > 1 and axis != channel:
            return None
        q = np.moveaxis(q, channel, 0)
        scales = np.broadcast_to(scale.astype(np.float32).astype(np.float64).reshape(-1), (q.shape[0],))
        return np.ascontiguousarray(q), np.array(scales)

    def _activation(self, expr, out: QuantParams) -> tuple[relax.Expr, int, int]:
        """Strip relu / clip / maximum / minimum (with a constant bound) ending a chain: (producer,
        act_min, act_max) in the output's int8 range (TFLite's CalculateActivationRangeQuantized)."""
        lo, hi = K.INT8_MIN, K.INT8_MAX
        while True:
            value = self._def(expr)
            name = _op_name(value)
            if name == "relax.nn.relu":
                lo = max(lo, out.zero_point)
            elif name == "relax.clip":
                a, b = (float(v.value) for v in value.args[1:3])
                if np.isfinite(a):
                    lo = max(lo, _quantize_bound(a, out))
                if np.isfinite(b):
                    hi = min(hi, _quantize_bound(b, out))
            elif _min_max(value) is not None:
                which, operand, bound_expr = _min_max(value)
                bound = self._const_float(bound_expr)
                if bound is None or bound.size != 1:
                    return expr, lo, hi
                if which == "maximum":
                    lo = max(lo, _quantize_bound(bound.item(), out))
                else:
                    hi = min(hi, _quantize_bound(bound.item(), out))
                expr = operand
                continue
            else:
                return expr, lo, hi
            expr = value.args[0]

    # ---- integer kernels -------------------------------------------------------------------
    def _int8(self, operand: _Dequantized) -> relax.Expr:
        source = self.visit_expr(operand.source)
        if operand.reshape is not None:
            source = self.builder_.emit(relax.op.reshape(source, operand.reshape))
        return source

    def _conv_or_dense(self, expr, out: QuantParams) -> relax.Expr | None:
        producer, act_min, act_max = self._activation(expr, out)
        value = self._def(producer)
        bias = None
        bias_int32 = None
        if _op_name(value) == "relax.add":
            for acc_side, bias_side in ((0, 1), (1, 0)):
                b = self._const_float(value.args[bias_side])
                if b is not None and _op_name(self._def(value.args[acc_side])) in _WEIGHTED:
                    bias, bias_int32 = b, self._int32_constant(value.args[bias_side])
                    value = self._def(value.args[acc_side])
                    break
            else:
                return None
        name = _op_name(value)
        if name == "relax.nn.conv2d":
            attrs = value.attrs
            if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) != ("NCHW", "OIHW", "NCHW"):
                return None
            out_axis = 0
        elif name == "relax.nn.conv1d":
            attrs = value.attrs
            if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) != ("NCW", "OIW", "NCW"):
                return None
            out_axis = 0
        elif name == "relax.matmul":
            if len(_int_shape(value.args[0])) < 2 or len(_int_shape(value.args[1])) != 2:
                return None
            out_axis = 1
        else:
            return None
        data = self._dequantized(value.args[0])
        weight = self._quantized_weight(value.args[1], out_axis)
        if data is None or weight is None:
            return None
        w, w_scales = weight
        channels = w.shape[0]
        if bias is None:
            bias = np.zeros(channels, np.float32)
        bias = bias.reshape(-1)
        if bias.size == 1:
            bias = np.repeat(bias, channels)
        if bias.size != channels:
            return None
        bias_q = np.round(bias.astype(np.float64) / (np.float64(np.float32(data.params.scale)) * w_scales))
        if bias_int32 is not None and bias_int32.size == channels:
            bias_q = bias_int32.reshape(-1)  # an int32 bias (QDQ's input_scale * weight_scale) is exact as stored
        folded = bias_q.astype(np.int64) - data.params.zero_point * w.reshape(channels, -1).astype(np.int64).sum(axis=1)
        mult, shift = conv_multipliers(data.params.scale, w_scales, out.scale)
        args = [relax.const(w), relax.const(folded.astype(np.int32)), relax.const(mult), relax.const(shift)]
        common = dict(output_zero_point=out.zero_point, act_min=act_min, act_max=act_max)
        x = self._int8(data)
        if name == "relax.nn.conv1d":  # as a 2-D conv over one row
            attrs = value.attrs
            n, c, length = _int_shape(value.args[0])
            x = self.builder_.emit(relax.op.reshape(x, (n, c, 1, length)))
            args[0] = relax.const(w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]))
            (left, right), (stride,), (dilation,) = ([int(p) for p in attrs.padding], [int(s) for s in attrs.strides],
                                                     [int(d) for d in attrs.dilation])
            conv = self.builder_.emit(self.builder_.call_te(
                K.conv2d_int8, x, *args, primfunc_name_hint="conv2d_int8", strides=[1, stride],
                padding=[0, left, 0, right], dilation=[1, dilation], groups=int(attrs.groups),
                input_zero_point=data.params.zero_point, **common,
            ))
            return relax.op.reshape(conv, _int_shape(value))
        if name == "relax.nn.conv2d":
            attrs = value.attrs
            return self.builder_.call_te(
                K.conv2d_int8, x, *args, primfunc_name_hint="conv2d_int8",
                strides=[int(s) for s in attrs.strides], padding=[int(p) for p in attrs.padding],
                dilation=[int(d) for d in attrs.dilation], groups=int(attrs.groups),
                input_zero_point=data.params.zero_point, **common,
            )
        in_shape = _int_shape(value.args[0])
        if len(in_shape) == 2:
            return self.builder_.call_te(K.dense_int8, x, *args, primfunc_name_hint="matmul_int8", **common)
        # a dense layer over tokens ([.., T, C] x [C, D]): the same kernel over the rows
        rows = int(np.prod(in_shape[:-1]))
        x = self.builder_.emit(relax.op.reshape(x, (rows, in_shape[-1])))
        dense = self.builder_.emit(self.builder_.call_te(K.dense_int8, x, *args, primfunc_name_hint="matmul_int8", **common))
        return relax.op.reshape(dense, in_shape[:-1] + (channels,))

    def _batch_matmul(self, expr, out: QuantParams) -> relax.Expr | None:
        """matmul of two int8 activations (attention's Q.K^T, scores.V): TFLite's int8 BATCH_MATMUL,
        both zero points subtracted, int32 accumulation, the multiplier of float32(s_a * s_b) / s_out."""
        producer, act_min, act_max = self._activation(expr, out)
        value = self._def(producer)
        if _op_name(value) != "relax.matmul":
            return None
        a, b = (self._dequantized(arg) for arg in value.args)
        shapes = [_int_shape(arg) for arg in value.args]
        if a is None or b is None or len(shapes[0]) < 2 or len(shapes[1]) < 2:
            return None
        mult, shift = batch_matmul_multiplier(a.params.scale, b.params.scale, out.scale)
        return self.builder_.call_te(
            K.batch_matmul_int8, self._int8(a), self._int8(b), primfunc_name_hint="batch_matmul_int8",
            zero_points=[a.params.zero_point, b.params.zero_point], multiplier=mult, shift=shift,
            output_zero_point=out.zero_point, act_min=act_min, act_max=act_max,
        )

    def _add(self, expr, out: QuantParams) -> relax.Expr | None:
        producer, act_min, act_max = self._activation(expr, out)
        value = self._def(producer)
        if _op_name(value) != "relax.add":
            return None
        a, b = (self._dequantized(arg) for arg in value.args)
        if a is None or b is None or _int_shape(value.args[0]) != _int_shape(value.args[1]):
            return None
        return self.builder_.call_te(
            K.add_int8, self._int8(a), self._int8(b), primfunc_name_hint="add_int8",
            params=add_params(a.params.scale, b.params.scale, out.scale),
            zero_points=[a.params.zero_point, b.params.zero_point], output_zero_point=out.zero_point,
            act_min=act_min, act_max=act_max,
        )

    def _mul(self, expr, out: QuantParams) -> relax.Expr | None:
        """Product of two int8 tensors of one rank (size-1 axes broadcast): TFLite's int8 MUL."""
        producer, act_min, act_max = self._activation(expr, out)
        value = self._def(producer)
        if _op_name(value) != "relax.multiply":
            return None
        a, b = (self._dequantized(arg) for arg in value.args)
        shapes = [_int_shape(arg) for arg in value.args]
        if (a is None or b is None or len(shapes[0]) != len(shapes[1])
                or any(x != y and 1 not in (x, y) for x, y in zip(*shapes))):
            return None
        mult, shift = mul_multiplier(a.params.scale, b.params.scale, out.scale)
        return self.builder_.call_te(
            K.mul_int8, self._int8(a), self._int8(b), primfunc_name_hint="mul_int8",
            zero_points=[a.params.zero_point, b.params.zero_point], multiplier=mult, shift=shift,
            output_zero_point=out.zero_point, act_min=act_min, act_max=act_max,
        )

    def _pool(self, expr, out: QuantParams) -> relax.Expr | None:
        producer, act_min, act_max = self._activation(expr, out)
        value = self._def(producer)
        name = _op_name(value)
        if name not in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.max_pool1d", "relax.nn.avg_pool1d"):
            return None
        data = self._dequantized(value.args[0])
        attrs = value.attrs
        one_d = name.endswith("1d")
        if (data is None or data.reshape is not None or data.params != out
                or str(attrs.layout) != ("NCW" if one_d else "NCHW") or any(int(d) != 1 for d in attrs.dilation)):
            return None
        pool, strides, padding = ([int(p) for p in attrs.pool_size], [int(s) for s in attrs.strides],
                                  [int(p) for p in attrs.padding])
        in_shape, out_shape = _int_shape(value.args[0]), _int_shape(value)
        x = self._int8(data)
        if one_d:  # as a 2-D pool over one row
            pool, strides, padding = [1, pool[0]], [1, strides[0]], [0, padding[0], 0, padding[1]]
            x = self.builder_.emit(relax.op.reshape(x, (in_shape[0], in_shape[1], 1, in_shape[2])))
        if bool(attrs.ceil_mode):  # ceil_mode's extra windows: padding after the input, never counted
            in_4d = (in_shape[0], in_shape[1], 1, in_shape[2]) if one_d else in_shape
            out_4d = (out_shape[0], out_shape[1], 1, out_shape[2]) if one_d else out_shape
            padding[2] += max((out_4d[2] - 1) * strides[0] + pool[0] - (in_4d[2] + padding[0] + padding[2]), 0)
            padding[3] += max((out_4d[3] - 1) * strides[1] + pool[1] - (in_4d[3] + padding[1] + padding[3]), 0)
        kwargs = dict(pool=pool, strides=strides, padding=padding, act_min=act_min, act_max=act_max)
        if name.startswith("relax.nn.max_pool"):
            pooled = self.builder_.call_te(K.max_pool2d_int8, x, primfunc_name_hint="max_pool2d_int8", **kwargs)
        elif bool(attrs.count_include_pad) and any(int(p) for p in attrs.padding):
            return None
        else:
            pooled = self.builder_.call_te(K.avg_pool2d_int8, x, primfunc_name_hint="avg_pool2d_int8", **kwargs)
        return relax.op.reshape(self.builder_.emit(pooled), out_shape) if one_d else pooled

    def _mean(self, expr, out: QuantParams) -> relax.Expr | None:
        producer, act_min, act_max = self._activation(expr, out)
        value = self._def(producer)
        if _op_name(value) != "relax.mean":
            return None
        data = self._dequantized(value.args[0])
        shape = _int_shape(value.args[0])
        axes = None if value.attrs.axis is None else sorted(int(a) % len(shape) for a in value.attrs.axis)
        if data is None or data.reshape is not None or not axes:
            return None
        if axes != list(range(2, len(shape))) or len(shape) not in (3, 4):
            # other axes (e.g. the tokens of [N, T, C]): the reduced axes moved last, as one row each
            kept = [i for i in range(len(shape)) if i not in axes]
            x = self._int8(data)
            if axes != list(range(len(shape) - len(axes), len(shape))):
                x = self.builder_.emit(relax.op.permute_dims(x, kept + axes))
            count = int(np.prod([shape[i] for i in axes]))
            rows = int(np.prod([shape[i] for i in kept]))
            x = self.builder_.emit(relax.op.reshape(x, (1, rows, 1, count)))
            mult, shift = mean_multiplier(data.params.scale, out.scale, count)
            mean = self.builder_.emit(self.builder_.call_te(
                K.mean_hw_int8, x, primfunc_name_hint="mean_int8", keepdims=False,
                input_zero_point=data.params.zero_point, output_zero_point=out.zero_point, multiplier=mult, shift=shift,
                act_min=act_min, act_max=act_max,
            ))
            return relax.op.reshape(mean, _int_shape(value))
        x = self._int8(data)
        if len(shape) == 3:  # the mean over W of NCW: as over H and W of one row
            x = self.builder_.emit(relax.op.reshape(x, (shape[0], shape[1], 1, shape[2])))
        count = int(np.prod(shape[2:]))
        mult, shift = mean_multiplier(data.params.scale, out.scale, count)
        mean = self.builder_.call_te(
            K.mean_hw_int8, x, primfunc_name_hint="mean_int8", keepdims=bool(value.attrs.keepdims),
            input_zero_point=data.params.zero_point, output_zero_point=out.zero_point, multiplier=mult, shift=shift,
            act_min=act_min, act_max=act_max,
        )
        return relax.op.reshape(self.builder_.emit(mean), _int_shape(value)) if len(shape) == 3 else mean

    def _hard_swish_operand(self, value) -> relax.Expr | None:
        """x of `x * (clip(x + 3, 0, 6) / 6)` (the ONNX importer's HardSwish), either factor order."""
        for x, gate in ((value.args[0], value.args[1]), (value.args[1], value.args[0])):
            div = self._def(gate)
            if _op_name(div) != "relax.divide" or not np.array_equal(self._const_float(div.args[1]), 6.0):
                continue
            clip = self._def(div.args[0])
            if _op_name(clip) != "relax.clip" or [float(v.value) for v in clip.args[1:3]] != [0.0, 6.0]:
                continue
            add = self._def(clip.args[0])
            if (_op_name(add) == "relax.add" and add.args[0].same_as(x)
                    and np.array_equal(self._const_float(add.args[1]), 3.0)):
                return x
        return None

    def _gelu_operand(self, value) -> relax.Expr | None:
        """x of `x * (erf(x / sqrt 2) + 1) * 0.5` (the ONNX importer's exported GELU, operands of the
        multiplies and the add in either order)."""
        def is_const(expr, v: float) -> bool:
            c = self._const_float(expr)
            return c is not None and c.size == 1 and bool(np.isclose(float(c.reshape(())), v, rtol=1e-6))

        for inner_expr, half in ((value.args[0], value.args[1]), (value.args[1], value.args[0])):
            inner = self._def(inner_expr)
            if _op_name(inner) != "relax.multiply" or not is_const(half, 0.5):
                continue
            for x, gate in ((inner.args[0], inner.args[1]), (inner.args[1], inner.args[0])):
                add = self._def(gate)
                if _op_name(add) != "relax.add":
                    continue
                for erf_expr, one in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
                    erf = self._def(erf_expr)
                    div = self._def(erf.args[0]) if _op_name(erf) == "relax.erf" else None
                    if (_op_name(div) == "relax.divide" and div.args[0].same_as(x) and is_const(one, 1.0)
                            and is_const(div.args[1], float(np.sqrt(np.float32(2.0))))):
                        return x
        return None

    def _lut(self, expr, out: QuantParams) -> relax.Expr | None:
        """sigmoid / tanh / hard-swish of an int8 tensor as one table lookup with TFLite's int8
        kernel's values (passes/activation_tables.py); left alone where TFLite has no int8 kernel
        for these quantizations (e.g. a sigmoid output not quantized with scale 1/256, zero point -128)."""
        value = self._def(expr)
        name = _op_name(value)
        if name in ("relax.sigmoid", "relax.tanh"):
            function, source = name.split(".")[1], value.args[0]
        elif name == "relax.multiply":
            source = self._gelu_operand(value)
            function = "gelu" if source is not None else "hard_swish"
            if source is None:
                source = self._hard_swish_operand(value)
        else:
            return None
        data = None if source is None else self._dequantized(source)
        if data is None or data.reshape is not None:
            return None
        if function == "gelu":
            table = gelu_table(data.params.scale, data.params.zero_point, out.scale, out.zero_point)
        else:
            table = activation_table(function, data.params.scale, data.params.zero_point, out.scale, out.zero_point)
        if table is None:
            return None
        return self.builder_.call_te(K.lut_int8, self._int8(data), relax.const(table), primfunc_name_hint="lut_int8")

    def _layer_norm(self, expr, out: QuantParams) -> relax.Expr | None:
        """layer_norm over the last axis of an int8 tensor with constant scale and bias: one call of
        the integer kernel of passes/int8_layer_norm.py (TFLite has no int8 LayerNorm); left alone
        (a float island) outside its limits."""
        value = self._def(expr)
        if _op_name(value) != "relax.nn.layer_norm":
            return None
        data = self._dequantized(value.args[0])
        shape = _int_shape(value)
        axes = [int(a) % len(shape) for a in value.attrs.axes]
        gamma, beta = self._const_float(value.args[1]), self._const_float(value.args[2])
        if (data is None or data.reshape is not None or axes != [len(shape) - 1] or gamma is None or beta is None
                or gamma.size != shape[-1] or beta.size != shape[-1]):
            return None
        params = layer_norm_params(data.params.scale, out.scale, gamma if bool(value.attrs.scale) else np.ones(shape[-1]),
                                   beta if bool(value.attrs.center) else np.zeros(shape[-1]), float(value.attrs.epsilon))
        if params is None:
            return None
        callee = self.builder_.add_func(layer_norm_primfunc(
            shape, input_zero_point=data.params.zero_point, output_zero_point=out.zero_point, eps=params["eps"],
            fg=params["fg"]), "layer_norm_int8")
        return relax.call_tir(callee, [self._int8(data), relax.const(params["g"]), relax.const(params["b"])],
                              relax.TensorType(shape, "int8"))

    def _softmax(self, expr, out: QuantParams) -> relax.Expr | None:
        """softmax over the last axis of an int8 tensor, quantized as TFLite's int8 SOFTMAX requires
        (scale 1/256, zero point -128): one call of the C kernel of passes/int8_softmax.py with the
        compile-time exp table; left alone otherwise (a float island)."""
        value = self._def(expr)
        if _op_name(value) != "relax.nn.softmax":
            return None
        data = self._dequantized(value.args[0])
        shape = _int_shape(value)
        if (data is None or data.reshape is not None or int(value.attrs.axis) % len(shape) != len(shape) - 1
                or shape[-1] > MAX_DEPTH or (np.float32(out.scale), out.zero_point)
                != (np.float32(SOFTMAX_OUTPUT[0]), SOFTMAX_OUTPUT[1])):
            return None
        callee = self.builder_.add_func(softmax_primfunc(shape), "softmax_int8")
        return relax.call_tir(callee, [self._int8(data), relax.const(softmax_exp_table(data.params.scale))],
                              relax.TensorType(shape, "int8"))

    def _int8_as(self, operand: _Dequantized, out: QuantParams, act_min: int = K.INT8_MIN,
                 act_max: int = K.INT8_MAX) -> relax.Expr:
        """The operand as int8 in the quantization `out` (requantized where it differs)."""
        x = self._int8(operand)
        if operand.params == out and (act_min, act_max) == (K.INT8_MIN, K.INT8_MAX):
            return x
        mult, shift = rescale_multiplier(operand.params.scale, out.scale)
        bound = self.builder_.lookup_binding(x) if isinstance(x, relax.Var) else x
        value = None if bound is None else _constant(bound)
        if value is not None:  # an int8 constant: requantized now (no kernel on constants)
            q = requantize(value.astype(np.int64) - operand.params.zero_point, mult, shift, out.zero_point, act_min, act_max)
            return relax.const(np.asarray(q, np.int8))
        return self.builder_.emit(self.builder_.call_te(
            K.requantize_int8, x, primfunc_name_hint="requantize_int8", input_zero_point=operand.params.zero_point,
            output_zero_point=out.zero_point, multiplier=mult, shift=shift, act_min=act_min, act_max=act_max,
        ))

    def _layout(self, expr, out: QuantParams) -> relax.Expr | None:
        """reshape / flatten / transpose / concat of int8 tensors: done on int8, inputs whose
        quantization differs from the output's requantized first (TFLite's reshape and
        concatenation; a transpose only moves values)."""
        value = self._def(expr)
        name = _op_name(value)
        if name == "relax.reshape":
            data = self._dequantized(value.args[0])
            if data is None:
                return None
            return relax.op.reshape(self._int8_as(data, out), _int_shape(expr))
        if name == "relax.permute_dims":
            data = self._dequantized(value.args[0])
            if data is None:
                return None
            axes = value.attrs.axes
            return relax.op.permute_dims(self._int8_as(data, out), None if axes is None else [int(a) for a in axes])
        if name == "relax.concat" and isinstance(value.args[0], relax.Tuple):
            parts = [self._dequantized(f) for f in value.args[0].fields]
            if any(p is None for p in parts):
                return None
            return relax.op.concat([self._int8_as(p, out) for p in parts], axis=int(value.attrs.axis))
        return None

    def _relu(self, expr, out: QuantParams) -> relax.Expr | None:
        """A relu / clip on its own (TFLite's RELU, RELU6): requantized to the output's scale and
        clamped, as TFLite Micro's ReluQuantized does even where the quantization is unchanged."""
        producer, act_min, act_max = self._activation(expr, out)
        if producer.same_as(expr):
            return None
        data = self._dequantized(producer)
        if data is None:
            return None
        mult, shift = rescale_multiplier(data.params.scale, out.scale)
        return self.builder_.call_te(
            K.requantize_int8, self._int8(data), primfunc_name_hint="relu_int8", input_zero_point=data.params.zero_point,
            output_zero_point=out.zero_point, multiplier=mult, shift=shift, act_min=act_min, act_max=act_max,
        )

    def _integer(self, call: relax.Call) -> relax.Expr | None:
        out = _per_tensor(call)
        if out is None or str(call.attrs.out_dtype) != "int8":
            return None
        for rule in (self._conv_or_dense, self._batch_matmul, self._add, self._pool, self._mean, self._layout,
                     self._relu, self._lut, self._softmax, self._layer_norm, self._mul):
            replaced = rule(call.args[0], out)
            if replaced is not None:
                return replaced
        return None

    # ---- the binding visitor ---------------------------------------------------------------
    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        name = _op_name(value)
        if name == "relax.quantize" and self.param is not None and value.args[0].same_as(self.param):
            self.set_var_remap(binding.var, self.new_param)
            return
        if name == "relax.dequantize" and self.output is not None and binding.var.same_as(self.output):
            source = self.visit_expr(value.args[0])
            self.set_var_remap(binding.var, self.builder_.emit_output(source, name_hint=binding.var.name))
            return
        if name == "relax.quantize" and str(value.attrs.out_dtype) == "int8":
            constant = self._const_float(value.args[0])
            params = _per_tensor(value)
            if constant is not None and params is not None:  # an int8 constant (ONNX QuantizeLinear's rounding)
                q = np.clip(np.rint(constant.astype(np.float32) / np.float32(params.scale)) + params.zero_point, -128, 127)
                self.set_var_remap(binding.var, self.builder_.emit(relax.const(q.astype(np.int8)), name_hint=binding.var.name))
                return
        if name == "relax.quantize":
            replaced = self._integer(value)
            if replaced is not None:
                if isinstance(binding.var, relax.DataflowVar):
                    new = self.builder_.emit(replaced, name_hint=binding.var.name)
                else:
                    new = self.builder_.emit_output(replaced, name_hint=binding.var.name)
                self.set_var_remap(binding.var, new)
                return
        super().visit_var_binding_(binding)


@tvm.transform.module_pass(opt_level=0, name="QuantizeToInteger")
class QuantizeToInteger:
    """Replace `dequantize -> op -> quantize` chains by integer-only kernels (TFLite int8 semantics).

    Expects: `main` as `relax.frontend.onnx.from_onnx` imports a QDQ model (or any Relax graph in
    that form): int8 tensors made by `relax.quantize` and read through `relax.dequantize` with
    per-tensor scale and zero point; int8 weights as `dequantize(constant)` with zero point 0,
    per-tensor or per-output-channel; NCHW / OIHW (NCW / OIW); static shapes. Run it before MCULowering
    (whose FoldConstant would turn dequantized weights into float32 constants).

    Rewrites, where the whole chain matches (otherwise the chain is left as it was: a float island
    between a dequantize and a quantize that LegalizeOps lowers in float32):
    - conv2d / conv1d (groups: 1, depthwise, grouped; a conv1d as a conv2d over one row) / matmul (2-D, from Gemm/MatMul/Linear) -> optional
      bias add -> optional relu/clip -> quantize: one kernel, int8 in, int32 accumulation, bias
      with the input zero point folded in, per-channel multiplier and shift, int8 out;
    - add of two int8 tensors (TFLite's ADD rescale), mul of two int8 tensors of one rank (TFLite's
      MUL, size-1 axes broadcast), max/avg pool (1-D or 2-D, ceil_mode as extra
      padding after the input; same scale in and out), mean
      over H and W (TFLite Micro's QuantizedMeanOrSum), reshape/flatten, transpose and concat on
      int8 (an input whose quantization differs from the output's is requantized first), and a
      relu / clip on its own (requantized and clamped, TFLite Micro's ReluQuantized);
    - sigmoid, tanh and hard-swish (x * clip(x + 3, 0, 6) / 6) of an int8 tensor: one lookup in a
      256-entry int8 table holding TFLite's int8 LOGISTIC / TANH / HARD_SWISH for every input
      (passes/activation_tables.py), where TFLite has an int8 kernel for the quantizations;
    - softmax over the last axis (at most 256 values) with TFLite's int8 output quantization: one
      call of the C kernel of passes/int8_softmax.py with a compile-time exp table;
    - matmul of two int8 activations (TFLite's BATCH_MATMUL), and a matmul with int8 weights over
      the tokens of a [.., T, C] input (the dense kernel over T rows);
    - GELU as exported (x * (erf(x / sqrt 2) + 1) * 0.5): one table lookup, TFLite Micro's int8 GELU;
    - layer_norm over the last axis with constant scale and bias: the integer kernel of
      passes/int8_layer_norm.py;
    - quantize of a constant (a position embedding, a class token): an int8 constant.
    Weight and bias constants are evaluated through the importer's dequantize / reshape /
    permute_dims; an int32 bias (QDQ's scale input_scale * weight_scale) is used as stored.
    With int8_io (default True), a single input that is quantized first thing becomes an int8
    parameter and an output that is a dequantize becomes the int8 tensor itself (their scale and
    zero point: `io_quantization`).
    Guarantees: every rewritten kernel computes exactly TFLite's integer arithmetic
    (passes/fixed_point.py, double rounding); weights stay int8 constants; dead float bindings
    are removed.
    """

    def __init__(self, int8_io: bool = True) -> None:
        self.int8_io = int8_io

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
            return mod
        func = mod["main"]
        io = io_quantization(mod) if self.int8_io else {}
        rewriter = _IntegerRewriter(mod, func, "input" in io, "output" in io)
        new = rewriter.visit_expr(func)
        params = [rewriter.new_param] if rewriter.new_param is not None else list(new.params)
        rewritten = rewriter.builder_.get()
        rewritten["main"] = relax.Function(params, new.body, None, new.is_pure, new.attrs)
        return relax.transform.DeadCodeElimination()(rewritten)
