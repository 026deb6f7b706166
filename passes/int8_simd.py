"""UseSIMDKernels: int8 convolutions and dense layers as calls of a C micro-kernel using the DSP
extension's SIMD instructions (SXTB16 unpacks two int8 to two int16, SMLAD does two 16x16
multiply-accumulates), for cores whose target descriptor says "dsp": true.

gcc 12 does not vectorize the scalar integer kernels into these instructions, so the kernel of a
conv (groups 1, any window, stride, padding, dilation) or dense layer becomes one call of
`tvmnas_s8_conv` (SIMD_C, printed into the bundle before the kernels) with the layer's sizes,
zero points and clamp as constants. The micro-kernel:
- gathers the window of each of two output pixels (im2col, padding filled with the input zero
  point as in TFLite) into an int16 column, each word of 4 values widened by SXTB16 to the pairs
  (0, 2), (1, 3); where 4 divides C_in and the window lies inside the input, each value goes
  straight to that place (scratch: two columns and a gather buffer, placed by the arena planner);
- computes a 2 output channels x 2 pixels register tile: per 4 reduction steps one word of each
  weight row is unpacked by SXTB16 (bytes 0, 2) and SXTB16 of the word rotated by 8 (bytes 1, 3),
  which pair up with the column's halves in 8 SMLADs;
- adds the bias and requantizes with the same `tvmnas_requantize` as the scalar kernel;
- optionally (`tvmnas_s8_conv_add`, a residual add that followed the conv) combines each int8
  output with the residual element at the same index by TFLite's ADD arithmetic, as add_int8 does,
  reading that residual element just before writing the output element: the output may be the
  residual's own buffer.

Bit-exact with the scalar kernel: both sum the same int32 products, and integer addition does not
depend on the order. SMLAD does not saturate on accumulation (it only sets the Q flag), and no
int32 overflow is possible: |x| <= 128 and |w| <= 128 make each product at most 2^14 in magnitude,
so a sum of up to 2^17 products (the limit MAX_REDUCTION checked here; ResNet-8's largest is 576)
stays within 2^31. A larger reduction keeps the scalar kernel.
Without __ARM_FEATURE_SIMD32 (a host build) the two instructions are portable C with the same
results.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tvm
from tvm import relax, s_tir, tirx

from .in_place import DECLARED_ATTR
from .kernel_features import MACS_ATTR
from .integer_kernels import ADD_ANNOTATION, DEPTHWISE_ANNOTATION
from .integer_kernels import GEMM_ANNOTATION as SIMD_ANNOTATION
from .module_update import replace_functions
from .quantize_to_integer import _constant, use_counts

SIMD_FUNCTION = "tvmnas_s8_conv"
SIMD_ADD_FUNCTION = "tvmnas_s8_conv_add"  # the conv, then TFLite's ADD with a residual, in place
DEPTHWISE_FUNCTION = "tvmnas_s8_depthwise"
OPAQUE = 8  # relax op_pattern kOpaque: FuseOps fuses nothing into the call
MAX_REDUCTION = 1 << 17  # products of at most 2^14 each: the int32 sum cannot overflow

# the layer constants the micro-kernel takes, in its argument order (the annotation's keys)
LAYER_FIELDS = ("cin", "h", "w", "in_cstride", "in_pstride", "kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw",
                "cout", "oh", "ow", "out_ostride", "out_pstride", "in_zp", "out_zp", "act_min", "act_max")
# the ADD constants tvmnas_s8_conv_add takes after them: 1 = the conv's output, 2 = the residual
ADD_FIELDS = ("left_shift", "m1", "s1", "zp1", "m2", "s2", "zp2", "mo", "so", "zpo", "lo", "hi")
# the same for the depthwise micro-kernel
DEPTHWISE_FIELDS = ("c_in", "h", "w", "multiplier", "kh", "kw", "sh", "sw", "pt", "pl", "pb", "pr", "oh", "ow",
                    "in_zp", "out_zp", "act_min", "act_max")

SIMD_C = """\
/* int8 conv / dense micro-kernel (passes/int8_simd.py): im2col of two output pixels, each widened
 * to an int16 column in the order SXTB16 unpacks a word of 4 weights (bytes 0, 2 then 1, 3); a
 * 2 output channels x 2 pixels tile of SMLAD (two 16x16 MACs each); int32 accumulation (cannot
 * overflow: at most 2^17 products of magnitude <= 2^14), then the scalar kernels'
 * tvmnas_requantize. */
#if defined(__ARM_FEATURE_SIMD32)
#include <arm_acle.h>
static inline int32_t tvmnas_sxtb16_ror8(int32_t x) {
  int32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}
