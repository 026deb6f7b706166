"""One C artifact for K sub-networks: weights stored once, one call sequence per configuration,
a run-time switch and the arena each configuration needs.

Each sub-network goes through the ordinary compiler front half (import, MCULowering, MCU
schedules, call graph) with its BatchNorms kept as per-channel scale/shift, so its conv and
linear weights are bit-identical slices of the super-network's tensors. `share_weights` maps
every such constant onto one stored shared array; `StridedWeightView` makes each kernel read its
slice in place (strided access). The per-configuration scale/shift vectors are stored per
configuration. Kernels that print identically are emitted once.

With precision "int8" each configuration is first quantized (tvmnas.dynamic.quantize: the shared
tensors once, its BatchNorm in its own weight scales and int32 biases) and compiled to integer
kernels; the int8 weights are then slices of the shared int8 tensors and are stored once the
same way, its biases, multipliers and shifts per configuration.
"""

from __future__ import annotations

import copy
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from torch import nn

from tvmnas.codegen.bundle import PRELUDE, CallTarget, EmittedKernel, makefile, run_function
from tvmnas.codegen.bundle import support_c, tensor_json, weights_files, write_manifest
from tvmnas.codegen.c_printer import C99, CLanguage, c_identifier, c_type, float_literal, language_for, print_kernel
from tvmnas.compiler import (
    CompiledModel,
    arena_buffers,
    check_budgets,
    check_optimize,
    kernel_sources,
    lower_model,
    object_flash_bytes,
)
from tvmnas.dynamic.kernel_merge import MergedKernel, merge_kernels
from tvmnas.dynamic.policy import POLICY_DECLARATIONS, ConfigInfo, policy_source
from tvmnas.dynamic.subnet import bn_as_affine
from tvmnas.errors import TvmnasError
from tvmnas.frontend import import_model_with_sources, import_source
from tvmnas.output_dir import staged_output
from tvmnas.passes import ArenaPlan, CallGraph, LowerTIRForC, plan_arena
from tvmnas.passes.int8_simd import UseSIMDKernels, uses_simd
from tvmnas.passes.quantize_to_integer import QuantParams
from tvmnas.passes.share_weights import SharedWeightLayout, StridedWeightView, WeightView, share_weights
from tvmnas.quantized import integer_model
from tvmnas.targets import Target

PLACEHOLDER = "tvmnas_kernel_to_name"
PRECISIONS = ("float32", "int8")


@dataclass
class ConfigProgram:
    """One configuration's compiled call sequence: graph, kernel name per call, arena plan."""

    graph: CallGraph
    call_kernels: list[str]                 # kernel text key of each call (KernelTable.calls), in order
    signatures: dict[str, EmittedKernel]    # by the graph's kernel name (for arena planning)
    plan: ArenaPlan
    sources: dict[int, str] = field(default_factory=dict)  # source layer name by call index
    quantization: dict[str, QuantParams] | None = None     # int8: the input's and output's scale and zero point
    pointers: set[str] = field(default_factory=set)        # weights passed as a pointer at their view's offset


def lower_subnetwork(net: nn.Module, input_shape: tuple[int, int, int],
                     optimize: str = "size") -> tuple[tvm.IRModule, CallGraph]:
    """Import a sub-network with its BatchNorms as scale/shift (not folded) and lower it."""
    return lower_subnetwork_with_sources(net, input_shape, optimize)[:2]


def lower_subnetwork_with_sources(net: nn.Module, input_shape: tuple[int, int, int], optimize: str = "size"
                                  ) -> tuple[tvm.IRModule, CallGraph, dict[int, str]]:
    """`lower_subnetwork`, plus each kernel call's source layer (torch module path) by call index."""
    unfolded = bn_as_affine(copy.deepcopy(net))
    mod, sources = import_model_with_sources(unfolded, (1, *input_shape))
    lowered, graph = lower_model(mod, optimize=optimize)
    return lowered, graph, kernel_sources(graph, sources)


