"""TE definitions of the int8 kernels that QuantizeToInteger emits (integer-only arithmetic).

Every kernel reads int8, accumulates in int32 and writes int8 through TFLite's fixed-point
requantization with double rounding (MultiplyByQuantizedMultiplier: gemmlowp's
SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT), exactly as passes/fixed_point.py
computes it and TFLite Micro's reference kernels do. In TIR it is one call of the C function
`tvmnas_requantize` (REQUANTIZE_C, printed by the emitter before the kernels).
Block names follow TOPI's (`pad_temp`, one reduction, then the epilogue) so ScheduleForMCU tiles
these kernels as it tiles the float ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import te, tirx

INT8_MIN, INT8_MAX = -128, 127

# block annotation naming the layer constants of a conv / dense kernel that passes/int8_simd.py
# can replace by its SIMD micro-kernel 
GEMM_ANNOTATION = "tvmnas_int8_gemm"
# the same for a depthwise conv (groups = input channels, dilation 1) and its SIMD depthwise kernel
DEPTHWISE_ANNOTATION = "tvmnas_int8_depthwise"
# block annotation naming the constants of an int8 ADD, so passes/int8_simd.py can fold the add into
# the SIMD conv micro-kernel that produces one of its addends
ADD_ANNOTATION = "tvmnas_int8_add"
DEPTHWISE_MAX_PAIRS = 32  # kh * ceil(kw / 2) weight words the depthwise micro-kernel keeps per channel


def _i32(value: int) -> tirx.PrimExpr:
    return tirx.const(int(value), "int32")


REQUANTIZE_FUNCTION = "tvmnas_requantize"

# The C definition the emitter puts before the kernels (static inline: gcc inlines it per call
# site, the 64-bit product becomes one SMULL, the division by 2^31 a shift with sign fix-up).
REQUANTIZE_C = """\
/* TFLite MultiplyByQuantizedMultiplier (double rounding, as passes/fixed_point.py):
 * RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << left, multiplier), right).
 * multiplier is in [0, 2^31), so the doubling high multiply never saturates. */
