"""int8 LayerNorm over the last axis in integer arithmetic, as one C kernel the bundle carries.

TFLite has no int8 LAYER_NORM builtin (its converter splits LayerNorm into MEAN, SQUARED_DIFFERENCE,
RSQRT, MUL and ADD, each one more int8 rounding; its only integer layer norm is the int16 one
inside the integer LSTM, `PortableApplyLayerNorm`, which is exact only for power-of-two widths). So
tvmnas defines one integer kernel, with the same structure as that LSTM kernel (int64 sums, a
normalised integer square root, per-channel fixed-point weights), and the integer reference and the
C compute it with the same integers: bit-exact by construction, and within one step of the float
LayerNorm (while gamma / s_out and beta / s_out stay below 2^8 the fixed-point error stays below 2^-16 of an output step:
the Q24 rounding of y times gamma / s_out, the 31-bit root and reciprocal, the int32 weights).

Per row of n int8 values x with input zero point zp_in (d = x - zp_in):

    S1 = sum(d), S2 = sum(d^2)                           (int64)
    V  = n * S2 - S1^2 + E,  E = round(eps * n^2 / s_in^2)
    y  = (n * d - S1) / sqrt(V)                           (the normalised value, exactly)

since (x - mean) / sqrt(var + eps) in real numbers is that ratio. In integers:
k = (62 - bit_length(V)) // 2 brings V * 4^k into [2^60, 2^62); s = isqrt(V * 4^k) (floor, 31 bits);
r = floor(2^61 / s); u = RoundingDivideByPOT(c * r, 37 - k) with c = n * d - S1 is y in Q24.
The affine part: with the layer's Fg (the most fractional bits for which every
g = round(gamma / s_out * 2^Fg) and b = round(beta / s_out * 2^Fg) fits in int32),
out = RoundingDivideByPOT(u * g + (b << 24), 24 + Fg) + zp_out, clamped. RoundingDivideByPOT is
TFLite's (nearest, ties away from zero), here on int64.

Limits (otherwise the LayerNorm stays a float island): the last axis only, n <= 4096 values,
E < 2^31, constant gamma and beta.
"""

from __future__ import annotations

import math

import numpy as np
import tvm

from .extern_call import extern_call_primfunc

MAX_DEPTH = 4096
Q_NORMALISED = 24  # fractional bits of the normalised value u
LAYER_NORM_FUNCTION = "tvmnas_s8_layer_norm"

LAYER_NORM_C = """\
/* int8 LayerNorm over the last axis (passes/int8_layer_norm.py): int64 sums, a normalised integer
 * square root, y = (n d - S1) / sqrt(V) in Q24, the per-channel affine in Q(24 + fg). */
static inline int64_t tvmnas_rdbpot64(int64_t x, int32_t e) {
  const int64_t mask = (INT64_C(1) << e) - 1;
  const int64_t remainder = x & mask;
  const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (remainder > threshold ? 1 : 0);
}
static inline uint32_t tvmnas_isqrt64(uint64_t v) {
  uint64_t result = 0, bit = UINT64_C(1) << 62;
  while (bit > v) bit >>= 2;
  while (bit) {
    if (v >= result + bit) { v -= result + bit; result = (result >> 1) + bit; }
    else result >>= 1;
    bit >>= 2;
  }
  return (uint32_t)result;
}
static __attribute__((noinline)) void tvmnas_s8_layer_norm(const int8_t *in, const int32_t *g, const int32_t *b,
                                                           int8_t *out, int32_t rows, int32_t n, int32_t in_zp,
                                                           int32_t out_zp, int32_t eps, int32_t fg, int32_t act_min,
                                                           int32_t act_max) {
  for (int32_t r = 0; r < rows; ++r) {
    const int8_t *x = in + r * n;
    int8_t *y = out + r * n;
    int64_t s1 = 0, s2 = 0;
    for (int32_t c = 0; c < n; ++c) {
      const int32_t d = (int32_t)x[c] - in_zp;
      s1 += d;
      s2 += (int64_t)(d * d);
    }
    const int64_t v = (int64_t)n * s2 - s1 * s1 + eps;
    int64_t inv = 0;
    int32_t shift = 0;
    if (v > 0) {
      const int32_t bits = 64 - __builtin_clzll((uint64_t)v);
      const int32_t k = (62 - bits) / 2;
      const uint32_t root = tvmnas_isqrt64((uint64_t)v << (2 * k));
      inv = (int64_t)((UINT64_C(1) << 61) / root);
      shift = 37 - k;
    }
    for (int32_t c = 0; c < n; ++c) {
      const int64_t centred = (int64_t)n * ((int32_t)x[c] - in_zp) - s1;
      const int64_t u = v > 0 ? tvmnas_rdbpot64(centred * inv, shift) : 0;
      const int64_t o = u * g[c] + ((int64_t)b[c] << 24);
      int64_t q = tvmnas_rdbpot64(o, 24 + fg) + out_zp;
      q = q < act_min ? act_min : q > act_max ? act_max : q;
      y[c] = (int8_t)q;
    }
  }
}
"""