def lower_int8_subnetwork(qdq, optimize: str = "size", simd_weights: list[np.ndarray] | None = None
                          ) -> tuple[tvm.IRModule, CallGraph, dict[int, str], dict[str, QuantParams]]:
    """A configuration's QDQ ONNX model (tvmnas.dynamic.quantize) as integer kernels, lowered: the
    lowered module, its call graph, the source layer of each call and its input / output quantization.

    simd_weights: on a core with the DSP extension, the int8 weights a SIMD micro-kernel may read
    (`contiguous_weights`: the micro-kernels read a weight through a plain pointer, so only a slice
    that is one contiguous block of its shared array); layers with other weights keep the portable
    scalar kernels, which read their slice through a strided view. None: scalar kernels throughout."""
    with tempfile.TemporaryDirectory(prefix="tvmnas-qdq-") as tmp:
        path = Path(tmp) / "quantized.onnx"
        path.write_bytes(qdq.SerializeToString())
        imported = import_source(path)
    mod, quantization = integer_model(imported.mod)
    if quantization is None or set(quantization) != {"input", "output"}:
        raise TvmnasError("an int8 configuration must take an int8 input and give an int8 output")
    if simd_weights is not None:
        allowed = list(simd_weights)
        mod = UseSIMDKernels(lambda w: any(w.shape == a.shape and np.array_equal(w, a) for a in allowed))(mod)
    lowered, graph = lower_model(mod, optimize=optimize, simd=False)
    return lowered, graph, kernel_sources(graph, imported.sources), quantization


def shared_name(name: str) -> str:
    return f"model_shared_{c_identifier(name)}"


def private_name(k: int, name: str) -> str:
    return f"model_c{k}_{c_identifier(name)}"


def canonical_parameters(text: str, params: list[str]) -> str:
    """Kernel text with its parameters renamed by position (arg0, arg1, ...): the same layer in two
    configurations then prints the same even though the graph names its tensors differently."""
    renames = {p: f"arg{i}" for i, p in enumerate(params)}
    return re.sub(r"\b[A-Za-z_]\w*\b", lambda m: renames.get(m.group(0), m.group(0)), text)


class KernelTable:
    """Emitted kernels by text; `finalize` merges those that differ only in integer literals."""

    def __init__(self, merge: bool = True, language: CLanguage = C99) -> None:
        self.merge = merge
        self.language = language
        self.order: list[str] = []                 # unique texts (placeholder name), first-seen order
        self.first_name: dict[str, str] = {}
        self._cache: dict[tuple, EmittedKernel] = {}
        self.functions: dict[str, str] = {}        # final name -> C text
        self.calls: dict[str, tuple[str, tuple[int, ...]]] = {}   # text -> (name, extra int args)

    def emit(self, k: int, func, kernel: str, views: dict[int, WeightView]) -> tuple[str, EmittedKernel]:
        """Print `func` reading `views`; returns its text key and the printed kernel."""
        key = (k, kernel, tuple(sorted(views.items())))
        if key not in self._cache:
            viewed = StridedWeightView(func, views)
            flat = LowerTIRForC()(tvm.IRModule({PLACEHOLDER: viewed}))
            # noclone: every configuration calls a shared kernel with other constant pointers, and
            # gcc's per-call-site copies would store the shared code once per configuration again
            text, sig = print_kernel(flat[PLACEHOLDER], PLACEHOLDER, noclone=True, language=self.language)
            self._cache[key] = EmittedKernel(canonical_parameters(text, sig.params), sig)
        emitted = self._cache[key]
        if emitted.text not in self.first_name:
            name = f"c{k}_{kernel}"
            while name in self.first_name.values():
                name += "_"
            self.first_name[emitted.text] = name
            self.order.append(emitted.text)
        return emitted.text, emitted

    def finalize(self) -> None:
        """Decide the emitted functions and each kernel text's call (name and extra arguments)."""
        names = [self.first_name[t] for t in self.order]
        if self.merge:
            groups = merge_kernels(self.order, names, PLACEHOLDER)
        else:
            groups = [MergedKernel(n, t.replace(f" {PLACEHOLDER}(", f" {n}(", 1), {t: ()})
                      for t, n in zip(self.order, names)]
        for group in groups:
            self.functions[group.name] = group.text
            for text, args in group.arguments.items():
                self.calls[text] = (group.name, args)