#define TVMNAS_SXTB16(x) ((int32_t)__sxtb16((int32_t)(x)))
#define TVMNAS_SXTB16_ROR8(x) tvmnas_sxtb16_ror8((int32_t)(x))
#define TVMNAS_SMLAD(a, b, acc) ((int32_t)__smlad((a), (b), (acc)))
#else
static inline int32_t tvmnas_sxtb16_c(uint32_t x) {
  return (int32_t)((uint32_t)(uint16_t)(int16_t)(int8_t)(x & 0xff) |
                   ((uint32_t)(uint16_t)(int16_t)(int8_t)((x >> 16) & 0xff) << 16));
}
static inline int32_t tvmnas_smlad_c(int32_t a, int32_t b, int32_t acc) {
  return acc + (int16_t)(a & 0xffff) * (int16_t)(b & 0xffff) +
         (int16_t)((uint32_t)a >> 16) * (int16_t)((uint32_t)b >> 16);
}
#define TVMNAS_SXTB16(x) tvmnas_sxtb16_c((uint32_t)(x))
#define TVMNAS_SXTB16_ROR8(x) tvmnas_sxtb16_c(((uint32_t)(x) >> 8) | ((uint32_t)(x) << 24))
#define TVMNAS_SMLAD(a, b, acc) tvmnas_smlad_c((a), (b), (acc))
#endif

/* A window crossing the input's edge, gathered with checks (padding: the input zero point). Border
 * pixels only, so one out-of-line copy serves every layer (flash; noclone: gcc would otherwise
 * specialise a copy per call site). */
static __attribute__((noinline, noclone)) void tvmnas_s8_gather_edge(
    const int8_t *in, int8_t *t, int32_t iy0, int32_t ix0, int32_t cin, int32_t h, int32_t w, int32_t in_cstride,
    int32_t in_pstride, int32_t kh, int32_t kw, int32_t dh, int32_t dw, int32_t in_zp) {
  const int8_t pad = (int8_t)in_zp;
  const int32_t x_inside = ix0 >= 0 && ix0 + (kw - 1) * dw < w;
  for (int32_t c = 0; c < cin; ++c) {
    const int8_t *plane = in + c * in_cstride;
    for (int32_t ky = 0; ky < kh; ++ky) {
      const int32_t iy = iy0 + ky * dh;
      if (iy < 0 || iy >= h) {
        for (int32_t kx = 0; kx < kw; ++kx) *t++ = pad;
        continue;
      }
      const int8_t *row = plane + iy * w * in_pstride;
      if (x_inside) {
        const int8_t *src = row + ix0 * in_pstride;
        for (int32_t kx = 0; kx < kw; ++kx) *t++ = src[kx * dw * in_pstride];
      } else {
        for (int32_t kx = 0; kx < kw; ++kx) {
          const int32_t ix = ix0 + kx * dw;
          *t++ = (ix >= 0 && ix < w) ? row[ix * in_pstride] : pad;
        }
      }
    }
  }
}

/* The window of output pixel (oy, ox) as K = cin*kh*kw int16 values: gathered in (c, ky, kx) order
 * into tmp (padding: the input zero point), then each word of 4 widened by SXTB16 to the pairs
 * (0, 2), (1, 3); the K % 4 tail stays in order. */
static inline __attribute__((always_inline)) void tvmnas_s8_column(
    const int8_t *in, int8_t *tmp, int16_t *col, int32_t oy, int32_t ox, int32_t cin, int32_t h, int32_t w,
    int32_t in_cstride, int32_t in_pstride, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt,
    int32_t pl, int32_t dh, int32_t dw, int32_t in_zp) {
  const int32_t ix0 = ox * sw - pl;
  const int32_t iy0 = oy * sh - pt;
  const int32_t x_inside = ix0 >= 0 && ix0 + (kw - 1) * dw < w;
  int8_t *t = tmp;
  const int32_t inside = x_inside && iy0 >= 0 && iy0 + (kh - 1) * dh < h;
  if (inside && (cin & 3) == 0) {
    /* the whole window inside and 4 | cin: four channels' windows are 4*kh*kw values, whole
     * words, so each value goes straight to its widened place (the loops unroll to constants) */
    const int8_t *origin = in + (iy0 * w + ix0) * in_pstride;
    for (int32_t c = 0; c < cin; c += 4) {
      int16_t *dst = col + c * kh * kw;
#pragma GCC unroll 4
      for (int32_t cc = 0; cc < 4; ++cc) {
        const int8_t *src = origin + (c + cc) * in_cstride;
        for (int32_t ky = 0; ky < kh; ++ky) {
          for (int32_t kx = 0; kx < kw; ++kx) {
            const int32_t e = (cc * kh + ky) * kw + kx;
            dst[(e & ~3) | ((e & 1) << 1) | ((e >> 1) & 1)] = src[(ky * dh * w + kx * dw) * in_pstride];
          }
        }
      }
    }
    return;
  }
  if (inside) { /* the whole window inside: no checks */
    const int8_t *origin = in + (iy0 * w + ix0) * in_pstride;
    for (int32_t c = 0; c < cin; ++c) {
      const int8_t *src = origin + c * in_cstride;
      for (int32_t ky = 0; ky < kh; ++ky) {
        const int8_t *row = src + ky * dh * w * in_pstride;
        for (int32_t kx = 0; kx < kw; ++kx) *t++ = row[kx * dw * in_pstride];
      }
    }
  } else {
    tvmnas_s8_gather_edge(in, tmp, oy * sh - pt, ix0, cin, h, w, in_cstride, in_pstride, kh, kw, dh, dw, in_zp);
  }
  const int32_t K = cin * kh * kw;
  const int32_t K4 = K & ~3;
  int32_t k = 0;
  for (; k < K4; k += 4) {
    uint32_t v;
    __builtin_memcpy(&v, tmp + k, 4);
    const int32_t even = TVMNAS_SXTB16(v), odd = TVMNAS_SXTB16_ROR8(v);
    __builtin_memcpy(col + k, &even, 4);
    __builtin_memcpy(col + k + 2, &odd, 4);
  }
  for (; k < K; ++k) col[k] = tmp[k];
}