static inline int32_t tvmnas_requantize(int32_t x, int32_t multiplier, int32_t shift) {
  const int32_t left = shift > 0 ? shift : 0;
  const int32_t right = shift > 0 ? 0 : -shift;
  const int64_t ab = (int64_t)(int32_t)((uint32_t)x << left) * (int64_t)multiplier;
  const int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (INT64_C(1) - (INT64_C(1) << 30));
  const int32_t high = (int32_t)((ab + nudge) / (INT64_C(1) << 31));
  const int32_t mask = (int32_t)((INT64_C(1) << right) - 1);
  const int32_t remainder = high & mask;
  const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + (remainder > threshold ? 1 : 0);
}
"""


def requantize(x: tirx.PrimExpr, multiplier: tirx.PrimExpr, shift: tirx.PrimExpr) -> tirx.PrimExpr:
    """TFLite MultiplyByQuantizedMultiplier(x, multiplier, shift), as a call of the emitter's
    `tvmnas_requantize` (REQUANTIZE_C): one opaque call keeps TIR's simplifier from expanding
    the 64-bit arithmetic per use, and gcc inlines it."""
    return tirx.call_pure_extern("int32", REQUANTIZE_FUNCTION, x, multiplier, shift)


def saturate(x: tirx.PrimExpr, zero_point: int, act_min: int, act_max: int) -> tirx.PrimExpr:
    """x + zero_point clamped to [act_min, act_max], as int8."""
    x = x + _i32(zero_point)
    return tirx.min(tirx.max(x, _i32(act_min)), _i32(act_max)).astype("int8")


def conv2d_int8(
    data: te.Tensor,
    weight: te.Tensor,
    bias: te.Tensor,
    multiplier: te.Tensor,
    shift: te.Tensor,
    *,
    strides: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    input_zero_point: int,
    output_zero_point: int,
    act_min: int,
    act_max: int,
) -> te.Tensor:
    """NCHW int8 convolution (groups: 1, depthwise or grouped), OIHW int8 weights, symmetric.

    bias is int32 with the input zero point folded in (bias - zp_in * sum(weight)); padding is filled
    with the input zero point, so padded taps contribute nothing, as in TFLite.
    multiplier / shift: int32 per output channel.
    """
    n, cin, h, w = (int(d) for d in data.shape)
    cout, cin_g, kh, kw = (int(d) for d in weight.shape)
    pt, pl, pb, pr = (int(p) for p in padding)
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cout_g = cout // groups
    if pt or pl or pb or pr:
        padded = te.compute(
            (n, cin, h + pt + pb, w + pl + pr),
            lambda b, c, y, x: tirx.if_then_else(
                tirx.all(y >= pt, y < pt + h, x >= pl, x < pl + w),
                data[b, c, y - pt, x - pl],
                tirx.const(input_zero_point, "int8"),
            ),
            name="pad_temp",
        )
    else:
        padded = data
    rc = te.reduce_axis((0, cin_g), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def channel(o):
        return rc if groups == 1 else (o // cout_g) * cin_g + rc

    acc = te.compute(
        (n, cout, oh, ow),
        lambda b, o, y, x: te.sum(
            padded[b, channel(o), y * sh + ry * dh, x * sw + rx * dw].astype("int32")
            * weight[o, rc, ry, rx].astype("int32"),
            axis=[rc, ry, rx],
        ),
        name="conv2d_nchw_int32",
    )
    attrs = None
    if groups == 1 and n == 1:
        attrs = {GEMM_ANNOTATION: dict(
            cin=cin, h=h, w=w, in_cstride=h * w, in_pstride=1, kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl, dh=dh,
            dw=dw, cout=cout, oh=oh, ow=ow, out_ostride=oh * ow, out_pstride=1, in_zp=input_zero_point,
            out_zp=output_zero_point, act_min=act_min, act_max=act_max)}
    elif groups == cin and cin_g == 1 and n == 1 and (dh, dw) == (1, 1) and kh * ((kw + 1) // 2) <= DEPTHWISE_MAX_PAIRS:
        attrs = {DEPTHWISE_ANNOTATION: dict(
            c_in=cin, h=h, w=w, multiplier=cout // cin, kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl, pb=pb, pr=pr,
            oh=oh, ow=ow, in_zp=input_zero_point, out_zp=output_zero_point, act_min=act_min, act_max=act_max)}
    return te.compute(
        acc.shape,
        lambda b, o, y, x: saturate(
            requantize(acc[b, o, y, x] + bias[o], multiplier[o], shift[o]),
            output_zero_point, act_min, act_max,
        ),
        name="requantize",
        attrs=attrs,
    )


def dense_int8(
    data: te.Tensor,
    weight: te.Tensor,
    bias: te.Tensor,
    multiplier: te.Tensor,
    shift: te.Tensor,
    *,
    output_zero_point: int,
    act_min: int,
    act_max: int,
) -> te.Tensor:
    """[M, K] int8 x [N, K] int8 weights -> [M, N] int8; bias has the input zero point folded in."""
    m, k = (int(d) for d in data.shape)
    n = int(weight.shape[0])
    # as a 1x1 convolution over M pixels of K channels (channel stride 1, pixel stride K)
    attrs = {GEMM_ANNOTATION: dict(
        cin=k, h=1, w=m, in_cstride=1, in_pstride=k, kh=1, kw=1, sh=1, sw=1, pt=0, pl=0, dh=1, dw=1, cout=n, oh=1,
        ow=m, out_ostride=1, out_pstride=n, in_zp=0, out_zp=output_zero_point, act_min=act_min, act_max=act_max)}
    rk = te.reduce_axis((0, k), name="rk")
    acc = te.compute(
        (m, n),
        lambda i, j: te.sum(data[i, rk].astype("int32") * weight[j, rk].astype("int32"), axis=rk),
        name="matmul_int32",
    )
    return te.compute(
        (m, n),
        lambda i, j: saturate(
            requantize(acc[i, j] + bias[j], multiplier[j], shift[j]), output_zero_point, act_min, act_max
        ),
        name="requantize",
        attrs=attrs,
    )


def add_int8(a: te.Tensor, b: te.Tensor, *, params: dict, zero_points: Sequence[int], output_zero_point: int,
             act_min: int, act_max: int) -> te.Tensor:
    """TFLite's int8 ADD: both inputs less their zero points, shifted left by params["left_shift"],
    each rescaled by its own multiplier, summed, rescaled to the output (`fixed_point.add_params`)."""
    left = _i32(1 << params["left_shift"])

    def scaled(v, zp, which):
        x = (v.astype("int32") - _i32(zp)) * left
        return requantize(x, _i32(params[f"{which}_multiplier"]), _i32(params[f"{which}_shift"]))

    attrs = {ADD_ANNOTATION: dict(
        left_shift=params["left_shift"], m1=params["input1_multiplier"], s1=params["input1_shift"], zp1=zero_points[0],
        m2=params["input2_multiplier"], s2=params["input2_shift"], zp2=zero_points[1],
        mo=params["output_multiplier"], so=params["output_shift"], zpo=output_zero_point, lo=act_min, hi=act_max)}
    return te.compute(
        a.shape,
        lambda *i: saturate(
            requantize(scaled(a(*i), zero_points[0], "input1") + scaled(b(*i), zero_points[1], "input2"),
                       _i32(params["output_multiplier"]), _i32(params["output_shift"])),
            output_zero_point, act_min, act_max,
        ),
        name="add_int8",
        attrs=attrs,
    )


def requantize_int8(data: te.Tensor, *, input_zero_point: int, output_zero_point: int, multiplier: int, shift: int,
                    act_min: int, act_max: int) -> te.Tensor:
    """Element-wise int8 -> int8 with new quantization: requantize(x - zp_in) + zp_out, clamped."""
    return te.compute(
        data.shape,
        lambda *i: saturate(requantize(data(*i).astype("int32") - _i32(input_zero_point), _i32(multiplier),
                                       _i32(shift)), output_zero_point, act_min, act_max),
        name="requantize_int8",
    )


def _pool_geometry(data: te.Tensor, pool: Sequence[int], strides: Sequence[int],
                   padding: Sequence[int]) -> tuple[int, ...]:
    """(n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, oh, ow) of an NCHW pooling window (floor division)."""
    n, c, h, w = (int(d) for d in data.shape)
    kh, kw = (int(p) for p in pool)
    sh, sw = (int(s) for s in strides)
    pt, pl, pb, pr = (int(p) for p in padding)
    return n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1


def max_pool2d_int8(data: te.Tensor, *, pool: Sequence[int], strides: Sequence[int], padding: Sequence[int],
                    act_min: int, act_max: int) -> te.Tensor:
    """NCHW int8 max pooling; padded taps never win (TFLite semantics, same scale in and out)."""
    n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, oh, ow = _pool_geometry(data, pool, strides, padding)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def tap(b, ch, y, x):
        iy, ix = y * sh + ry - pt, x * sw + rx - pl
        if not (pt or pl or pb or pr):
            return data[b, ch, iy, ix]
        inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        return tirx.if_then_else(inside, data[b, ch, iy, ix], tirx.const(INT8_MIN, "int8"))

    pooled = te.compute((n, c, oh, ow), lambda b, ch, y, x: te.max(tap(b, ch, y, x), axis=[ry, rx]),
                        name="pool_max")
    return te.compute(pooled.shape, lambda *i: tirx.min(tirx.max(pooled(*i), tirx.const(act_min, "int8")),
                                                        tirx.const(act_max, "int8")), name="clamp")


def _divide_rounding(acc: tirx.PrimExpr, count: tirx.PrimExpr) -> tirx.PrimExpr:
    """TFLite's average: (acc +- count/2) / count, C division, half away from zero."""
    half = tirx.truncdiv(count, _i32(2))
    return tirx.truncdiv(tirx.Select(acc > _i32(0), acc + half, acc - half), count)