def build_programs(
    lowered: list[tuple[tvm.IRModule, CallGraph]], layout: SharedWeightLayout, table: KernelTable,
    sources: list[dict[int, str]] | None = None,
) -> list[ConfigProgram]:
    """Emit every configuration's kernels (reading shared weights through views) and plan its arena.
    sources: per configuration, the source layer name of each call (for the C comments)."""
    programs = []
    layers = sources or [{} for _ in lowered]
    for k, (mod, graph) in enumerate(lowered):
        names, signatures, pointers = [], {}, set()
        for call in graph.calls:
            func = mod[call.kernel]
            views = {}
            for i, a in enumerate(call.args):
                if (k, a) not in layout.views:
                    continue
                view = layout.views[(k, a)]
                if tuple(int(d) for d in func.params[i].ty.shape) == view.shape:
                    views[i] = view
                elif view.contiguous and int(np.prod(func.params[i].ty.shape)) == int(np.prod(view.shape)):
                    pointers.add(a)   # a micro-kernel's flat weight: a pointer into the shared array
                else:
                    raise TvmnasError(f"configuration {k}: kernel {call.kernel} reads weight {a} flat, "
                                      "but its slice of the shared array is not contiguous")
            name, emitted = table.emit(k, func, call.kernel, views)
            names.append(name)
            signatures.setdefault(call.kernel, emitted)
        plan = plan_arena(arena_buffers(graph, signatures))
        programs.append(ConfigProgram(graph, names, signatures, plan, layers[k], pointers=pointers))
    return programs


def _argument(k: int, name: str, program: ConfigProgram, layout: SharedWeightLayout) -> str:
    graph = program.graph
    if name == graph.inputs[0].name:
        return "input"
    if name == graph.outputs[0].name:
        return "output"
    if (k, name) in layout.views:
        view = layout.views[(k, name)]
        if name in program.pointers and view.elem_offset:
            return f"{shared_name(view.shared)} + {view.elem_offset}"
        return shared_name(view.shared)
    if (k, name) in layout.private:
        return private_name(k, name)
    return c_identifier(name)


def io_parameters(graph: CallGraph) -> str:
    """The parameter list of model_run: float32 or int8 input and output, then the arena."""
    (inp,), (out,) = graph.inputs, graph.outputs
    return f"const {c_type(inp.dtype)} *input, {c_type(out.dtype)} *output, uint8_t *arena"


def config_run_function(k: int, program: ConfigProgram, layout: SharedWeightLayout, table: KernelTable) -> str:
    """`model_run_c<k>`: configuration k's arena pointers and commented kernel calls."""
    graph = program.graph
    calls = []
    for call, text in zip(graph.calls, program.call_kernels):
        function, extra = table.calls[text]
        calls.append(CallTarget(function, program.signatures[call.kernel].signature, extra))
    return run_function(graph, program.plan, calls,
                        head=f"static int model_run_c{k}({io_parameters(graph)})",
                        argument=lambda name: _argument(k, name, program, layout), sources=program.sources)