static inline int8_t tvmnas_s8_output(int32_t acc, int32_t bias, int32_t mult, int32_t shift, int32_t out_zp,
                                      int32_t act_min, int32_t act_max) {
  int32_t v = tvmnas_requantize(acc + bias, mult, shift) + out_zp;
  v = v < act_min ? act_min : v;
  return (int8_t)(v > act_max ? act_max : v);
}

/* TFLite's int8 ADD of a = the conv's int8 output and b = the residual (passes/integer_kernels.py
 * add_int8, whose operand order the pass maps to 1 = conv, 2 = residual; the sum is symmetric) */
typedef struct {
  int32_t left_shift, m1, s1, zp1, m2, s2, zp2, mo, so, zpo, lo, hi;
} tvmnas_s8_add_t;

/* out of line, its constants as arguments: gcc clones it once per layer with the layer's
 * constants folded in (inlined at the tile's four stores it would cost about 250 B of flash
 * each) */
static __attribute__((noinline, unused)) int8_t tvmnas_s8_add(int32_t a, int32_t b, int32_t left_shift, int32_t m1,
                                                      int32_t s1, int32_t zp1, int32_t m2, int32_t s2, int32_t zp2,
                                                      int32_t mo, int32_t so, int32_t zpo, int32_t lo, int32_t hi) {
  const int32_t x1 = tvmnas_requantize((a - zp1) * (1 << left_shift), m1, s1);
  const int32_t x2 = tvmnas_requantize((b - zp2) * (1 << left_shift), m2, s2);
  int32_t v = tvmnas_requantize(x1 + x2, mo, so) + zpo;
  v = v < lo ? lo : v;
  return (int8_t)(v > hi ? hi : v);
}
#define TVMNAS_S8_ADD(a, b, p) \
  tvmnas_s8_add((a), (b), (p)->left_shift, (p)->m1, (p)->s1, (p)->zp1, (p)->m2, (p)->s2, (p)->zp2, (p)->mo, \
                (p)->so, (p)->zpo, (p)->lo, (p)->hi)

