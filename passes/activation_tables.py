"""int8 activations that are not piecewise linear, as 256-entry lookup tables with TFLite's semantics.

TFLite Micro computes int8 LOGISTIC, TANH and HARD_SWISH element by element in fixed point
(gemmlowp's `logistic` / `tanh` on a Q4.27 input, and a 16-bit fixed-point hard-swish). Each output
depends on one int8 input only, so the whole function is 256 values: this module evaluates TFLite
Micro's integer algorithm, step by step in Python integers, for every int8 input at compile time.
The integer reference (tvmnas/quant/reference.py) and the compiler's lookup-table kernel
(passes/quantize_to_integer.py) both index these tables, so they agree with each other and with
TFLite Micro's reference kernels bit for bit.

Sources (TFLite Micro / gemmlowp, followed line by line):
- logistic: `LogisticPrepare` (input multiplier from `frexp(in_scale * 2^27)`, range radius from
  `CalculateInputRadius(4, shift, 31)`), `reference_integer_ops::Logistic`, gemmlowp `logistic`;
  output quantization fixed at scale 1/256, zero point -128.
- tanh: `TanhPrepare` (as logistic), `reference_integer_ops::Tanh`, gemmlowp `tanh`; output
  scale 1/128, zero point 0.
- hard-swish: `HardSwishPrepare` (float32 scale ratios, `QuantizeMultiplier`,
  `DownScaleInt32ToInt16Multiplier`), `reference_ops::HardSwish<int8_t>`; any output quantization.
- gelu: TFLite Micro's `GeluPrepare` fills its int8 table with `LUTPopulate<int8_t>`, in float32:
  `GeluTransform(in_scale * (q - zp_in))` (`0.5f * x * (1.f + erff(x * (float)M_SQRT1_2))`), times
  `1 / out_scale`, `TfLiteRound`, plus `zp_out`, clamped; any output quantization.

Pure Python and numpy, no TVM.
"""

from __future__ import annotations

import math

import numpy as np

from .fixed_point import multiply_by_quantized_multiplier, quantize_multiplier

__all__ = ["FIXED_OUTPUT", "SOFTMAX_OUTPUT", "activation_table", "gelu_table", "hard_swish_table", "logistic_table", "softmax_exp_table",
           "softmax_rows", "table_index", "tanh_table"]

# TFLite's int8 LOGISTIC and TANH kernels assume this output quantization (scale, zero point)
FIXED_OUTPUT = {"sigmoid": (1.0 / 256.0, -128), "tanh": (1.0 / 128.0, 0)}

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_I16_MIN, _I16_MAX = -(2**15), 2**15 - 1


def table_index(q: np.ndarray) -> np.ndarray:
    """Where an int8 value's output sits in a table: q + 128."""
    return np.asarray(q).astype(np.int64) + 128


# ---- gemmlowp's scalar fixed point (int32 unless said), in Python integers ----------------------


def _wrap32(x: int) -> int:
    return ((x + 2**31) & 0xFFFFFFFF) - 2**31


def _srdhm(a: int, b: int, bits: int = 32) -> int:
    """SaturatingRoundingDoublingHighMul for int32 (bits=32) or int16 (bits=16)."""
    lo = -(1 << (bits - 1))
    if a == b == lo:
        return (1 << (bits - 1)) - 1
    ab = a * b
    nudge = (1 << (bits - 2)) if ab >= 0 else 1 - (1 << (bits - 2))
    return _trunc_div(ab + nudge, 1 << (bits - 1))