def switch_source(programs: list[ConfigProgram]) -> str:
    """The configuration switch, per-configuration arena sizes and the dispatching model_run (int8:
    and each configuration's output scale and zero point)."""
    n = len(programs)
    runs = ", ".join(f"model_run_c{k}" for k in range(n))
    sizes = ", ".join(f"{max(p.plan.arena_bytes, 16)}u" for p in programs)
    params = io_parameters(programs[0].graph)
    return f"""\
typedef int (*model_run_fn)({params});
static const model_run_fn model_runs[MODEL_NUM_CONFIGS] = {{{runs}}};
static const uint32_t model_arena_sizes[MODEL_NUM_CONFIGS] = {{{sizes}}};
static int model_config = 0;

int model_set_config(int k) {{
  if (k < 0 || k >= MODEL_NUM_CONFIGS) return -1;
  model_config = k;
  return 0;
}}

int model_get_config(void) {{ return model_config; }}

size_t model_arena_size(int k) {{
  return (k >= 0 && k < MODEL_NUM_CONFIGS) ? (size_t)model_arena_sizes[k] : 0u;
}}

int model_run({params}) {{
  return model_runs[model_config](input, output, arena);
}}
""" + output_quantization_source(programs)


def output_quantization_source(programs: list[ConfigProgram]) -> str:
    """int8 bundles: model_output_scale(k) and model_output_zero_point(k), each configuration's own
    (its activations are calibrated on their own); nothing for float32."""
    if programs[0].quantization is None:
        return ""
    scales = ", ".join(float_literal(p.quantization["output"].scale) for p in programs)
    zps = ", ".join(str(int(p.quantization["output"].zero_point)) for p in programs)
    return f"""
static const float model_output_scales[MODEL_NUM_CONFIGS] = {{{scales}}};
static const int32_t model_output_zero_points[MODEL_NUM_CONFIGS] = {{{zps}}};

float model_output_scale(int k) {{ return (k >= 0 && k < MODEL_NUM_CONFIGS) ? model_output_scales[k] : 0.0f; }}

int32_t model_output_zero_point(int k) {{
  return (k >= 0 && k < MODEL_NUM_CONFIGS) ? model_output_zero_points[k] : 0;
}}
"""


def dynamic_header(programs: list[ConfigProgram], target: str) -> str:
    """model.h of a dynamic bundle: the single-model API plus the configuration switch."""
    graph = programs[0].graph
    (inp,), (out,) = graph.inputs, graph.outputs
    arena = max(max(p.plan.arena_bytes for p in programs), 16)
    quant = programs[0].quantization
    if quant is None:
        io_note = "Input: MODEL_INPUT_SIZE floats (NCHW); output:\n * MODEL_OUTPUT_SIZE floats."
        macros = declarations = ""
    else:
        io_note = ("int8 (integer-only kernels): quantize the input as\n"
                   " * q = clamp(round(x / MODEL_INPUT_SCALE) + MODEL_INPUT_ZERO_POINT, -128, 127), the same for every\n"
                   " * configuration; read configuration k's output as\n"
                   " * model_output_scale(k) * (q - model_output_zero_point(k)) (each calibrated on its own).")
        macros = (f"#define MODEL_INPUT_TYPE {c_type(inp.dtype)}\n#define MODEL_OUTPUT_TYPE {c_type(out.dtype)}\n"
                  f"#define MODEL_INPUT_SCALE {float_literal(quant['input'].scale)}\n"
                  f"#define MODEL_INPUT_ZERO_POINT ({int(quant['input'].zero_point)})\n")
        declarations = "float model_output_scale(int k);\nint32_t model_output_zero_point(int k);\n"
    return f"""\
/* tvmnas generated dynamic model API (target {target}, precision {"float32" if quant is None else "int8"}):
 * {len(programs)} configurations of one weight-shared network in one artifact. Weights are stored once;
 * each configuration has its own call sequence.
 *
 * model_set_config(k) selects configuration k (0 = the default; returns -1 if k is out of range)
 * and takes effect at the next model_run(). model_arena_size(k) is the arena configuration k
 * needs (at most MODEL_ARENA_SIZE): a smaller configuration may be given a smaller arena and the
 * rest of the SRAM used for other work. {io_note}
 * Not reentrant across configurations (the selection is global).
 */
#ifndef MODEL_H
#define MODEL_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_INPUT_SIZE {inp.elems}
#define MODEL_OUTPUT_SIZE {out.elems}
#define MODEL_ARENA_SIZE {arena}
#define MODEL_NUM_CONFIGS {len(programs)}
{macros}
#ifdef __cplusplus
extern "C" {{
#endif

int model_run({io_parameters(graph)});
int model_set_config(int k);
int model_get_config(void);
size_t model_arena_size(int k);
{declarations}{POLICY_DECLARATIONS}
#ifdef __cplusplus
}}
#endif

#endif /* MODEL_H */
"""


