"""passes/fixed_point.py against a line-by-line Python-int copy of TFLite's C++ requantization."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tvmnas.passes.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multipliers,
    requantize,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

# ---- TFLite's formulas, transcribed with Python ints (C semantics spelled out) ----


def _c_div(a: int, b: int) -> int:
    """C/C++ integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _to_int32(x: int) -> int:
    """What an int32 register holds after a wrapping operation."""
    return (x + 2**31) % 2**32 - 2**31


def ref_srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul(int32, int32)."""
    overflow = a == b and a == INT32_MIN
    ab_64 = a * b
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    ab_x2_high32 = _c_div(ab_64 + nudge, 1 << 31)
    return INT32_MAX if overflow else ab_x2_high32


def ref_rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT(int32, int)."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def ref_mbqm(x: int, quantized_multiplier: int, shift: int) -> int:
    """tflite::MultiplyByQuantizedMultiplier(int32 x, int32 m, int shift), double rounding."""
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    return ref_rdbpot(ref_srdhm(_to_int32(x * (1 << left_shift)), quantized_multiplier), right_shift)


def ref_quantize_multiplier(d: float) -> tuple[int, int]:
    """tflite::QuantizeMultiplier, TfLiteRound being std::round (halves away from zero)."""
    if d == 0.0:
        return 0, 0
    q, shift = math.frexp(d)
    scaled = q * (1 << 31)
    q_fixed = int(math.floor(abs(scaled) + 0.5)) * (1 if scaled >= 0 else -1)
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return q_fixed, shift


# ---- quantize_multiplier ----


@pytest.mark.parametrize(
    "real",
    [0.0, 1e-12, 2.0**-31, 2.0**-32, 0.5, 0.75, 1.0, 1.5, 3.0, 127.9, 0.0039215686, 0.3333333333, -0.25, 2.0**29],
)
def test_quantize_multiplier_matches_tflite(real):
    assert quantize_multiplier(real) == ref_quantize_multiplier(real)


def test_quantize_multiplier_zero_and_tiny_flush_to_zero():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0**-40) == (0, 0)


def test_quantize_multiplier_mantissa_in_q31_range_and_reconstructs():
    rng = np.random.default_rng(0)
    for real in np.exp(rng.uniform(np.log(1e-6), np.log(100.0), 500)):
        m, shift = quantize_multiplier(real)
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0**-30


def test_quantize_multiplier_rounding_up_to_2_pow_31_bumps_shift():
    real = 1.0 - 2.0**-40  # mantissa rounds to exactly 2**31
    assert quantize_multiplier(real) == (2**30, 1)


def test_quantize_multiplier_uses_round_half_away_not_bankers():
    # q * 2**31 = 2**30 + 0.5 exactly: std::round gives 2**30 + 1, Python's round() 2**30.
    real = (2**30 + 0.5) / 2**31
    assert quantize_multiplier(real) == (2**30 + 1, 0)


def test_quantize_multiplier_rejects_shift_beyond_30():
    with pytest.raises(ValueError, match="shift 31"):
        quantize_multiplier(2.0**30)


def test_quantize_multipliers_vector():
    reals = np.array([0.5, 0.0, 3.0, 1e-3])
    m, s = quantize_multipliers(reals)
    assert m.dtype == np.int32 and s.dtype == np.int32
    assert list(zip(m.tolist(), s.tolist())) == [ref_quantize_multiplier(r) for r in reals]


# ---- the two gemmlowp primitives ----


def test_srdhm_saturates_int32_min_squared():
    assert int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)) == INT32_MAX
    assert ref_srdhm(INT32_MIN, INT32_MIN) == INT32_MAX
    # One step off the overflow is exact, not saturated.
    assert int(saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN + 1)) == ref_srdhm(INT32_MIN, INT32_MIN + 1)


def test_srdhm_matches_reference_on_extremes_and_random():
    rng = np.random.default_rng(1)
    edge = [INT32_MIN, INT32_MIN + 1, -(2**30), -3, -1, 0, 1, 2, 3, 2**30, INT32_MAX - 1, INT32_MAX]
    a = np.array(edge + rng.integers(INT32_MIN, INT32_MAX, 400, endpoint=True).tolist(), dtype=np.int64)
    b = np.array(edge[::-1] + rng.integers(INT32_MIN, INT32_MAX, 400, endpoint=True).tolist(), dtype=np.int64)
    got = saturating_rounding_doubling_high_mul(a, b)
    assert got.tolist() == [ref_srdhm(int(x), int(y)) for x, y in zip(a, b)]


def test_srdhm_ties_round_toward_plus_infinity():
    # a*b = 2**30 exactly: 2*a*b / 2**32 = 0.5 -> 1, but the negative tie -0.5 -> 0 and -1.5 -> -1
    # (gemmlowp's nudge for negative products is 1 - 2**30, one short of a half).
    assert int(saturating_rounding_doubling_high_mul(2**15, 2**15)) == 1
    assert int(saturating_rounding_doubling_high_mul(-(2**15), 2**15)) == 0
    assert int(saturating_rounding_doubling_high_mul(-3 * 2**15, 2**15)) == -1
    assert int(saturating_rounding_doubling_high_mul(-(2**15), 2**15 + 1)) == -1
    assert int(saturating_rounding_doubling_high_mul(2**15, 2**15 - 1)) == 0


@pytest.mark.parametrize("exponent", [0, 1, 2, 5, 31])
def test_rounding_divide_by_pot_matches_reference(exponent):
    xs = [INT32_MIN, INT32_MIN + 1, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, INT32_MAX]
    got = rounding_divide_by_pot(np.array(xs, dtype=np.int64), exponent)
    assert got.tolist() == [ref_rdbpot(x, exponent) for x in xs]


def test_rounding_divide_by_pot_ties_away_from_zero():
    assert rounding_divide_by_pot(np.array([2, 6, -2, -6, 3, -3]), 2).tolist() == [1, 2, -1, -2, 1, -1]


# ---- MultiplyByQuantizedMultiplier and requantize ----


def _random_cases(rng, n):
    acc = rng.integers(-(2**24), 2**24, n)
    reals = np.exp(rng.uniform(np.log(1e-5), np.log(4.0), n))
    pairs = [quantize_multiplier(r) for r in reals]
    return acc, np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def test_mbqm_matches_reference_random_right_and_left_shifts():
    rng = np.random.default_rng(2)
    acc, m, s = _random_cases(rng, 2000)
    assert (s > 0).any() and (s < 0).any()
    got = multiply_by_quantized_multiplier(acc.astype(np.int32), m, s)
    assert got.dtype == np.int32
    assert got.tolist() == [ref_mbqm(int(x), int(mm), int(ss)) for x, mm, ss in zip(acc, m, s)]


def test_mbqm_extreme_accumulators():
    xs = np.array([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX], dtype=np.int64)
    for m, s in [(INT32_MIN, 0), (INT32_MAX, -31), (2**30, -1), (INT32_MAX, 0), (1518500250, 3)]:
        got = multiply_by_quantized_multiplier(xs, m, s)
        assert got.tolist() == [ref_mbqm(int(x), m, s) for x in xs], (m, s)
    assert int(multiply_by_quantized_multiplier(np.int32(INT32_MIN), INT32_MIN, 0)) == INT32_MAX


def test_mbqm_double_rounding_differs_from_single_rounding():
    # x * M = 2.5 - 2**-31 exactly (a hair below the half): single rounding gives 2, but the high
    # multiply first rounds x*m/2**31 up to exactly 5, and the shift's tie then rounds to 3.
    m, shift, x = 2**31 - 1, -1, 5
    exact = x * m * 2.0 ** (shift - 31)
    assert round(exact) == 2
    assert int(multiply_by_quantized_multiplier(np.int32(x), m, shift)) == 3 == ref_mbqm(x, m, shift)


def test_mbqm_left_shift_wraps_like_int32():
    x, m, s = 2**29, 2**30, 3  # x << 3 overflows int32 in the C code
    assert int(multiply_by_quantized_multiplier(np.int32(x), m, s)) == ref_mbqm(x, m, s)


def test_mbqm_per_channel_last_axis_and_explicit_axis():
    rng = np.random.default_rng(3)
    acc = rng.integers(-(2**20), 2**20, (2, 5, 5, 4)).astype(np.int32)
    m, s = quantize_multipliers([0.001, 0.02, 0.7, 2.5])
    nhwc = multiply_by_quantized_multiplier(acc, m, s)
    for c in range(4):
        expect = [ref_mbqm(int(v), int(m[c]), int(s[c])) for v in acc[..., c].ravel()]
        assert nhwc[..., c].ravel().tolist() == expect
    nchw = multiply_by_quantized_multiplier(acc.transpose(0, 3, 1, 2), m, s, axis=1)
    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))


def test_mbqm_rejects_out_of_range_inputs():
    with pytest.raises(ValueError, match="int32 range"):
        multiply_by_quantized_multiplier(np.array([2**31], dtype=np.int64), 2**30, 0)
    with pytest.raises(ValueError, match="shift"):
        multiply_by_quantized_multiplier(np.array([1]), 2**30, 31)
    with pytest.raises(TypeError, match="float"):
        multiply_by_quantized_multiplier(np.array([1.0]), 2**30, 0)


def test_requantize_adds_zero_point_and_clamps():
    acc = np.array([-100000, -300, -1, 0, 1, 300, 100000], dtype=np.int32)
    m, s = quantize_multiplier(0.1)
    out = requantize(acc, m, s, output_zero_point=-5)
    assert out.dtype == np.int8
    expect = [max(-128, min(127, ref_mbqm(int(a), m, s) - 5)) for a in acc]
    assert out.tolist() == expect
    # fused ReLU6 with scale 6/255 and zero point -128: clamp to [-128, 127]; ReLU: [zp, 127]
    relu = requantize(acc, m, s, output_zero_point=-5, act_min=-5, act_max=127)
    assert relu.tolist() == [max(-5, v) for v in expect]


def test_requantize_rejects_range_outside_int8():
    with pytest.raises(ValueError, match="int8"):
        requantize(np.array([0]), 2**30, 0, 0, act_min=-129)


def test_mean_multiplier_folds_one_over_count():
    from tvmnas.passes.fixed_point import mean_multiplier

    m, s = quantize_multiplier(0.5)
    assert mean_multiplier(0.5, 1.0, 1) == (m, s)  # k = 0
    # count 12: k = 3, m' = (m << 3) // 12, shift - 3; the product stays close to 0.5 / 12
    m12, s12 = mean_multiplier(0.5, 1.0, 12)
    assert (m12, s12) == ((m << 3) // 12, s - 3)
    assert abs(m12 * 2.0 ** (s12 - 31) - 0.5 / 12) < 1e-9
    # k is clamped to 31 + shift for a tiny ratio
    mt, st = quantize_multiplier(2.0**-30)
    assert mean_multiplier(2.0**-30, 1.0, 1 << 20)[1] == st - min(20, 31 + st)