def _trunc_div(a: int, b: int) -> int:
    """C integer division (toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _rdivpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT: x / 2^exponent, nearest, ties away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _srmpot(x: int, exponent: int) -> int:
    """SaturatingRoundingMultiplyByPOT<exponent> on int32."""
    if exponent == 0:
        return x
    if exponent < 0:
        return _rdivpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return _I32_MAX
    if x < -threshold:
        return _I32_MIN
    return _wrap32(x << exponent)


def _rescale(x: int, src_bits: int, dst_bits: int) -> int:
    return _srmpot(x, src_bits - dst_bits)


def _rounding_half_sum(a: int, b: int) -> int:
    s = a + b
    return _trunc_div(s + (1 if s >= 0 else -1), 2)


def _mul(a: int, b: int) -> int:
    """FixedPoint multiplication: the integer bits add up, the raw value is SRDHM."""
    return _srdhm(a, b)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out."""
    constant_term = 1895147668
    constant_1_over_3 = 715827883
    x = _wrap32(a + (1 << 28))
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = _srmpot(x4, -2)
    poly = _srmpot(_wrap32(_mul(_wrap32(x4_over_4 + x3), constant_1_over_3) + x2), -1)
    return _wrap32(constant_term + _mul(constant_term, _wrap32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
               (4, 242))


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """gemmlowp's exp_on_negative_values: exp(a) for a <= 0 given in Q(integer_bits); Q0.31 out."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    mask = one_quarter - 1
    a_mod_quarter_minus_one_quarter = _wrap32((a & mask) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = _wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            shift = fractional_bits + exponent
            if remainder & (1 << shift):
                result = _mul(result, multiplier)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        if a < clamp:
            result = 0
    if a == 0:
        result = _I32_MAX
    return result


def _newton_reciprocal(half_denominator: int) -> int:
    """gemmlowp's Newton-Raphson iteration for 1 / (2 * half_denominator), Q2.29 result."""
    constant_48_over_17 = 1515870810
    constant_neg_32_over_17 = -1010580540
    one_f2 = 1 << 29
    x = _wrap32(constant_48_over_17 + _mul(half_denominator, constant_neg_32_over_17))
    for _ in range(3):
        half_denominator_times_x = _mul(half_denominator, x)
        one_minus = _wrap32(one_f2 - half_denominator_times_x)
        x = _wrap32(x + _rescale(_mul(x, one_minus), 2 + 2, 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """1 / (1 + a) for a in (0, 1), Q0.31 in and out."""
    x = _newton_reciprocal(_rounding_half_sum(a, _I32_MAX))
    return _rescale(x, 1, 0)  # ExactMulByPot<-1> makes Q1.30 of the same raw value


def _one_minus_x_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    x = _newton_reciprocal(_rounding_half_sum(a, _I32_MAX))
    return _rescale(_wrap32(x - (1 << 29)), 2, 0)


def gemmlowp_logistic(a: int, integer_bits: int) -> int:
    """gemmlowp's logistic of a Q(integer_bits) value, Q0.31 out."""
    if a == 0:
        return 1 << 30
    abs_input = a if a > 0 else _wrap32(-a)
    positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(_wrap32(-abs_input), integer_bits))
    return positive if a > 0 else _wrap32(_I32_MAX - positive)


def gemmlowp_tanh(a: int, integer_bits: int) -> int:
    """gemmlowp's tanh of a Q(integer_bits) value, Q0.31 out."""
    if a == 0:
        return 0
    n = a if a < 0 else _wrap32(-a)
    # neg_tanh_on_negative_values: ExactMulByPot<1> keeps the raw value, one more integer bit
    t = _one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return _wrap32(-t) if a < 0 else t


# ---- TFLite Micro's int8 kernels ----------------------------------------------------------------


_INPUT_INTEGER_BITS = 4


def _input_params(input_scale: float) -> tuple[int, int, int]:
    """(multiplier, left shift, range radius) of int8 LOGISTIC / TANH's Prepare."""
    real = float(np.float32(input_scale)) * float(1 << (31 - _INPUT_INTEGER_BITS))
    q, shift = math.frexp(real)
    multiplier = int(math.copysign(math.floor(abs(q) * (1 << 31) + 0.5), q))
    # CalculateInputRadius(4, shift, 31)
    radius = math.floor(math.ldexp(float(((1 << _INPUT_INTEGER_BITS) - 1) * (1 << (31 - _INPUT_INTEGER_BITS))), -shift))
    return multiplier, shift, int(radius)


def _fixed_function_table(input_scale: float, input_zero_point: int, function, out_shift: int,
                          out_zero_point: int) -> np.ndarray:
    multiplier, shift, radius = _input_params(input_scale)
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        x = q - int(input_zero_point)
        if x <= -radius:
            y = -128
        elif x >= radius:
            y = 127
        else:
            x_q4 = int(multiply_by_quantized_multiplier(np.int64(x), multiplier, shift))
            y = _rdivpot(function(x_q4, _INPUT_INTEGER_BITS), out_shift) + out_zero_point
            y = min(max(y, -128), 127)
        table[i] = y
    return table


def logistic_table(input_scale: float, input_zero_point: int) -> np.ndarray:
    """TFLite Micro's int8 LOGISTIC for every int8 input (index q + 128); output scale 1/256, zero point -128."""
    return _fixed_function_table(input_scale, input_zero_point, gemmlowp_logistic, 31 - 8, -128)


def tanh_table(input_scale: float, input_zero_point: int) -> np.ndarray:
    """TFLite Micro's int8 TANH for every int8 input (index q + 128); output scale 1/128, zero point 0."""
    return _fixed_function_table(input_scale, input_zero_point, gemmlowp_tanh, 31 - 7, 0)


def _downscale_to_int16(multiplier: int) -> int:
    """TFLite's DownScaleInt32ToInt16Multiplier."""
    if multiplier >= _I32_MAX - (1 << 15):
        return _I16_MAX
    return (multiplier + (1 << 15)) >> 16


def _wrap16(x: int) -> int:
    return ((x + 2**15) & 0xFFFF) - 2**15


def _saturating_left_shift16(value: int, amount: int) -> int:
    return min(max(value * (1 << amount), _I16_MIN), _I16_MAX)


def _saturating_doubling_high_mul16(a: int, b: int) -> int:
    if a == b == _I16_MIN:
        return _I16_MAX
    return _wrap16(_trunc_div(a * b, 1 << 15))


def hard_swish_params(input_scale: float, output_scale: float) -> tuple[int, int, int, int]:
    """(output multiplier int16, output exponent, reluish multiplier int16, reluish exponent) of
    TFLite Micro's HardSwishPrepare: the scale ratios in float32, then QuantizeMultiplier."""
    hires_input_scale = np.float32(1.0 / 128.0) * np.float32(input_scale)
    reluish_scale = np.float32(3.0 / 32768.0)
    out_m, out_e = quantize_multiplier(float(np.float32(hires_input_scale / np.float32(output_scale))))
    rel_m, rel_e = quantize_multiplier(float(np.float32(hires_input_scale / reluish_scale)))
    return _downscale_to_int16(out_m), out_e, _downscale_to_int16(rel_m), rel_e


def hard_swish_table(input_scale: float, input_zero_point: int, output_scale: float,
                     output_zero_point: int) -> np.ndarray:
    """TFLite Micro's int8 HARD_SWISH (`reference_ops::HardSwish`) for every int8 input (index q + 128).

    Refuses (ValueError) an output multiplier of 1 or more, which TFLite's Prepare rejects too."""
    out_m, out_e, rel_m, rel_e = hard_swish_params(input_scale, output_scale)
    if out_e > 0:
        raise ValueError(f"hard-swish output scale {output_scale:g} is below input scale / 128; TFLite refuses it")
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        value = _wrap16(q - int(input_zero_point))
        hires = _wrap16(value * (1 << 7))
        preshift_output = _srdhm(hires, out_m, 16)
        reluish = hires
        if rel_e > 0:
            reluish = _saturating_left_shift16(reluish, rel_e - 1)
        reluish = _srdhm(reluish, rel_m, 16)
        if rel_e > 0:
            reluish = _saturating_left_shift16(reluish, 1)
        if rel_e < 0:
            reluish = _wrap16(_rdivpot(reluish, -rel_e))
        reluish = _wrap16((reluish + (1 << 15)) >> 1)
        preshift = _saturating_doubling_high_mul16(reluish, preshift_output)
        out = _wrap16(_rdivpot(preshift, -out_e) + int(output_zero_point))
        table[i] = min(max(out, -128), 127)
    return table


def gelu_table(input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int) -> np.ndarray:
    """TFLite Micro's int8 GELU table (`GeluPrepare`, `LUTPopulate<int8_t>`, exact erf form), every
    step in float32 as the C++ computes it; erff as the double erf rounded to float32."""
    f32 = np.float32
    inverse_scale = f32(1.0) / f32(output_scale)
    table = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        x = f32(input_scale) * f32(q - int(input_zero_point))
        erf = f32(math.erf(float(x * f32(0.70710678118654752440))))
        y = f32(f32(0.5) * x) * f32(f32(1.0) + erf)
        scaled = float(f32(y * inverse_scale))
        rounded = math.copysign(math.floor(abs(scaled) + 0.5), scaled)  # TfLiteRound: halves away from zero
        table[i] = min(max(int(rounded + int(output_zero_point)), -128), 127)
    return table


def activation_table(function: str, input_scale: float, input_zero_point: int, output_scale: float,
                     output_zero_point: int) -> np.ndarray | None:
    """The int8 table of TFLite's kernel for `function` ("sigmoid", "tanh" or "hard_swish") between
    these quantizations, or None where TFLite has no int8 kernel for them: LOGISTIC and TANH need
    their fixed output quantization (FIXED_OUTPUT), HARD_SWISH an output scale of at least
    input scale / 128."""
    if function in FIXED_OUTPUT:
        scale, zero_point = FIXED_OUTPUT[function]
        if np.float32(output_scale) != np.float32(scale) or int(output_zero_point) != zero_point:
            return None
        return (logistic_table if function == "sigmoid" else tanh_table)(input_scale, input_zero_point)
    if function == "hard_swish":
        try:
            return hard_swish_table(input_scale, input_zero_point, output_scale, output_zero_point)
        except ValueError:
            return None
    raise ValueError(f"activation_table: no table for '{function}'")


# ---- int8 softmax (TFLite Micro's SoftmaxPrepare / reference_ops::Softmax, int8 in and out) ------

SOFTMAX_OUTPUT = (1.0 / 256.0, -128)  # the only int8 output quantization TFLite's int8 SOFTMAX takes
_SCALED_DIFF_INTEGER_BITS = 5
_ACCUMULATION_INTEGER_BITS = 12


def softmax_params(input_scale: float, beta: float = 1.0) -> tuple[int, int, int]:
    """(input multiplier, input left shift, diff_min) of TFLite's PreprocessSoftmaxScaling and
    CalculateInputRadius(5, left shift) for an int8 input."""
    real = min(float(beta) * float(np.float32(input_scale)) * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)),
               float((1 << 31) - 1))
    multiplier, left_shift = quantize_multiplier(real)
    radius = math.floor(math.ldexp(float(((1 << _SCALED_DIFF_INTEGER_BITS) - 1)
                                         * (1 << (31 - _SCALED_DIFF_INTEGER_BITS))), -left_shift))
    return multiplier, left_shift, -int(radius)