def dynamic_weights(layout: SharedWeightLayout) -> list[tuple[str, np.ndarray]]:
    """The weight arrays of a dynamic bundle: shared arrays once, then each configuration's own."""
    arrays = [(shared_name(n), a) for n, a in sorted(layout.arrays.items())]
    return arrays + [(private_name(k, n), a) for (k, n), a in sorted(layout.private.items())]


EXAMPLE = """\
/* Switch configurations at run time: pick by budget, give a smaller configuration a smaller arena. */
#include "model.h"

static uint8_t sram[MODEL_ARENA_SIZE] __attribute__((aligned(16)));
static {input_type} input[MODEL_INPUT_SIZE];
static {output_type} output[MODEL_OUTPUT_SIZE];

int classify(uint32_t cycle_budget, size_t free_sram) {{
  int k = model_pick_config(cycle_budget, free_sram < sizeof sram ? free_sram : sizeof sram);
  if (k < 0 || model_set_config(k) != 0) return -1;
  /* sram[model_arena_size(k) .. MODEL_ARENA_SIZE) stays free for other work during this call. */
  model_run(input, output, sram);
  int best = 0;
  for (int i = 1; i < MODEL_OUTPUT_SIZE; ++i) {{
    if (output[i] > output[best]) best = i;
  }}
  return best;
}}
"""


def example_source(graph: CallGraph) -> str:
    """examples/switch.c for the bundle's input and output types (int8 output scales are positive,
    so the largest int8 value is the most likely class, as for float)."""
    (inp,), (out,) = graph.inputs, graph.outputs
    return EXAMPLE.format(input_type=c_type(inp.dtype), output_type=c_type(out.dtype))


def model_source(programs: list[ConfigProgram], layout: SharedWeightLayout, table: KernelTable,
                 infos: list[ConfigInfo]) -> str:
    functions = [table.functions[name] for name in sorted(table.functions)]
    parts = [PRELUDE, *support_c(functions), *functions]
    parts += [config_run_function(k, p, layout, table) for k, p in enumerate(programs)]
    parts.append(switch_source(programs))
    parts.append(policy_source(infos))
    return "\n".join(parts)


def _check_same_io(programs: list[ConfigProgram]) -> None:
    first = programs[0].graph
    for k, p in enumerate(programs):
        g = p.graph
        if p.quantization is not None and p.quantization["input"] != programs[0].quantization["input"]:
            raise TvmnasError(f"configuration {k}: input quantization {p.quantization['input']} differs from "
                              f"configuration 0's {programs[0].quantization['input']} (calibrate all on the same samples)")
        if len(g.inputs) != 1 or len(g.outputs) != 1:
            raise TvmnasError(f"configuration {k}: one input and one output are supported, got "
                              f"{len(g.inputs)} and {len(g.outputs)}")
        if (g.inputs[0].shape, g.outputs[0].shape) != (first.inputs[0].shape, first.outputs[0].shape):
            raise TvmnasError(f"configuration {k}: input/output shapes {g.inputs[0].shape}/{g.outputs[0].shape} "
                              f"differ from configuration 0's {first.inputs[0].shape}/{first.outputs[0].shape}")


INT8_COST_UNIT = "estimated cycles (int8 cost surrogate over the bundle's kernels)"


