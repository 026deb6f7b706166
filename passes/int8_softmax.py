"""int8 softmax with TFLite Micro's integer arithmetic, as one C kernel the bundle carries.

TFLite's int8 SOFTMAX (output scale 1/256, zero point -128) takes, per row, the exp of each value's
difference from the row maximum (gemmlowp's exp_on_negative_values of a Q5.26 rescaled difference),
sums them as Q12.19, takes TFLite's GetReciprocal of the sum (count leading zeros, then gemmlowp's
Newton-Raphson one_over_one_plus_x) and scales each exp by it. The exp depends only on the
difference, one of 256 int8 values, so it is a compile-time table (passes/activation_tables.py,
`softmax_exp_table`); the rest runs per row in SOFTMAX_C, the same steps in C integers as
`activation_tables.softmax_rows` takes in Python (the integer reference), bit for bit.

The depth of a row is limited to 256 values: TFLite's final rounding shift must stay within 31
bits, which a longer row of equal values exceeds.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import tirx

from .extern_call import extern_call_primfunc

SOFTMAX_FUNCTION = "tvmnas_s8_softmax"
MAX_DEPTH = 256

SOFTMAX_C = """\
/* int8 softmax over the last axis with TFLite Micro's arithmetic (passes/int8_softmax.py): the
 * exp of each difference from the row maximum from a compile-time table (Q0.31), a Q12.19 sum,
 * GetReciprocal (gemmlowp's one_over_one_plus_x), each exp scaled and rounded to 1/256 steps. */
static inline int32_t tvmnas_add_wrap(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static inline int32_t tvmnas_srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (INT64_C(1) - (INT64_C(1) << 30));
  return (int32_t)((ab + nudge) / (INT64_C(1) << 31));
}
static inline int32_t tvmnas_rdbpot(int32_t x, int32_t e) {
  const int32_t mask = (int32_t)((INT64_C(1) << e) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (remainder > threshold ? 1 : 0);
}
static inline int32_t tvmnas_saturating_shl(int32_t x, int32_t e) {
  const int32_t threshold = (int32_t)((INT32_C(1) << (31 - e)) - 1);
  if (x > threshold) return INT32_MAX;
  if (x < -threshold) return INT32_MIN;
  return (int32_t)((uint32_t)x << e);
}
static int32_t tvmnas_one_over_one_plus_x(int32_t a) {
  const int64_t sum = (int64_t)a + INT32_MAX;
  const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  int32_t x = tvmnas_add_wrap(1515870810, tvmnas_srdhm(half_denominator, -1010580540));
  for (int32_t i = 0; i < 3; ++i) {
    const int32_t one_minus = tvmnas_add_wrap(INT32_C(1) << 29, -tvmnas_srdhm(half_denominator, x));
    x = tvmnas_add_wrap(x, tvmnas_saturating_shl(tvmnas_srdhm(x, one_minus), 2));
  }
  return tvmnas_saturating_shl(x, 1);
}
static __attribute__((noinline)) void tvmnas_s8_softmax(const int8_t *in, const int32_t *exp_table, int8_t *out,
                                                        int32_t rows, int32_t depth) {
  for (int32_t r = 0; r < rows; ++r) {
    const int8_t *x = in + r * depth;
    int8_t *y = out + r * depth;
    int32_t max = -128;
    for (int32_t c = 0; c < depth; ++c) max = x[c] > max ? x[c] : max;
    const int32_t *e = exp_table + 255 - max; /* e[x[c]]: the exp of x[c] - max */
    int32_t total = 0;
    for (int32_t c = 0; c < depth; ++c) total = tvmnas_add_wrap(total, tvmnas_rdbpot(e[x[c]], 12));
    const int32_t headroom_plus_one = __builtin_clz((uint32_t)total);
    const int32_t scale =
        tvmnas_one_over_one_plus_x((int32_t)(((uint32_t)total << headroom_plus_one) - (UINT32_C(1) << 31)));
    const int32_t exponent = 12 - headroom_plus_one + 31 - 8;
    for (int32_t c = 0; c < depth; ++c) {
      const int32_t v = tvmnas_rdbpot(tvmnas_srdhm(scale, e[x[c]]), exponent) - 128;
      y[c] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
  }
}
"""


def uses_softmax(kernel_text: str) -> bool:
    """Whether printed C calls the softmax kernel (SOFTMAX_C must then precede it)."""
    return SOFTMAX_FUNCTION + "(" in kernel_text


def softmax_primfunc(shape: tuple[int, ...]) -> tirx.PrimFunc:
    """A PrimFunc (data int8 `shape`, exp table int32 (256,), out int8 `shape`) that is one call of
    SOFTMAX_C over the last axis; opaque, so no element-wise op is fused into it."""
    shape = tuple(int(d) for d in shape)
    depth = shape[-1]
    return extern_call_primfunc(SOFTMAX_FUNCTION, [("x", shape, "int8"), ("table", (256,), "int32")],
                                ("y", shape, "int8"), [int(np.prod(shape)) // depth, depth])


__all__ = ["MAX_DEPTH", "SOFTMAX_C", "SOFTMAX_FUNCTION", "softmax_primfunc", "uses_softmax"]