def softmax_exp_table(input_scale: float, beta: float = 1.0) -> np.ndarray:
    """exp of every int8 difference from the row maximum, d = -255..0 (index d + 255), as TFLite's
    int8 softmax computes it: gemmlowp exp_on_negative_values of the Q5.26 rescaled difference (Q0.31),
    0 below diff_min (TFLite skips those; a 0 adds nothing to the sum and gives output -128 too)."""
    multiplier, left_shift, diff_min = softmax_params(input_scale, beta)
    table = np.zeros(256, np.int32)
    for i, d in enumerate(range(-255, 1)):
        if d >= diff_min:
            rescaled = _srdhm(_wrap32(d * (1 << left_shift)), multiplier)  # MultiplyByQuantizedMultiplierGreaterThanOne
            table[i] = exp_on_negative_values(rescaled, _SCALED_DIFF_INTEGER_BITS)
    return table


def _reciprocal(x: int, integer_bits: int) -> tuple[int, int]:
    """TFLite's GetReciprocal: (Q0.31 scale, num_bits_over_unit) of 1 / x for a positive
    Q(integer_bits) x."""
    headroom_plus_one = 32 - int(x).bit_length()  # CountLeadingZeros of a positive int32
    shifted_sum_minus_one = _wrap32(((x << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), integer_bits - headroom_plus_one


def softmax_rows(x: np.ndarray, exp_table: np.ndarray) -> np.ndarray:
    """TFLite Micro's int8 softmax over the last axis of int8 `x` (output scale 1/256, zero point -128)."""
    flat = np.asarray(x).astype(np.int64).reshape(-1, x.shape[-1])
    out = np.empty(flat.shape, np.int8)
    for r, row in enumerate(flat):
        exps = exp_table[(row - row.max() + 255)].astype(np.int64)
        total = 0
        for e in exps:
            total = _wrap32(total + _rdivpot(int(e), _ACCUMULATION_INTEGER_BITS))  # Rescale<12>
        scale, bits_over_unit = _reciprocal(total, _ACCUMULATION_INTEGER_BITS)
        exponent = bits_over_unit + 31 - 8
        for c, e in enumerate(exps):
            value = _rdivpot(_srdhm(scale, int(e)), exponent) - 128
            out[r, c] = min(max(value, -128), 127)
    return out.reshape(x.shape)