def int8_cycle_estimates(lowered: list[tuple[tvm.IRModule, CallGraph]], target: Target) -> list[float] | None:
    """Each configuration's estimated cycles from the target's int8 cost surrogate over its kernels as
    the bundle builds them (the selection priced float32 kernels); None where no int8 surrogate is
    shipped for the target."""
    from tvmnas.cost.surrogate import load_surrogate
    from tvmnas.errors import CostModelError
    from tvmnas.passes import extract_kernel_features

    try:
        surrogate = load_surrogate(target.name, "int8")
    except CostModelError:
        return None
    estimates = []
    for mod, graph in lowered:
        features = extract_kernel_features(mod)
        estimates.append(float(np.sum(surrogate.predict([features[c.kernel] for c in graph.calls]))))
    return estimates


def check_precision(precision: str, calibration) -> None:
    """One clear error for a precision other than float32 / int8, or int8 without calibration data."""
    if precision not in PRECISIONS:
        raise TvmnasError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}",
                          settings=("precision",))
    if precision == "int8" and calibration is None:
        raise TvmnasError("precision int8 needs calibration data: float input samples, N first",
                          settings=("precision", "calibration"))
    if precision == "float32" and calibration is not None:
        raise TvmnasError("calibration data is only used with precision int8", settings=("calibration", "precision"))


def compile_dynamic(
    subnets: list[nn.Module],
    shared: dict[str, np.ndarray],
    input_shape: tuple[int, int, int],
    target: Target,
    out_dir: Path,
    *,
    accuracies: list[float] | None = None,
    cycles: list[int] | None = None,
    extra_manifest: dict | None = None,
    ignore_budget: bool = False,
    merge: bool = True,
    optimize: str = "size",
    precision: str = "float32",
    calibration: np.ndarray | str | Path | None = None,
    simd: bool | None = None,
) -> CompiledModel:
    """Compile K sub-networks into one switchable C bundle in `out_dir` (atomic, like compile_model).

    shared: the super-network tensors every sub-network's weights are slices of.
    accuracies / cycles: per configuration, for the run-time policy table (held-out accuracy,
    estimated cycles); missing ones are 0. An int8 bundle for a target with a shipped int8 cost
    surrogate takes its cycles from that surrogate over its own kernels instead (manifest cost_unit). merge: emit kernels that differ only in integer
    literals as one function (False keeps one function per configuration and layer).
    optimize: "size" (default: rolled windows, inline padding; most layers of the K configurations
    then share one function) or "speed" (each configuration's kernels as `tvmnas compile` builds them).
    precision: "float32" (default) or "int8": the shared tensors quantized once, each configuration's
    BatchNorm and activation scales (calibrated on `calibration`, float input samples N first, or a
    .npy of them) folded into its own multipliers and int32 biases (tvmnas.dynamic.quantize); the
    bundle's input and output are int8, each configuration's output scale in the manifest.
    simd (int8): SIMD micro-kernels where a layer's weight slice is contiguous in its shared array;
    None (default) where the target has the DSP extension, False for scalar kernels anywhere.
    """
    if not subnets:
        raise TvmnasError("a dynamic bundle needs at least one sub-network")
    check_optimize(optimize)
    check_precision(precision, calibration)
    out_dir = Path(out_dir)
    quantization: list[dict[str, QuantParams] | None] = [None] * len(subnets)
    if precision == "int8":
        from tvmnas.dynamic.quantize import check_calibration, contiguous_weights, quantize_shared, quantize_subnetwork
        from tvmnas.quant.quantize import load_calibration

        samples = check_calibration(load_calibration(calibration), input_shape)
        quantized = quantize_shared(shared)
        use_simd = target.dsp if simd is None else simd and target.dsp
        simd_weights = contiguous_weights(subnets, shared, quantized) if use_simd else [None] * len(subnets)
        imported, quantization = [], []
        for net, allowed in zip(subnets, simd_weights):
            qdq = quantize_subnetwork(net, shared, quantized, input_shape, samples)
            mod, graph, names, quant = lower_int8_subnetwork(qdq, optimize, allowed)
            imported.append((mod, graph, names))
            quantization.append(quant)
        shared = quantized.values
    else:
        imported = [lower_subnetwork_with_sources(net, input_shape, optimize) for net in subnets]
    lowered = [(mod, graph) for mod, graph, _ in imported]
    layout = share_weights([g.constants for _, g in lowered], shared)
    table = KernelTable(merge, language_for(target))
    programs = build_programs(lowered, layout, table, [names for _, _, names in imported])
    for program, quant in zip(programs, quantization):
        program.quantization = quant
    table.finalize()
    _check_same_io(programs)
    n = len(programs)
    accuracies = list(accuracies or [0.0] * n)
    int8_cycles = int8_cycle_estimates(lowered, target) if precision == "int8" else None
    cycles = list(int8_cycles or cycles or [0] * n)
    infos = [ConfigInfo(accuracies[k], int(cycles[k]), programs[k].plan.arena_bytes) for k in range(n)]

    with staged_output(out_dir, "bundle") as staging:
        header, weights_c = weights_files(dynamic_weights(layout))
        (staging / "model.h").write_text(dynamic_header(programs, target.name))
        (staging / "model_weights.h").write_text(header)
        (staging / "model_weights.c").write_text(weights_c)
        (staging / "model.c").write_text(model_source(programs, layout, table, infos))
        (staging / "Makefile").write_text(makefile([*target.cflags, *target.opt_flags]))
        (staging / "examples").mkdir()
        (staging / "examples" / "switch.c").write_text(example_source(programs[0].graph))
        manifest = dynamic_manifest(programs, layout, table, infos, target.name)
        manifest["optimize"] = optimize
        manifest["precision"] = precision
        if precision == "int8":
            simd_used = any(uses_simd(text) for text in table.functions.values())
            manifest["int8_kernels"] = "simd" if simd_used else "scalar"
        manifest.update(extra_manifest or {})
        if int8_cycles is not None:
            manifest["cost_unit"] = INT8_COST_UNIT
        manifest["flash_bytes"] = object_flash_bytes(staging, target)
        if not ignore_budget:
            check_budgets(manifest, target)
        write_manifest(staging, manifest)
    return CompiledModel(out_dir, manifest)


