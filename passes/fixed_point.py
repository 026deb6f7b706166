"""TFLite's integer requantization, in numpy: the one definition every int8 path of tvmnas matches.

An int8 kernel accumulates in int32 and must bring the accumulator back to int8 with a real factor
``M = in_scale * w_scale / out_scale``. TFLite (reference kernels), TFLite Micro and CMSIS-NN all do
this the same way, and a bit-exact compiler has to copy it to the last bit:

1. ``M`` is split once, at compile time, into a Q31 multiplier and a power-of-two exponent
   (:func:`quantize_multiplier`, TFLite's ``QuantizeMultiplier``): ``M = m * 2**(shift - 31)``
   with ``2**30 <= m < 2**31``; ``shift > 0`` is a left shift, ``shift < 0`` a right shift.
2. At run time (:func:`multiply_by_quantized_multiplier`, TFLite's ``MultiplyByQuantizedMultiplier``
   in the default build, i.e. without ``TFLITE_SINGLE_ROUNDING``) the accumulator is
   left-shifted, then multiplied with gemmlowp's ``SaturatingRoundingDoublingHighMul`` (the high
   32 bits of ``2*x*m``, ties rounded toward +infinity, saturating the one overflow
   ``INT32_MIN * INT32_MIN``), then right-shifted with ``RoundingDivideByPOT`` (ties rounded away
   from zero). That is two roundings ("double rounding"): a result can differ by one from the
   single rounding of ``x * M``, which is why nothing here rounds "the obvious way".
3. :func:`requantize` adds the output zero point and clamps to the activation range (the fused
   ReLU/ReLU6 of TFLite is only this clamp).

Pure numpy, no TVM: the reference interpreter, the quantizer and the integer rewrite passes all
import it. Arrays are computed in int64, so nothing here overflows silently.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "INT32_MIN",
    "INT32_MAX",
    "quantize_multiplier",
    "quantize_multipliers",
    "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot",
    "multiply_by_quantized_multiplier",
    "requantize",
    "conv_multipliers",
    "batch_matmul_multiplier",
    "ADD_LEFT_SHIFT",
    "add_params",
    "rescale_multiplier",
    "mul_multiplier",
    "mean_multiplier",
    "rounding_average",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _tflite_round(x: float) -> int:
    """``TfLiteRound`` / ``std::round``: nearest integer, halves away from zero (not Python's round)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's ``QuantizeMultiplier``: split ``real`` into a Q31 int32 multiplier and a shift.

    Returns ``(m, shift)`` with ``real ~= m * 2**(shift - 31)``. As in TFLite: ``real == 0`` gives
    ``(0, 0)``; the mantissa is rounded half away from zero (``std::round``), and a mantissa that
    rounds up to ``2**31`` is halved with the shift raised by one; a multiplier below about
    ``2**-31`` (``shift < -31``) is flushed to ``(0, 0)``. ``real >= 1`` gives a positive (left)
    shift. Negative ``real`` gives a negative multiplier, as TFLite's does.

    Raises ValueError for a non-finite ``real`` or one of ``2**30`` or more, whose shift (> 30)
    TFLite's double-rounding kernels cannot apply (``1 << 31`` overflows int32).
    """
    real = float(real)
    if not math.isfinite(real):
        raise ValueError(f"quantize_multiplier: multiplier {real} is not finite")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = _tflite_round(q * (1 << 31))
    assert abs(q_fixed) <= 1 << 31
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"quantize_multiplier: multiplier {real} needs shift {shift}, limit is 30")
    return int(q_fixed), int(shift)


def quantize_multipliers(reals: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multiplier` over an array (per-channel scales): int32 multipliers, int32 shifts."""
    flat = np.asarray(reals, dtype=np.float64)
    pairs = [quantize_multiplier(r) for r in flat.ravel()]
    mult = np.array([p[0] for p in pairs], dtype=np.int32).reshape(flat.shape)
    shift = np.array([p[1] for p in pairs], dtype=np.int32).reshape(flat.shape)
    return mult, shift


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range (what an int32 register holds)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` for int32 values held in int64 arrays.

    ``(a*b + nudge) / 2**31`` with C's truncating division, where ``nudge`` is ``2**30`` for a
    non-negative product and ``1 - 2**30`` for a negative one: the high word of ``2*a*b``, nearest,
    ties toward +infinity (the negative nudge falls one short of a half, so -0.5 truncates to 0). ``INT32_MIN * INT32_MIN`` (the only overflow) saturates to ``INT32_MAX``.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b  # |a*b| <= 2**62: exact in int64
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(nudged >= 0, nudged >> 31, -((-nudged) >> 31))  # truncate toward zero
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT``: ``x / 2**exponent`` rounded half away from zero.

    ``exponent`` is 0..31 (element-wise, broadcast against ``x``). Computed as TFLite does it: an
    arithmetic shift plus one where the discarded remainder exceeds half (half or more for
    negative ``x``).
    """
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("rounding_divide_by_pot: exponent must be within 0..31")
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _channel_broadcast(values: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of an ``ndim``-d array."""
    values = np.asarray(values, dtype=np.int64)
    if axis is None or values.ndim == 0:
        return values
    if values.ndim != 1:
        raise ValueError("per-channel multipliers and shifts must be 1-D when axis is given")
    axis = axis % ndim
    shape = [1] * ndim
    shape[axis] = values.shape[0]
    return values.reshape(shape)


def multiply_by_quantized_multiplier(
    acc: np.ndarray,
    multiplier: int | np.ndarray,
    shift: int | np.ndarray,
    axis: int | None = None,
) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier(int32 x, int32 m, int shift)``, double rounding.

    ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2**left, m), right)`` with
    ``left = max(shift, 0)``, ``right = max(-shift, 0)``, exactly as TFLite's reference kernels,
    TFLite Micro and CMSIS-NN (``arm_nn_requantize``) compute it, so that int8 outputs match them
    bit for bit. The left shift is an int32 multiply in C; here it wraps as two's-complement int32
    does (real networks never reach it: ``shift > 0`` needs a multiplier >= 1).

    ``acc`` holds int32 values (an int32 or int64 array). ``multiplier`` and ``shift`` are scalars
    or arrays: with ``axis=None`` they broadcast as numpy does (a 1-D array applies along the
    last axis, NHWC channels); with ``axis`` given, 1-D arrays apply along that axis (e.g. ``axis=1``
    for NCHW). Returns int32.
    """
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise TypeError(f"multiply_by_quantized_multiplier: accumulator dtype {acc.dtype} is not an integer type")
    x = acc.astype(np.int64)
    if np.any((x < INT32_MIN) | (x > INT32_MAX)):
        raise ValueError("multiply_by_quantized_multiplier: accumulator values exceed the int32 range")
    m = _channel_broadcast(multiplier, x.ndim, axis)
    s = _channel_broadcast(shift, x.ndim, axis)
    if np.any((m < INT32_MIN) | (m > INT32_MAX)):
        raise ValueError("multiply_by_quantized_multiplier: multiplier exceeds the int32 range")
    if np.any((s < -31) | (s > 30)):
        raise ValueError("multiply_by_quantized_multiplier: shift must be within -31..30")
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    shifted = _wrap_int32(x << left)
    high = saturating_rounding_doubling_high_mul(shifted, m)
    return rounding_divide_by_pot(high, right).astype(np.int32)


def requantize(
    acc: np.ndarray,
    multiplier: int | np.ndarray,
    shift: int | np.ndarray,
    output_zero_point: int,
    act_min: int = -128,
    act_max: int = 127,
    axis: int | None = None,
) -> np.ndarray:
    """int32 accumulator to int8, as every TFLite int8 kernel ends.

    ``clamp(multiply_by_quantized_multiplier(acc, multiplier, shift) + output_zero_point,
    act_min, act_max)``. A fused ReLU or ReLU6 is only a narrower ``[act_min, act_max]``
    (TFLite's ``CalculateActivationRangeQuantized``). ``axis`` as in
    :func:`multiply_by_quantized_multiplier`.
    """
    if not -128 <= act_min <= act_max <= 127:
        raise ValueError(f"requantize: activation range [{act_min}, {act_max}] is not within int8")
    scaled = multiply_by_quantized_multiplier(acc, multiplier, shift, axis=axis).astype(np.int64)
    out = np.clip(scaled + int(output_zero_point), act_min, act_max)
    return out.astype(np.int8)


# ---- Per-operator parameters, computed as TFLite's Prepare functions compute them ----------------


def conv_multipliers(
    input_scale: float, weight_scales: Sequence[float] | np.ndarray, output_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) of a conv / depthwise conv / fully connected layer.

    TFLite's ``PopulateConvolutionQuantizationParams``: each float32 scale is widened to double and
    ``input_scale * weight_scale[c] / output_scale`` is evaluated in double in that order, then
    split by :func:`quantize_multiplier`.
    """
    ws = np.asarray(weight_scales, dtype=np.float32).astype(np.float64).reshape(-1)
    real = [float(np.float32(input_scale)) * float(w) / float(np.float32(output_scale)) for w in ws]
    return quantize_multipliers(real)


ADD_LEFT_SHIFT = 20
"""TFLite's int8 ADD shifts both (offset-corrected) inputs left by 20 bits before rescaling."""


def add_params(input1_scale: float, input2_scale: float, output_scale: float) -> dict[str, int]:
    """TFLite's int8 ADD parameters: left_shift and three (multiplier, shift) pairs.

    From TFLite (Micro)'s ``CalculateOpDataAdd``: with ``twice_max = 2 * max(s1, s2)`` in double,
    the inputs are scaled by ``s_i / twice_max`` and the sum by ``twice_max / (2**20 * s_out)``.
    """
    s1, s2, so = (float(np.float32(s)) for s in (input1_scale, input2_scale, output_scale))
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * so))
    return {"left_shift": ADD_LEFT_SHIFT, "input1_multiplier": m1, "input1_shift": sh1,
            "input2_multiplier": m2, "input2_shift": sh2, "output_multiplier": mo, "output_shift": sho}


def rescale_multiplier(input_scale: float, output_scale: float) -> tuple[int, int]:
    """(multiplier, shift) that moves int8 values from one scale to another (ReLU, concat and
    reshape inputs of other quantization, mean): ``input_scale / output_scale``, the float32
    scales widened to double first, as TFLite's Prepare functions compute it."""
    return quantize_multiplier(float(np.float32(input_scale)) / float(np.float32(output_scale)))


def mul_multiplier(input1_scale: float, input2_scale: float, output_scale: float) -> tuple[int, int]:
    """(multiplier, shift) of TFLite's int8 MUL: ``s1 * s2 / s_out``, the float32 scales widened to
    double and multiplied in that order (TFLite Micro's CalculateOpDataMul)."""
    return quantize_multiplier(float(np.float32(input1_scale)) * float(np.float32(input2_scale))
                               / float(np.float32(output_scale)))


def batch_matmul_multiplier(lhs_scale: float, rhs_scale: float, output_scale: float) -> tuple[int, int]:
    """(multiplier, shift) of TFLite's int8 BATCH_MATMUL (two int8 activations): TFLite Micro's
    ``BatchMatMulPrepare`` calls the 4-argument ``GetQuantizedConvolutionMultipler``, which takes the
    product of the two scales in float32 and only then widens it to double:
    ``double(float32(s_lhs * s_rhs)) / double(s_out)``."""
    product = float(np.float32(lhs_scale) * np.float32(rhs_scale))
    return quantize_multiplier(product / float(np.float32(output_scale)))


def mean_multiplier(input_scale: float, output_scale: float, count: int) -> tuple[int, int]:
    """(multiplier, shift) of an int8 mean over ``count`` elements, as TFLite Micro's
    ``QuantizedMeanOrSum`` folds ``1/count`` into the multiplier of ``input_scale / output_scale``.

    With ``(m, s) = quantize_multiplier(in / out)`` and ``k = min(floor(log2(count)), 32, 31 + s)``:
    ``((m << k) // count, s - k)``. The mean is then
    ``requantize(sum - input_zero_point * count, multiplier, shift, output_zero_point)``; TFLite
    Micro does this also when input and output share their quantization.
    """
    m, s = rescale_multiplier(input_scale, output_scale)
    k = min(int(count).bit_length() - 1, 32, 31 + s)
    return int((m << k) // int(count)), s - k


def rounding_average(acc: np.ndarray, count: np.ndarray | int) -> np.ndarray:
    """TFLite's int8 average pool division: ``(acc +/- count/2) / count`` in C integer arithmetic.

    Ties round away from zero; ``count`` is the number of in-bounds window elements (padding is
    not counted).
    """
    acc = np.asarray(acc, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    half = count // 2
    num = np.where(acc > 0, acc + half, acc - half)
    q = np.abs(num) // count
    return np.where(num >= 0, q, -q)