/* scratch: 2 * K int16 (the two columns) followed by K int8 (the gather buffer) */
static inline __attribute__((always_inline)) void tvmnas_s8_conv_impl(
    const int8_t *in, const int8_t *weight, const int32_t *bias, const int32_t *mult, const int32_t *shift,
    const int8_t *res, int8_t *out, int16_t *scratch, int32_t cin, int32_t h, int32_t w, int32_t in_cstride,
    int32_t in_pstride, int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t pt, int32_t pl, int32_t dh,
    int32_t dw, int32_t cout, int32_t oh, int32_t ow, int32_t out_ostride, int32_t out_pstride, int32_t in_zp,
    int32_t out_zp, int32_t act_min, int32_t act_max, const tvmnas_s8_add_t *add) {
  const int32_t K = cin * kh * kw;
  const int32_t K4 = K & ~3;
  const int32_t K16 = K & ~15;
  const int32_t P = oh * ow;
  int8_t *tmp = (int8_t *)(scratch + 2 * K);
  for (int32_t p = 0; p < P; p += 2) {
    const int32_t two = p + 1 < P;
    tvmnas_s8_column(in, tmp, scratch, p / ow, p % ow, cin, h, w, in_cstride, in_pstride, kh, kw, sh, sw, pt, pl,
                     dh, dw, in_zp);
    if (two) {
      tvmnas_s8_column(in, tmp, scratch + K, (p + 1) / ow, (p + 1) % ow, cin, h, w, in_cstride, in_pstride, kh, kw,
                       sh, sw, pt, pl, dh, dw, in_zp);
    }
    const int16_t *x0 = scratch;
    const int16_t *x1 = two ? scratch + K : scratch;
    for (int32_t o = 0; o < cout; o += 2) {
      const int32_t o2 = o + 1 < cout;
      const int8_t *w0 = weight + o * K;
      const int8_t *w1 = o2 ? w0 + K : w0;
      int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0; /* a<channel><pixel> */
      int32_t k = 0;

/* one step: 4 reduction steps of the 2x2 tile, 16 MACs */
#define TVMNAS_S8_STEP(off)                                                  \
  do {                                                                       \
    uint32_t wa, wb;                                                         \
    int32_t x0e, x0o, x1e, x1o;                                              \
    __builtin_memcpy(&wa, w0 + k + (off), 4);                                \
    __builtin_memcpy(&wb, w1 + k + (off), 4);                                \
    __builtin_memcpy(&x0e, x0 + k + (off), 4);                               \
    __builtin_memcpy(&x0o, x0 + k + (off) + 2, 4);                           \
    __builtin_memcpy(&x1e, x1 + k + (off), 4);                               \
    __builtin_memcpy(&x1o, x1 + k + (off) + 2, 4);                           \
    const int32_t wae = TVMNAS_SXTB16(wa), wao = TVMNAS_SXTB16_ROR8(wa);     \
    const int32_t wbe = TVMNAS_SXTB16(wb), wbo = TVMNAS_SXTB16_ROR8(wb);     \
    a00 = TVMNAS_SMLAD(wae, x0e, a00); a00 = TVMNAS_SMLAD(wao, x0o, a00);    \
    a01 = TVMNAS_SMLAD(wae, x1e, a01); a01 = TVMNAS_SMLAD(wao, x1o, a01);    \
    a10 = TVMNAS_SMLAD(wbe, x0e, a10); a10 = TVMNAS_SMLAD(wbo, x0o, a10);    \
    a11 = TVMNAS_SMLAD(wbe, x1e, a11); a11 = TVMNAS_SMLAD(wbo, x1o, a11);    \
  } while (0)
      /* four steps per iteration; the empty asm keeps gcc from hoisting a step's loads above the
       * previous step's SMLADs, which runs out of registers */
      for (; k < K16; k += 16) {
        TVMNAS_S8_STEP(0);
        __asm__ volatile("" ::: "memory");
        TVMNAS_S8_STEP(4);
        __asm__ volatile("" ::: "memory");
        TVMNAS_S8_STEP(8);
        __asm__ volatile("" ::: "memory");
        TVMNAS_S8_STEP(12);
      }
      for (; k < K4; k += 4) {
        TVMNAS_S8_STEP(0);
      }
#undef TVMNAS_S8_STEP
      for (; k < K; ++k) {
        const int32_t wa = w0[k], wb = w1[k], xa = x0[k], xb = x1[k];
        a00 += wa * xa; a01 += wa * xb; a10 += wb * xa; a11 += wb * xb;
      }
      int8_t *y = out + o * out_ostride + p * out_pstride;
      if (!add) {
        y[0] = tvmnas_s8_output(a00, bias[o], mult[o], shift[o], out_zp, act_min, act_max);
        if (two) y[out_pstride] = tvmnas_s8_output(a01, bias[o], mult[o], shift[o], out_zp, act_min, act_max);
        if (o2) {
          y[out_ostride] = tvmnas_s8_output(a10, bias[o + 1], mult[o + 1], shift[o + 1], out_zp, act_min, act_max);
          if (two) {
            y[out_ostride + out_pstride] =
                tvmnas_s8_output(a11, bias[o + 1], mult[o + 1], shift[o + 1], out_zp, act_min, act_max);
          }
        }
        continue;
      }
      /* with the residual: each res[i] is read just before out[i] is written, and no index is
       * written twice, so out may be the residual's own buffer */
      const int8_t *r = res + (y - out);
      y[0] = TVMNAS_S8_ADD(tvmnas_s8_output(a00, bias[o], mult[o], shift[o], out_zp, act_min, act_max), r[0], add);
      if (two) {
        y[out_pstride] = TVMNAS_S8_ADD(tvmnas_s8_output(a01, bias[o], mult[o], shift[o], out_zp, act_min, act_max),
                                       r[out_pstride], add);
      }
      if (o2) {
        y[out_ostride] = TVMNAS_S8_ADD(
            tvmnas_s8_output(a10, bias[o + 1], mult[o + 1], shift[o + 1], out_zp, act_min, act_max), r[out_ostride],
            add);
        if (two) {
          y[out_ostride + out_pstride] = TVMNAS_S8_ADD(
              tvmnas_s8_output(a11, bias[o + 1], mult[o + 1], shift[o + 1], out_zp, act_min, act_max),
              r[out_ostride + out_pstride], add);
        }
      }
    }
  }
}

