"""Emit the C bundle: model.h (the API), model.c (kernels + call sequence), model_weights.c
(constants in flash), a Makefile, a usage example and manifest.json.

Every piece of text comes from one small function; same input gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvmnas.codegen.c_printer import KernelSignature, c_identifier, c_type, float_literal
from tvmnas.passes import ArenaPlan, CallGraph, TensorInfo
from tvmnas.passes.int8_simd import SIMD_C, uses_simd
from tvmnas.passes.int8_layer_norm import LAYER_NORM_C, uses_layer_norm
from tvmnas.passes.int8_softmax import SOFTMAX_C, uses_softmax
from tvmnas.passes.integer_kernels import REQUANTIZE_C

PRELUDE = """\
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "model_weights.h"

#ifdef TVMNAS_PROFILE
void tvmnas_kernel_mark(int k);
#define TVMNAS_KERNEL_MARK(k) tvmnas_kernel_mark(k)
#else
#define TVMNAS_KERNEL_MARK(k) ((void)0)
#endif

static inline float tvmnas_maxf(float a, float b) { return a > b ? a : b; }
static inline float tvmnas_minf(float a, float b) { return a < b ? a : b; }
static inline int32_t tvmnas_maxi(int32_t a, int32_t b) { return a > b ? a : b; }
static inline int32_t tvmnas_mini(int32_t a, int32_t b) { return a < b ? a : b; }
static inline float tvmnas_sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline int32_t tvmnas_floordiv(int32_t a, int32_t b) {
  int32_t q = a / b;
  return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q;
}
static inline int32_t tvmnas_floormod(int32_t a, int32_t b) { return a - tvmnas_floordiv(a, b) * b; }
static inline int64_t tvmnas_maxl(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t tvmnas_minl(int64_t a, int64_t b) { return a < b ? a : b; }
""" + REQUANTIZE_C


@dataclass
class EmittedKernel:
    """A printed kernel: its C text and signature, and the (input, output) parameter positions it
    may run in place on (passes/in_place.py; empty when not analysed)."""

    text: str
    signature: KernelSignature
    in_place: tuple[tuple[int, int], ...] = ()


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "1"


def layer_comment(index: int, kernel: str, graph: CallGraph, args: tuple[str, ...], outputs: tuple[str, ...],
                  source: str | None = None) -> str:
    """`/* 3 stack1.conv1: conv2d_add_relu 1x16x32x32 -> 1x16x32x32 float32 */` for one call."""
    ins = [graph.tensors[a] for a in args if a in graph.tensors]
    outs = [graph.tensors[o] for o in outputs]
    op = kernel[len("fused_"):] if kernel.startswith("fused_") else kernel
    src = ", ".join(shape_text(t.shape) for t in ins) or "-"
    dst = ", ".join(shape_text(t.shape) for t in outs)
    where = f"{index} {source}" if source else f"{index}"
    return f"/* {where}: {op} {src} -> {dst} {outs[0].dtype} */"


def weights_array(name: str, array: np.ndarray) -> str:
    """One aligned const array (placed in flash by the linker) with exact literals."""
    flat = np.ascontiguousarray(array).reshape(-1)
    dtype = str(flat.dtype)
    if dtype == "float32":
        values = [float_literal(float(v)) for v in flat]
    else:
        values = [str(int(v)) for v in flat]
    rows = [", ".join(values[i:i + 8]) for i in range(0, len(values), 8)]
    body = ",\n  ".join(rows)
    shape = shape_text(tuple(array.shape))
    return (
        f"/* {name}: {shape} {dtype} */\n"
        f"const {c_type(dtype)} {name}[{max(flat.size, 1)}] __attribute__((aligned(16))) = {{\n  {body}\n}};\n"
    )


def weights_files(arrays: list[tuple[str, np.ndarray]]) -> tuple[str, str]:
    """(model_weights.h, model_weights.c) declaring and defining each (C name, array) in order."""
    decls = [f"extern const {c_type(str(a.dtype))} {name}[{max(a.size, 1)}];" for name, a in arrays]
    header = "#ifndef MODEL_WEIGHTS_H\n#define MODEL_WEIGHTS_H\n#include <stdint.h>\n\n" + "\n".join(decls) + "\n\n#endif\n"
    source = "\n".join(['#include "model_weights.h"\n'] + [weights_array(name, a) for name, a in arrays])
    return header, source


def io_macros(prefix: str, info: TensorInfo, quant) -> list[str]:
    """MODEL_<PREFIX>_TYPE for a non-float tensor, and its scale and zero point where quantized."""
    lines = []
    if info.dtype != "float32":
        lines.append(f"#define MODEL_{prefix}_TYPE {c_type(info.dtype)}")
    if quant is not None:
        lines.append(f"#define MODEL_{prefix}_SCALE {float_literal(quant.scale)}")
        lines.append(f"#define MODEL_{prefix}_ZERO_POINT ({quant.zero_point})")
    return lines


def run_signature(graph: CallGraph) -> str:
    (inp,), (out,) = graph.inputs, graph.outputs
    return f"int model_run(const {c_type(inp.dtype)} *input, {c_type(out.dtype)} *output, uint8_t *arena)"


def model_header(graph: CallGraph, arena_bytes: int, target: str, quantization: dict | None = None,
                 precision: str = "float32") -> str:
    (inp,), (out,) = graph.inputs, graph.outputs
    quantization = quantization or {}
    macros = io_macros("INPUT", inp, quantization.get("input")) + io_macros("OUTPUT", out, quantization.get("output"))
    quant_note = ""
    if "input" in quantization and "output" in quantization:
        quant_note = (
            "\n * int8 model: integer-only kernels. Quantize the input as\n"
            " * q = clamp(round(x / MODEL_INPUT_SCALE) + MODEL_INPUT_ZERO_POINT, -128, 127) and read the output\n"
            " * as MODEL_OUTPUT_SCALE * (q - MODEL_OUTPUT_ZERO_POINT).\n *"
        )
    return f"""\
/* tvmnas generated model API (target {target}, precision {precision}).
 *
 * Call model_run() with an input of MODEL_INPUT_SIZE {c_type(inp.dtype)} ({shape_text(inp.shape)}, NCHW),
 * an output buffer of MODEL_OUTPUT_SIZE {c_type(out.dtype)} ({shape_text(out.shape)}) and a scratch arena of
 * MODEL_ARENA_SIZE bytes aligned to 16. Every intermediate tensor lives in the arena at a fixed
 * offset; nothing is allocated. The arena may be reused for anything else between calls.
 * Reentrant as long as each concurrent caller passes its own arena. Returns 0.
 *{quant_note}
 */
#ifndef MODEL_H
#define MODEL_H

#include <stdint.h>

#define MODEL_INPUT_SIZE {inp.elems}
#define MODEL_OUTPUT_SIZE {out.elems}
#define MODEL_ARENA_SIZE {max(arena_bytes, 16)}
{chr(10).join(macros) + chr(10) if macros else ""}
#ifdef __cplusplus
extern "C" {{
#endif

{run_signature(graph)};

#ifdef __cplusplus
}}
#endif

#endif /* MODEL_H */
"""


def arena_pointer(name: str, info: TensorInfo, offset: int, role: str) -> str:
    return (
        f"  {c_type(info.dtype)} *const {c_identifier(name)} = ({c_type(info.dtype)} *)(arena + {offset});"
        f" /* {role} {shape_text(info.shape)}, {info.nbytes} B */"
    )


def call_argument(name: str, graph: CallGraph) -> str:
    if name == graph.inputs[0].name:
        return "input"
    if name == graph.outputs[0].name:
        return "output"
    if name in graph.constants:
        return f"model_{name}"
    return c_identifier(name)


@dataclass(frozen=True)
class CallTarget:
    """What one call site of a run function calls: the C function, the printed kernel's signature
    (for its scratch buffers) and any integer arguments appended after the tensors (merged kernels)."""

    function: str
    signature: KernelSignature
    extra: tuple[int, ...] = ()


def run_function(graph: CallGraph, plan: ArenaPlan, calls: list[CallTarget], *, head: str,
                 argument: Callable[[str], str], sources: dict[int, str] | None = None) -> str:
    """A run function (`head` opens it): arena pointers named by role and offset, then one call per
    kernel of `graph`, each after a comment naming its source layer (`sources`, by call index), op
    and shapes. `argument` spells a tensor name as a C argument. Static and dynamic bundles both
    emit their call sequences through it."""
    lines = [head + " {"]
    out_name = graph.outputs[0].name
    for call in graph.calls:
        for out in call.outputs:
            if out != out_name:
                over = plan.aliases.get(out)
                role = f"activation, in place over {c_identifier(over)}" if over else "activation"
                lines.append(arena_pointer(out, graph.tensors[out], plan.offsets[out], role))
    for call, callee in zip(graph.calls, calls):
        args = [argument(a) for a in call.args] + [argument(o) for o in call.outputs]
        for scratch_name, dtype, _ in callee.signature.scratch:
            key = f"{call.index}:{scratch_name}"
            args.append(f"({c_type(dtype)} *)(arena + {plan.offsets[key]}) /* scratch */")
        args += [str(v) for v in callee.extra]
        lines.append("")
        lines.append("  " + layer_comment(call.index, call.kernel, graph, call.args, call.outputs,
                                           (sources or {}).get(call.index)))
        lines.append(f"  TVMNAS_KERNEL_MARK({call.index});")
        lines.append(f"  {callee.function}({', '.join(args)});")
    if not any(graph.inputs[0].name in call.args for call in graph.calls):
        lines.append("  (void)input;")
    if not plan.offsets:
        lines.append("  (void)arena;")
    lines.append("  return 0;\n}\n")
    return "\n".join(lines)


# C the bundle ships beside the kernels, each with the test of whether a kernel's text calls it
SUPPORT_C = ((uses_simd, SIMD_C), (uses_softmax, SOFTMAX_C), (uses_layer_norm, LAYER_NORM_C))


def support_c(kernel_texts: Iterable[str]) -> list[str]:
    """The shipped C that these kernels call (SIMD micro-kernels, int8 softmax, int8 layer norm), in
    the order model.c holds it: the bundle writes it and a kernel's code-generator version hashes it."""
    texts = list(kernel_texts)
    return [code for calls, code in SUPPORT_C if any(calls(t) for t in texts)]


def model_source(graph: CallGraph, kernels: dict[str, EmittedKernel], plan: ArenaPlan,
                 sources: dict[int, str] | None = None) -> str:
    parts = [PRELUDE, *support_c(k.text for k in kernels.values())]
    parts += [kernels[name].text for name in sorted(kernels)]
    calls = [CallTarget(call.kernel, kernels[call.kernel].signature) for call in graph.calls]
    parts.append(run_function(graph, plan, calls, head=run_signature(graph),
                              argument=lambda name: call_argument(name, graph), sources=sources))
    return "\n".join(parts)


def makefile(cflags: list[str]) -> str:
    flags = " ".join(cflags)
    return f"""\
# Builds libmodel.a for the target. Link it with your firmware (and -lm).
# `make CC=... AR=... CFLAGS=...` overrides the defaults below.
ifeq ($(origin CC),default)
CC = arm-none-eabi-gcc
endif
ifeq ($(origin AR),default)
AR = arm-none-eabi-ar
endif
CFLAGS ?= {flags} -ffreestanding -ffunction-sections -fdata-sections -Wall -Wextra -Werror

libmodel.a: model.o model_weights.o
\t$(AR) rcs $@ $^

%.o: %.c model.h model_weights.h
\t$(CC) $(CFLAGS) -c $< -o $@

clean:
\trm -f *.o libmodel.a
"""


EXAMPLE = """\
/* Minimal use of the generated model: one static arena, weights stay in flash. */
#include "model.h"

#ifndef MODEL_INPUT_TYPE
#define MODEL_INPUT_TYPE float /* int8 models define it (and the input's scale and zero point) */
#endif
#ifndef MODEL_OUTPUT_TYPE
#define MODEL_OUTPUT_TYPE float
#endif

static uint8_t arena[MODEL_ARENA_SIZE] __attribute__((aligned(16)));
static MODEL_INPUT_TYPE input[MODEL_INPUT_SIZE];
static MODEL_OUTPUT_TYPE output[MODEL_OUTPUT_SIZE];

int classify(void) {
  /* ... fill `input` from the sensor ... */
  model_run(input, output, arena);
  int best = 0;
  for (int i = 1; i < MODEL_OUTPUT_SIZE; ++i) {
    if (output[i] > output[best]) best = i;
  }
  return best;
}
"""


def tensor_json(t: TensorInfo, quant=None) -> dict:
    """Name, shape and dtype; scale and zero_point for a quantized tensor."""
    entry = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
    if quant is not None:
        entry.update(scale=quant.scale, zero_point=quant.zero_point)
    return entry


def write_bundle(
    out_dir: Path,
    graph: CallGraph,
    kernels: dict[str, EmittedKernel],
    plan: ArenaPlan,
    target_name: str,
    cflags: list[str],
    sources: dict[int, str] | None = None,
    quantization: dict | None = None,
) -> dict:
    """Write every bundle file into `out_dir` (which must exist) and return the manifest dict
    without the flash figure (the caller measures it from the compiled objects).

    quantization: for an int8 model, {"input"/"output": QuantParams} of its int8 ends (from
    tvmnas.passes.io_quantization); None for a float32 model.
    """
    precision = "float32" if quantization is None else "int8"
    quantization = quantization or {}
    header, weights_c = weights_files([(f"model_{n}", graph.constants[n]) for n in sorted(graph.constants)])
    (out_dir / "model.h").write_text(model_header(graph, plan.arena_bytes, target_name, quantization, precision))
    (out_dir / "model_weights.h").write_text(header)
    (out_dir / "model_weights.c").write_text(weights_c)
    (out_dir / "model.c").write_text(model_source(graph, kernels, plan, sources))
    (out_dir / "Makefile").write_text(makefile(cflags))
    (out_dir / "examples").mkdir()
    (out_dir / "examples" / "classify.c").write_text(EXAMPLE)
    return {
        "target": target_name,
        "precision": precision,
        "inputs": [tensor_json(t, quantization.get("input")) for t in graph.inputs],
        "outputs": [tensor_json(t, quantization.get("output")) for t in graph.outputs],
        "arena_bytes": plan.arena_bytes,
        "arena_lower_bound_bytes": plan.lower_bound_bytes,
        "arena_unshared_bytes": plan.unshared_bytes,
        "weights_bytes": int(sum(a.nbytes for a in graph.constants.values())),
        "kernels": [
            {
                "index": c.index,
                "name": c.kernel,
                "source": (sources or {}).get(c.index),
                "inputs": [a for a in c.args if a in graph.tensors],
                "outputs": list(c.outputs),
                "output_shapes": [list(graph.tensors[o].shape) for o in c.outputs],
            }
            for c in graph.calls
        ],
    }


def write_manifest(out_dir: Path, manifest: dict) -> None:
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