def dynamic_manifest(programs: list[ConfigProgram], layout: SharedWeightLayout, table: KernelTable,
                     infos: list[ConfigInfo], target: str) -> dict:
    """manifest.json of a dynamic bundle: the compile fields plus per-configuration figures."""
    first = programs[0].graph
    unshared = sum(int(sum(a.nbytes for a in p.graph.constants.values())) for p in programs)
    quant = programs[0].quantization or {}
    return {
        "target": target,
        # int8: the input's quantization is every configuration's; each output's is its configuration's
        "inputs": [tensor_json(t, quant.get("input")) for t in first.inputs],
        "outputs": [tensor_json(t) for t in first.outputs],
        "arena_bytes": max(p.plan.arena_bytes for p in programs),
        "num_configs": len(programs),
        "weights_bytes": layout.shared_bytes + layout.private_bytes,
        "shared_weights_bytes": layout.shared_bytes,
        "private_weights_bytes": layout.private_bytes,
        "separate_weights_bytes": unshared,
        "kernels": [{"name": name} for name in sorted(table.functions)],
        "configs": [
            {
                "index": k,
                "arena_bytes": p.plan.arena_bytes,
                "arena_lower_bound_bytes": p.plan.lower_bound_bytes,
                "accuracy": infos[k].accuracy,
                "cycles": infos[k].cycles,
                "weights_bytes": int(sum(a.nbytes for a in p.graph.constants.values())),
                **({} if p.quantization is None else
                   {"outputs": [tensor_json(t, p.quantization["output"]) for t in p.graph.outputs]}),
                "kernels": [
                    {"index": c.index, "name": table.calls[text][0], "outputs": list(c.outputs),
                     "output_shapes": [list(p.graph.tensors[o].shape) for o in c.outputs]}
                    for c, text in zip(p.graph.calls, p.call_kernels)
                ],
            }
            for k, p in enumerate(programs)
        ],
    }