#define TVMNAS_S8_CONV_LAYER                                                                                      \
  int32_t cin, int32_t h, int32_t w, int32_t in_cstride, int32_t in_pstride, int32_t kh, int32_t kw, int32_t sh,  \
      int32_t sw, int32_t pt, int32_t pl, int32_t dh, int32_t dw, int32_t cout, int32_t oh, int32_t ow,            \
      int32_t out_ostride, int32_t out_pstride, int32_t in_zp, int32_t out_zp, int32_t act_min, int32_t act_max
#define TVMNAS_S8_CONV_ARGS                                                                                  \
  cin, h, w, in_cstride, in_pstride, kh, kw, sh, sw, pt, pl, dh, dw, cout, oh, ow, out_ostride, out_pstride, \
      in_zp, out_zp, act_min, act_max

static inline __attribute__((always_inline)) void tvmnas_s8_conv(
    const int8_t *in, const int8_t *weight, const int32_t *bias, const int32_t *mult, const int32_t *shift,
    int8_t *out, int16_t *scratch, TVMNAS_S8_CONV_LAYER) {
  tvmnas_s8_conv_impl(in, weight, bias, mult, shift, 0, out, scratch, TVMNAS_S8_CONV_ARGS, 0);
}

/* the conv, then TFLite's ADD of its int8 output and the residual `res` (same layout as out),
 * element by element; out may be res itself */
static inline __attribute__((always_inline)) void tvmnas_s8_conv_add(
    const int8_t *in, const int8_t *weight, const int32_t *bias, const int32_t *mult, const int32_t *shift,
    const int8_t *res, int8_t *out, int16_t *scratch, TVMNAS_S8_CONV_LAYER, int32_t left_shift, int32_t m1,
    int32_t s1, int32_t zp1, int32_t m2, int32_t s2, int32_t zp2, int32_t mo, int32_t so, int32_t zpo, int32_t lo,
    int32_t hi) {
  const tvmnas_s8_add_t add = {left_shift, m1, s1, zp1, m2, s2, zp2, mo, so, zpo, lo, hi};
  tvmnas_s8_conv_impl(in, weight, bias, mult, shift, res, out, scratch, TVMNAS_S8_CONV_ARGS, &add);
}
#undef TVMNAS_S8_CONV_LAYER
#undef TVMNAS_S8_CONV_ARGS

/* int8 depthwise micro-kernel (passes/int8_simd.py), NCHW, dilation 1, any depth multiplier: each
 * input channel is widened once to an int16 plane with its padding (the input zero point); then per
 * output channel and pair of output pixels, each kernel row is a run of SMLADs on words of two
 * adjacent taps (weights widened once per channel, an odd kernel width padded with a zero weight);
 * int32 accumulation, then the scalar kernels' tvmnas_requantize.
 * scratch: (h + pt + pb) rows of (w + pl + pr + 2) int16 */