def layer_norm_params(input_scale: float, output_scale: float, gamma: np.ndarray, beta: np.ndarray,
                      eps: float) -> dict | None:
    """The kernel's constants for one LayerNorm (None where it cannot run in integers: see the
    module's limits): E (eps), fg, g and b (int32 per channel)."""
    n = int(np.asarray(gamma).size)
    if n < 1 or n > MAX_DEPTH or np.asarray(beta).size != n:
        return None
    s_in, s_out = float(np.float32(input_scale)), float(np.float32(output_scale))
    e = round(float(np.float32(eps)) * n * n / (s_in * s_in))
    if not 0 <= e < 2**31:
        return None
    weights = np.asarray(gamma, np.float32).astype(np.float64).reshape(-1) / s_out
    biases = np.asarray(beta, np.float32).astype(np.float64).reshape(-1) / s_out
    largest = float(max(np.abs(weights).max(), np.abs(biases).max(), 1e-30))
    fg = min(31, math.floor(math.log2((2**31 - 1) / largest)))
    while fg >= 0 and largest * 2.0**fg >= 2**31 - 1:
        fg -= 1
    if fg < 0:
        return None
    g = np.array([_round_away(w * 2.0**fg) for w in weights], np.int64)
    b = np.array([_round_away(v * 2.0**fg) for v in biases], np.int64)
    if max(np.abs(g).max(), np.abs(b).max()) > 2**31 - 1:
        return None
    return {"eps": int(e), "fg": int(fg), "g": g.astype(np.int32), "b": b.astype(np.int32)}


def _round_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _rdbpot(x: int, e: int) -> int:
    """RoundingDivideByPOT on Python integers (nearest, ties away from zero)."""
    mask = (1 << e) - 1
    return (x >> e) + (1 if (x & mask) > (mask >> 1) + (1 if x < 0 else 0) else 0)


def layer_norm_rows(x: np.ndarray, input_zero_point: int, output_zero_point: int, params: dict,
                    act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """The kernel over the last axis of int8 `x`, step by step in Python integers (the reference)."""
    flat = np.asarray(x).astype(np.int64).reshape(-1, x.shape[-1])
    n = flat.shape[1]
    g, b, fg = [int(v) for v in params["g"]], [int(v) for v in params["b"]], params["fg"]
    out = np.empty(flat.shape, np.int8)
    for r, row in enumerate(flat):
        d = [int(v) - int(input_zero_point) for v in row]
        s1, s2 = sum(d), sum(v * v for v in d)
        v = n * s2 - s1 * s1 + params["eps"]
        inv, shift = 0, 0
        if v > 0:
            k = (62 - v.bit_length()) // 2
            inv, shift = (1 << 61) // math.isqrt(v << (2 * k)), 37 - k
        for c in range(n):
            u = _rdbpot((n * d[c] - s1) * inv, shift) if v > 0 else 0
            q = _rdbpot(u * g[c] + (b[c] << Q_NORMALISED), Q_NORMALISED + fg) + int(output_zero_point)
            out[r, c] = min(max(q, act_min), act_max)
    return out.reshape(x.shape)


def uses_layer_norm(kernel_text: str) -> bool:
    """Whether printed C calls the LayerNorm kernel (LAYER_NORM_C must then precede it)."""
    return LAYER_NORM_FUNCTION + "(" in kernel_text


def layer_norm_primfunc(shape: tuple[int, ...], *, input_zero_point: int, output_zero_point: int, eps: int, fg: int,
                        act_min: int = -128, act_max: int = 127) -> tvm.tirx.PrimFunc:
    """A PrimFunc (x int8 `shape`, g int32 (n,), b int32 (n,), y int8 `shape`) that is one call of
    LAYER_NORM_C over the last axis; opaque, so nothing is fused into it."""
    shape = tuple(int(d) for d in shape)
    n = shape[-1]
    return extern_call_primfunc(
        LAYER_NORM_FUNCTION, [("x", shape, "int8"), ("g", (n,), "int32"), ("b", (n,), "int32")], ("y", shape, "int8"),
        [int(np.prod(shape)) // n, n, input_zero_point, output_zero_point, eps, fg, act_min, act_max])


__all__ = ["LAYER_NORM_C", "LAYER_NORM_FUNCTION", "MAX_DEPTH", "layer_norm_params", "layer_norm_primfunc",
           "layer_norm_rows", "uses_layer_norm"]