def avg_pool2d_int8(data: te.Tensor, *, pool: Sequence[int], strides: Sequence[int], padding: Sequence[int],
                    act_min: int, act_max: int) -> te.Tensor:
    """NCHW int8 average pooling over valid taps (count_include_pad off), same scale in and out."""
    n, c, h, w, kh, kw, sh, sw, pt, pl, pb, pr, oh, ow = _pool_geometry(data, pool, strides, padding)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def tap(b, ch, y, x):
        iy, ix = y * sh + ry - pt, x * sw + rx - pl
        inside = tirx.all(iy >= 0, iy < h, ix >= 0, ix < w)
        return tirx.if_then_else(inside, data[b, ch, iy, ix].astype("int32"), _i32(0))

    total = te.compute((n, c, oh, ow), lambda b, ch, y, x: te.sum(tap(b, ch, y, x), axis=[ry, rx]), name="pool_sum")

    def count(y, x):
        y0, x0 = y * sh - pt, x * sw - pl
        rows = tirx.min(y0 + kh, _i32(h)) - tirx.max(y0, _i32(0))
        cols = tirx.min(x0 + kw, _i32(w)) - tirx.max(x0, _i32(0))
        return rows * cols

    return te.compute(
        total.shape,
        lambda b, ch, y, x: tirx.min(tirx.max(_divide_rounding(total[b, ch, y, x], count(y, x)), _i32(act_min)),
                                     _i32(act_max)).astype("int8"),
        name="pool_avg",
    )