#define TVMNAS_DW_MAX_PAIRS 32
static inline __attribute__((always_inline)) void tvmnas_s8_depthwise(
    const int8_t *in, const int8_t *weight, const int32_t *bias, const int32_t *mult, const int32_t *shift,
    int8_t *out, int16_t *plane, int32_t c_in, int32_t h, int32_t w, int32_t multiplier, int32_t kh, int32_t kw,
    int32_t sh, int32_t sw, int32_t pt, int32_t pl, int32_t pb, int32_t pr, int32_t oh, int32_t ow, int32_t in_zp,
    int32_t out_zp, int32_t act_min, int32_t act_max) {
  const int32_t hp = h + pt + pb;
  const int32_t rs = w + pl + pr + 2; /* row stride: a spare pair for the zero weight of an odd width */
  const int32_t pairs = (kw + 1) >> 1;
  const int16_t pad = (int16_t)in_zp;
  for (int32_t c = 0; c < c_in; ++c) {
    const int8_t *src = in + c * h * w;
    for (int32_t y = 0; y < hp; ++y) {
      int16_t *row = plane + y * rs;
      const int32_t iy = y - pt;
      if (iy < 0 || iy >= h) {
        for (int32_t x = 0; x < rs; ++x) row[x] = pad;
        continue;
      }
      for (int32_t x = 0; x < pl; ++x) row[x] = pad;
      const int8_t *s = src + iy * w;
      int16_t *d = row + pl;
      for (int32_t x = 0; x < w; ++x) d[x] = s[x];
      for (int32_t x = pl + w; x < rs; ++x) row[x] = pad;
    }
    for (int32_t m = 0; m < multiplier; ++m) {
      const int32_t o = c * multiplier + m;
      const int8_t *wo = weight + o * kh * kw;
      int32_t wp[TVMNAS_DW_MAX_PAIRS]; /* (w[ky][2j], w[ky][2j + 1] or 0) as int16 pairs */
      for (int32_t ky = 0; ky < kh; ++ky) {
        for (int32_t j = 0; j < pairs; ++j) {
          const int32_t lo = wo[ky * kw + 2 * j];
          const int32_t hi = 2 * j + 1 < kw ? wo[ky * kw + 2 * j + 1] : 0;
          wp[ky * pairs + j] = (int32_t)(((uint32_t)(uint16_t)(int16_t)hi << 16) | (uint16_t)(int16_t)lo);
        }
      }
      const int32_t b = bias[o], mu = mult[o], sf = shift[o];
      int8_t *y = out + o * oh * ow;
      for (int32_t oy = 0; oy < oh; ++oy) {
        const int16_t *top = plane + oy * sh * rs;
        int8_t *yrow = y + oy * ow;
        int32_t ox = 0;
        for (; ox + 1 < ow; ox += 2) {
          const int16_t *p0 = top + ox * sw;
          const int16_t *p1 = p0 + sw;
          int32_t a0 = 0, a1 = 0;
          for (int32_t ky = 0; ky < kh; ++ky) {
            for (int32_t j = 0; j < pairs; ++j) {
              int32_t x0, x1;
              __builtin_memcpy(&x0, p0 + ky * rs + 2 * j, 4);
              __builtin_memcpy(&x1, p1 + ky * rs + 2 * j, 4);
              a0 = TVMNAS_SMLAD(wp[ky * pairs + j], x0, a0);
              a1 = TVMNAS_SMLAD(wp[ky * pairs + j], x1, a1);
            }
          }
          yrow[ox] = tvmnas_s8_output(a0, b, mu, sf, out_zp, act_min, act_max);
          yrow[ox + 1] = tvmnas_s8_output(a1, b, mu, sf, out_zp, act_min, act_max);
        }
        if (ox < ow) {
          const int16_t *p0 = top + ox * sw;
          int32_t a0 = 0;
          for (int32_t ky = 0; ky < kh; ++ky) {
            for (int32_t j = 0; j < pairs; ++j) {
              int32_t x0;
              __builtin_memcpy(&x0, p0 + ky * rs + 2 * j, 4);
              a0 = TVMNAS_SMLAD(wp[ky * pairs + j], x0, a0);
            }
          }
          yrow[ox] = tvmnas_s8_output(a0, b, mu, sf, out_zp, act_min, act_max);
        }
      }
    }
  }
}
"""


def uses_simd(kernel_text: str) -> bool:
    """Whether printed C calls a SIMD micro-kernel (SIMD_C must then precede it)."""
    return any(f + "(" in kernel_text for f in (SIMD_FUNCTION, SIMD_ADD_FUNCTION, DEPTHWISE_FUNCTION))


def _annotation(func: tirx.PrimFunc, keys: tuple[str, ...] = (SIMD_ANNOTATION, DEPTHWISE_ANNOTATION)
                ) -> tuple[str, dict] | None:
    """(annotation key, layer constants) QuantizeToInteger left on the kernel's output block, if any."""
    sch = s_tir.Schedule(func)
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    found = [(key, b.annotations[key]) for b in blocks for key in keys if key in b.annotations]
    if len(found) != 1:
        return None
    key, layer = found[0]
    return key, {str(k): int(v) for k, v in layer.items()}


_ROLES = ("int8", "int8", "int32", "int32", "int32", "int8")  # data, weight, bias, multiplier, shift, out


def _size(param) -> int:
    n = 1
    for dim in param.ty.shape:
        n *= int(dim)
    return n


def _simd_func(func: tirx.PrimFunc, key: str, layer: dict, add: dict | None = None) -> tirx.PrimFunc | None:
    """The kernel as one call of its micro-kernel (conv / dense, or depthwise); None where the
    parameters are not the six expected. With `add` (ADD_FIELDS; conv / dense only) the function
    takes a residual before its output, (data, weight, bias, multiplier, shift, residual, out), and
    calls tvmnas_s8_conv_add, declaring the output writable over the residual (DECLARED_ATTR)."""
    params = list(func.params)
    if len(params) != len(_ROLES) or any(str(p.ty.dtype) != d for p, d in zip(params, _ROLES)):
        return None
    if add is not None:
        if key != SIMD_ANNOTATION:
            return None
        params = params[:5] + [params[5]] + params[5:]  # the residual: the output's type and shape
    sizes = [_size(p) for p in params]
    if key == DEPTHWISE_ANNOTATION:
        cout = layer["c_in"] * layer["multiplier"]
        k = layer["kh"] * layer["kw"]
        scratch = (layer["h"] + layer["pt"] + layer["pb"]) * (layer["w"] + layer["pl"] + layer["pr"] + 2)
        function, fields = DEPTHWISE_FUNCTION, DEPTHWISE_FIELDS
    else:
        cout = layer["cout"]
        k = layer["cin"] * layer["kh"] * layer["kw"]
        scratch = 2 * k + (k + 1) // 2  # int16: two columns, then the int8 gather buffer
        function, fields = SIMD_FUNCTION, LAYER_FIELDS
    if sizes[1] != cout * k or sizes[-1] != cout * layer["oh"] * layer["ow"] or k > MAX_REDUCTION:
        return None
    out = len(params) - 1
    names = [f"p{i}" for i in range(len(params))]
    decls = ", ".join(
        f"{n}: T.Buffer(({', '.join(str(int(d)) for d in p.ty.shape)},), \"{p.ty.dtype}\")" for n, p in zip(names, params)
    )
    ptrs = [
        f"T.tvm_access_ptr(T.type_annotation(\"{p.ty.dtype}\"), {n}.data, 0, {size}, {2 if i == out else 1})"
        for i, (n, p, size) in enumerate(zip(names, params, sizes))
    ]
    ptrs.append(f"T.tvm_access_ptr(T.type_annotation(\"int16\"), col.data, 0, {scratch}, 3)")
    constants = [str(layer[f]) for f in fields]
    if add is not None:
        function = SIMD_ADD_FUNCTION
        constants += [str(add[f]) for f in ADD_FIELDS]
    source = (
        "@T.prim_func(s_tir=True)\n"
        f"def main({decls}):\n"
        "    T.func_attr({\"tirx.noalias\": True})\n"
        f"    col = T.alloc_buffer(({scratch},), \"int16\")\n"
        f"    T.evaluate(T.call_extern(\"void\", \"{function}\", {', '.join(ptrs + constants)}))\n"
    )
    new = tvm.script.from_source(source)
    new = new.with_attr(MACS_ATTR, tirx.const(cout * layer["oh"] * layer["ow"] * k, "int64"))
    if add is not None:
        # tvmnas_s8_conv_add reads residual[i] only to compute out[i], just before writing it
        # (tvmnas_s8_conv_impl), and writes every out[i] once: out may take the residual's bytes
        new = new.with_attr(DECLARED_ATTR, [[5, 6]])
    return new.with_attr("op_pattern", OPAQUE)


def _opaque(func) -> bool:
    """Whether `func` is not TE-built TIR (a call of a C kernel, or not a PrimFunc at all)."""
    return not isinstance(func, tirx.PrimFunc) or func.attrs is not None and "op_pattern" in func.attrs \
        and int(func.attrs["op_pattern"]) == OPAQUE


def _call_tir(value) -> tuple[tvm.ir.GlobalVar, list] | None:
    """(kernel, args) of a `relax.call_tir` binding value."""
    if not isinstance(value, relax.Call) or getattr(value.op, "name", "") != "relax.call_tir":
        return None
    kernel, args = value.args[0], value.args[1]
    if not isinstance(kernel, tvm.ir.GlobalVar) or not isinstance(args, relax.Tuple):
        return None
    return kernel, list(args.fields)


@relax.expr_functor.mutator
class _FuseResidualAdd(relax.PyExprMutator):
    """Replaces `y = add_int8(conv(x, ...), r)` (or `add_int8(r, conv(...))`) by one call of a
    tvmnas_s8_conv_add kernel where the conv's output is read by the add alone and r is none of
    the conv's operands (the conv reads those around each output; r only at it)."""

    def __init__(self, mod: tvm.IRModule, func: relax.Function, convs: dict[str, tuple]) -> None:
        super().__init__(mod)
        self.fused: dict = {}  # add binding var -> (kernel, args)
        producers = {}
        counts = use_counts(func)
        for block in func.body.blocks:
            for b in block.bindings:
                call = _call_tir(b.value)
                if call is None:
                    continue
                kernel, args = call
                if kernel.name_hint in convs:
                    producers[b.var.__chandle__()] = (b, kernel, args)
                    continue
                if len(args) != 2 or _opaque(mod[kernel]):
                    continue
                found = _annotation(mod[kernel], (ADD_ANNOTATION,))
                if found is None:
                    continue
                for side in (0, 1):
                    conv = producers.get(args[side].__chandle__()) if isinstance(args[side], relax.Var) else None
                    residual = args[1 - side]
                    if conv is None or counts.get(args[side].__chandle__()) != 1:
                        continue
                    if any(residual.same_as(a) for a in conv[2]):
                        continue
                    src = found[1]
                    one, two = ("1", "2") if side == 0 else ("2", "1")  # 1: the conv's output
                    keyed = dict(left_shift=src["left_shift"], m1=src["m" + one], s1=src["s" + one],
                                 zp1=src["zp" + one], m2=src["m" + two], s2=src["s" + two], zp2=src["zp" + two],
                                 mo=src["mo"], so=src["so"], zpo=src["zpo"], lo=src["lo"], hi=src["hi"])
                    func_, layer = convs[conv[1].name_hint]
                    new = _simd_func(func_, SIMD_ANNOTATION, layer, keyed)
                    if new is None:
                        continue
                    gv = self.builder_.add_func(new, conv[1].name_hint + "_add")
                    self.fused[b.var.__chandle__()] = (gv, conv[2] + [residual], list(b.value.ty_args))
                    break

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        fused = self.fused.get(binding.var.__chandle__())
        if fused is None:
            super().visit_var_binding_(binding)
            return
        gv, args, sinfo = fused
        call = relax.call_tir(gv, relax.Tuple([self.visit_expr(a) for a in args]), sinfo)
        if isinstance(binding.var, relax.DataflowVar):
            new = self.builder_.emit(call, name_hint=binding.var.name)
        else:
            new = self.builder_.emit_output(call, name_hint=binding.var.name)
        self.set_var_remap(binding.var, new)