def mean_hw_int8(data: te.Tensor, *, keepdims: bool, input_zero_point: int, output_zero_point: int,
                 multiplier: int, shift: int, act_min: int, act_max: int) -> te.Tensor:
    """Mean over H and W of an NCHW int8 tensor as TFLite Micro's QuantizedMeanOrSum: the int32 sum
    less zp_in * H*W, requantized by (multiplier, shift) (in_scale / out_scale with 1/(H*W)
    folded in, `fixed_point.mean_multiplier`), plus zp_out."""
    n, c, h, w = (int(d) for d in data.shape)
    ry = te.reduce_axis((0, h), name="ry")
    rx = te.reduce_axis((0, w), name="rx")
    total = te.compute((n, c), lambda b, ch: te.sum(data[b, ch, ry, rx].astype("int32"), axis=[ry, rx]),
                       name="mean_sum")

    def value(b, ch):
        x = total[b, ch] - _i32(input_zero_point * h * w)
        return saturate(requantize(x, _i32(multiplier), _i32(shift)), output_zero_point, act_min, act_max)

    if keepdims:
        return te.compute((n, c, 1, 1), lambda b, ch, _y, _x: value(b, ch), name="mean_int8")
    return te.compute((n, c), value, name="mean_int8")


def lut_int8(data: te.Tensor, table: te.Tensor) -> te.Tensor:
    """Element-wise int8 -> int8 through a 256-entry int8 table indexed by x + 128 (TFLite's int8
    LOGISTIC / TANH / HARD_SWISH, tabulated by passes/activation_tables.py)."""
    return te.compute(data.shape, lambda *i: table[data(*i).astype("int32") + _i32(128)], name="lut_int8")


def mul_int8(a: te.Tensor, b: te.Tensor, *, zero_points: Sequence[int], multiplier: int, shift: int,
             output_zero_point: int, act_min: int, act_max: int) -> te.Tensor:
    """TFLite's int8 MUL of two tensors of one rank (an axis of size 1 broadcasts): (a - zp_a) *
    (b - zp_b) in int32, requantized by (multiplier, shift) (`fixed_point.mul_multiplier`)."""
    shape = [max(int(x), int(y)) for x, y in zip(a.shape, b.shape)]

    def read(t, i):
        return t(*[0 if int(d) == 1 and int(s) != 1 else x for x, d, s in zip(i, t.shape, shape)]).astype("int32")

    return te.compute(
        shape,
        lambda *i: saturate(requantize((read(a, i) - _i32(zero_points[0])) * (read(b, i) - _i32(zero_points[1])),
                                       _i32(multiplier), _i32(shift)), output_zero_point, act_min, act_max),
        name="mul_int8",
    )


def batch_matmul_int8(a: te.Tensor, b: te.Tensor, *, zero_points: Sequence[int], multiplier: int, shift: int,
                      output_zero_point: int, act_min: int, act_max: int) -> te.Tensor:
    """TFLite's int8 BATCH_MATMUL of two activations [.., M, K] x [.., K, N] (batch axes broadcast,
    size 1 or missing): sum((a - zp_a) * (b - zp_b)) in int32, requantized by (multiplier, shift)
    (`fixed_point.batch_matmul_multiplier`)."""
    ra, rb = len(a.shape), len(b.shape)
    rank = max(ra, rb)
    batch_a = [1] * (rank - ra) + [int(d) for d in a.shape[:-2]]
    batch_b = [1] * (rank - rb) + [int(d) for d in b.shape[:-2]]
    batch = [max(x, y) for x, y in zip(batch_a, batch_b)]
    m, k, n = int(a.shape[-2]), int(a.shape[-1]), int(b.shape[-1])
    rk = te.reduce_axis((0, k), name="rk")

    def read_a(i, kk):
        lead = [0 if d == 1 and full != 1 else x for x, d, full in zip(i[:rank - 2], batch_a, batch)][rank - ra:]
        return a(*lead, i[rank - 2], kk).astype("int32") - _i32(zero_points[0])

    def read_b(i, kk):
        lead = [0 if d == 1 and full != 1 else x for x, d, full in zip(i[:rank - 2], batch_b, batch)][rank - rb:]
        return b(*lead, kk, i[rank - 1]).astype("int32") - _i32(zero_points[1])

    acc = te.compute(batch + [m, n], lambda *i: te.sum(read_a(i, rk) * read_b(i, rk), axis=rk), name="batch_matmul_int32")
    return te.compute(
        acc.shape,
        lambda *i: saturate(requantize(acc(*i), _i32(multiplier), _i32(shift)), output_zero_point, act_min, act_max),
        name="requantize",
    )