@tvm.transform.module_pass(opt_level=0, name="UseSIMDKernels")
class UseSIMDKernels:
    """Replace every int8 conv / dense kernel that QuantizeToInteger marked (block annotation
    SIMD_ANNOTATION with the layer constants) by a call of the SIMD micro-kernel SIMD_C.

    Expects: PrimFuncs as QuantizeToInteger's `conv2d_int8` (groups 1, batch 1) and `dense_int8`
    define them, parameters (data, weight, bias, multiplier, shift, out); run it before
    MCULowering: the replaced kernels are marked opaque, so FuseOps fuses no epilogue into them,
    and ScheduleForMCU leaves the call alone. An int8 add (ADD_ANNOTATION) whose one addend is a
    SIMD conv / dense read by nothing else, and whose other addend (the residual) is none of that
    conv's operands, becomes one call of tvmnas_s8_conv_add: the conv, then TFLite's ADD per output
    element, with the output declared writable over the residual (in_place.DECLARED_ATTR), so the
    arena planner can run the block's add in place as it does the scalar build's fused epilogue. Only for cores with the DSP extension
    (__ARM_FEATURE_SIMD32): the bundle's C defines the micro-kernel where a kernel calls it.
    Guarantees: the same int8 outputs as the scalar kernel, bit for bit (see the module docstring);
    the column buffer (2 x C_in x KH x KW int8) becomes kernel scratch in the arena plan; kernels
    without the annotation, or whose parameters do not match it, are returned unchanged.
    """

    def __init__(self, weight_ok: Callable[[np.ndarray], bool] | None = None) -> None:
        """weight_ok: where given, only kernels whose every call in `main` passes a constant weight
        (the second operand) it accepts become micro-kernel calls (a dynamic bundle reads a weight
        in place only where it is one contiguous block of a shared array)."""
        self.weight_ok = weight_ok

    def _refused(self, mod: tvm.IRModule) -> set[str]:
        """Kernels some call of which passes a weight that `weight_ok` refuses (or no constant)."""
        if self.weight_ok is None or "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
            return set()
        refused = set()
        for block in mod["main"].body.blocks:
            for b in block.bindings:
                call = _call_tir(b.value)
                if call is None or len(call[1]) < 2:
                    continue
                weight = _constant(call[1][1])
                if weight is None or not self.weight_ok(weight):
                    refused.add(call[0].name_hint)
        return refused

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates, convs = {}, {}
        refused = self._refused(mod)
        for gv, func in mod.functions.items():
            if _opaque(func) or gv.name_hint in refused:  # already a call of a C kernel, or kept scalar
                continue
            found = _annotation(func)
            new = None if found is None else _simd_func(func, *found)
            if new is not None:
                updates[gv] = new
                if found[0] == SIMD_ANNOTATION:
                    convs[gv.name_hint] = (func, found[1])
        out = replace_functions(mod, updates)
        if not convs or "main" not in [gv.name_hint for gv in out.get_global_vars()]:
            return out
        fuser = _FuseResidualAdd(out, out["main"], convs)
        if not fuser.fused:
            return out
        main = fuser.visit_expr(out["main"])
        fused = fuser.builder_.get()
        fused["main"] = main
        return relax.transform.DeadCodeElimination()(fused)


__all__ = ["DEPTHWISE_FUNCTION", "SIMD_ADD_FUNCTION", "SIMD_ANNOTATION", "SIMD_C", "SIMD_FUNCTION", "UseSIMDKernels",
           "uses_simd"]
