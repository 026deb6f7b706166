"""Compile a network to a standalone C bundle for a Cortex-M target.

import -> import check (host run vs the source framework) -> MCULowering (BN folding, legalize, fuse) -> LowerTIRForC -> C kernels -> PlanArena
-> bundle files -> measured flash -> budget check. The output directory appears complete or not at all.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm import tirx

from tvmnas.codegen.bundle import EmittedKernel, write_bundle, write_manifest
from tvmnas.codegen.c_printer import C99, CLanguage, language_for, print_kernel
from tvmnas.errors import BudgetExceededError, BuildError, TvmnasError, UnsupportedModelError
from tvmnas.frontend import OUTPUT_NAMES_ATTR, ModelSource, SourceLayers, import_source
from tvmnas.frontend_rnn import KERNEL_HEADS as RECURRENT_HEADS
from tvmnas.import_check import check_import
from tvmnas.output_dir import staged_output
from tvmnas.passes import (
    ArenaBuffer,
    ArenaPlan,
    CallGraph,
    LowerTIRForC,
    MCULowering,
    ScheduleForMCU,
    UseSIMDKernels,
    extract_call_graph,
    graph_buffers,
    in_place_aliases,
    lower_bound,
    plan_arena,
)
from tvmnas.passes.in_place import in_place_pairs
from tvmnas.passes.call_graph import DTYPE_BYTES
from tvmnas.passes.int8_simd import uses_simd
from tvmnas.quantized import integer_model, quantize_for_compile
from tvmnas.targets import Target
from tvmnas.measure.toolchain import require_tools, run_tool


@dataclass
class CompiledModel:
    """What `compile_model` produced: where, and the manifest written there."""

    out_dir: Path
    manifest: dict


OPTIMIZE_GOALS = ("speed", "size")


def check_optimize(optimize: str) -> None:
    """One clear error unless `optimize` names a goal (callers check before any costly import)."""
    if optimize not in OPTIMIZE_GOALS:
        raise TvmnasError(f"optimize must be one of {', '.join(OPTIMIZE_GOALS)}, not {optimize!r}")


def lower_model(mod: tvm.IRModule, schedule: bool = True, optimize: str = "speed",
                simd: bool = False) -> tuple[tvm.IRModule, CallGraph]:
    """Run the Relax MCU pipeline (and the MCU schedules) and read back the kernel call sequence.

    optimize: "speed" (unrolled windows, padded row bands where they fit the arena bound) or
    "size" (see `schedule_for_size`).
    simd: int8 conv / dense kernels call the SIMD micro-kernel (cores with the DSP extension:
    the target descriptor's "dsp"; see passes/int8_simd.py).
    """
    check_optimize(optimize)
    if simd:
        mod = UseSIMDKernels()(mod)
    lowered = MCULowering()(mod)
    graph = extract_call_graph(lowered)
    if schedule:
        lowered = schedule_for_size(lowered) if optimize == "size" else schedule_within_bound(lowered, graph)
    return lowered, graph


def schedule_for_size(lowered: tvm.IRModule) -> tvm.IRModule:
    """ScheduleForMCU for code size: register tiles and fused epilogues kept, kernel windows rolled,
    padding computed inline (no scratch, so the arena stays at the live-tensor bound). A 5x5
    depthwise kernel then compiles to about 2 KB instead of up to 40 KB, at some speed; layers that
    differ only in sizes print alike up to integer literals, which dynamic bundles merge."""
    return ScheduleForMCU(inline_padding=True, unroll_window=False)(lowered)


def schedule_within_bound(lowered: tvm.IRModule, graph: CallGraph) -> tvm.IRModule:
    """ScheduleForMCU everywhere, except that a kernel whose padded-row scratch would lift the arena
    above the live-tensor bound computes its padding inline instead (no scratch, a little slower)."""
    scheduled = ScheduleForMCU()(lowered)
    kernels = emit_kernels(scheduled, graph)
    buffers = arena_buffers(graph, kernels)
    tensors = [b for b in buffers if not b.is_scratch]
    bound = lower_bound(tensors)
    over = set()
    for call in graph.calls:
        scratch = sum(b.nbytes for b in buffers if b.is_scratch and b.first == call.index)
        live = lower_bound([b for b in tensors if b.first <= call.index <= b.last])
        if scratch and live + scratch > bound:
            over.add(call.kernel)
    if not over:
        return scheduled
    # inline padding applied on top of the scheduled kernel: its register tiles and unrolled
    # windows stay, the padded-row scratch is computed inline
    tight = ScheduleForMCU(inline_padding=True)(
        tvm.IRModule({gv: f for gv, f in scheduled.functions.items() if gv.name_hint in over})
    )
    for gv, func in tight.functions.items():
        scheduled[gv.name_hint] = func
    return scheduled


def emit_kernels(lowered: tvm.IRModule, graph: CallGraph, in_place: bool = False,
                 shared: dict[str, set[int]] | None = None, language: CLanguage = C99) -> dict[str, EmittedKernel]:
    """Lower every called PrimFunc to flat TIR and print it as C.

    in_place: also prove which kernels may write an output over an input (`in_place_pairs`).
    shared: kernel -> parameter positions printed without `restrict` (a call passes them one buffer).
    language: the target's C tables (`c_printer.language_for`).
    """
    used = sorted({c.kernel for c in graph.calls})
    prims = tvm.IRModule({gv: f for gv, f in lowered.functions.items() if gv.name_hint in used})
    flat = LowerTIRForC()(prims)
    kernels = {}
    for gv, func in flat.functions.items():
        if isinstance(func, tirx.PrimFunc):
            text, sig = print_kernel(func, gv.name_hint, shared=frozenset((shared or {}).get(gv.name_hint, ())),
                                     language=language)
            pairs = tuple(in_place_pairs(func)) if in_place else ()
            kernels[gv.name_hint] = EmittedKernel(text, sig, pairs)
    return kernels


def kernel_scratch(kernels: dict[str, EmittedKernel]) -> dict[str, list[tuple[str, int]]]:
    """(name, bytes) of each kernel's arena scratch."""
    return {
        name: [(buf, elems * DTYPE_BYTES[dtype]) for buf, dtype, elems in k.signature.scratch]
        for name, k in kernels.items()
    }


def arena_buffers(graph: CallGraph, kernels: dict[str, EmittedKernel],
                  aliases: dict[str, str] | None = None) -> list[ArenaBuffer]:
    """Lifetimes of every intermediate tensor (producer to last reader) and kernel scratch;
    tensors written in place (`aliases`) share their buffer."""
    return graph_buffers(graph, kernel_scratch(kernels), aliases)


@dataclass(frozen=True)
class PlannedArena:
    """The arena plan, with the live-bytes bound of the same kernels had nothing run in place."""

    plan: ArenaPlan
    lower_bound_without_in_place_bytes: int


def plan_model_arena(lowered: tvm.IRModule, graph: CallGraph, kernels: dict[str, EmittedKernel],
                     in_place: bool = True, language: CLanguage = C99) -> tuple[PlannedArena, dict[str, EmittedKernel]]:
    """Plan the arena, letting kernels write over a dying input where `emit_kernels(in_place=True)`
    proved it safe (`in_place_aliases`); kernels that a call runs in place are printed again
    without `restrict` on the two parameters that then share memory."""
    without = lower_bound(arena_buffers(graph, kernels))
    aliases = in_place_aliases(graph, {n: list(k.in_place) for n, k in kernels.items()}) if in_place else {}
    plan = plan_arena(arena_buffers(graph, kernels, aliases), aliases=aliases)
    shared: dict[str, set[int]] = {}
    for call in graph.calls:
        for o, out in enumerate(call.outputs):
            if out in aliases:
                shared.setdefault(call.kernel, set()).update({call.args.index(aliases[out]), len(call.args) + o})
    if shared:
        reprinted = emit_kernels(lowered, graph, in_place=True, shared=shared, language=language)
        kernels = {n: reprinted[n] if n in shared else k for n, k in kernels.items()}
    return PlannedArena(plan, without), kernels


def check_single_input_output(graph: CallGraph) -> None:
    """Refuse, naming them, a model with several inputs or outputs: a bundle's model_run takes one
    input array and fills one output array."""
    for what, tensors in (("inputs", graph.inputs), ("outputs", graph.outputs)):
        if len(tensors) != 1:
            names = ", ".join(t.name for t in tensors) or "none"
            raise UnsupportedModelError(
                f"the model has {len(tensors)} {what} ({names}): only models with one input and one output are supported"
            )


KERNEL_HEADS = ("conv2d", "matmul", "max_pool2d", "avg_pool2d", "mean", "softmax", *RECURRENT_HEADS)


def kernel_sources(graph: CallGraph, sources: SourceLayers) -> dict[int, str]:
    """Source layer name per kernel call, matched on (heading operator, weight shape, output shape):
    the n-th such kernel gets the n-th such source layer, where both counts agree."""
    keyed: dict[tuple, list[int]] = {}
    for call in graph.calls:
        name = call.kernel[len("fused_"):] if call.kernel.startswith("fused_") else call.kernel
        head = next((h for h in KERNEL_HEADS if name.startswith(h)), None)
        if head is None:
            continue
        weight = None
        if head in ("conv2d", "matmul"):
            consts = [graph.constants[a] for a in call.args if a in graph.constants]
            weight = tuple(consts[0].shape) if consts else None
        keyed.setdefault((head, weight, graph.tensors[call.outputs[0]].shape), []).append(call.index)
    named: dict[int, str] = {}
    for key, calls in keyed.items():
        candidates = sources.get(key, [])
        if not candidates and key[0] == "matmul" and key[1]:  # a Linear's weight is stored transposed
            candidates = sources.get((key[0], key[1][::-1], key[2]), [])
        if len(candidates) == len(calls):
            named.update(zip(calls, candidates))
    return named


def object_flash_bytes(out_dir: Path, target: Target) -> int:
    """Flash taken by the bundle's own code and constants, compiled with the target's flags."""
    return sum(flash_bytes_by_file(out_dir, target).values())


def flash_bytes_by_file(out_dir: Path, target: Target) -> dict[str, int]:
    """Flash (.text, .rodata, .data) of model.c and model_weights.c, each compiled with the target's flags."""
    require_tools()
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for src in ("model.c", "model_weights.c"):
            obj = Path(tmp) / (src + ".o")
            cmd = ["arm-none-eabi-gcc", *target.cflags, *target.opt_flags, "-ffreestanding",
                   "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra", "-Werror",
                   "-c", str(out_dir / src), "-o", str(obj)]
            proc = run_tool(cmd)
            if proc.returncode != 0:
                first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
                raise BuildError(f"generated {src} does not compile for {target.name}: {first}")
            size = subprocess.run(["arm-none-eabi-size", "-A", str(obj)], capture_output=True, text=True, check=True)
            sizes[src] = sum(int(parts[1]) for parts in (line.split() for line in size.stdout.splitlines())
                             if len(parts) >= 2 and parts[0].startswith((".text", ".rodata", ".data"))
                             and parts[1].isdigit())
    return sizes


def compile_model(
    model: ModelSource,
    target: Target,
    out_dir: Path,
    *,
    input_shape: tuple[int, ...] | None = None,
    ignore_budget: bool = False,
    schedule: bool = True,
    optimize: str = "speed",
    quantize: str | None = None,
    calibration=None,
    simd: bool | None = None,
    import_check: bool = True,
    in_place: bool = True,
) -> CompiledModel:
    """Compile `model` for `target` into `out_dir`, untouched on error.

    out_dir may be absent, empty or an earlier tvmnas bundle (then replaced); any other folder, one
    holding the model or the current folder, is refused before any work (see tvmnas.output_dir).
    optimize: "speed" (default) or "size" (smaller kernels, slower; see `schedule_for_size`).
    quantize: "int8" quantizes a float model first (post-training, on `calibration`: an array
    or .npy path of input samples); the QDQ model is kept in the bundle as quantized.onnx.
    A QDQ model compiles to integer kernels without it.
    simd: int8 conv / dense kernels as SIMD micro-kernels; None (default) where the target has the
    DSP extension, False for the portable scalar kernels on any core.
    import_check: run the imported module on the host against the source framework first
    (`tvmnas.import_check`), so an importer fault is one error instead of a wrong bundle.
    in_place: let kernels write their output over an input that dies there where the flat TIR
    proves it safe (passes/in_place.py); False plans every tensor its own bytes.
    """
    out_dir = Path(out_dir)
    check_optimize(optimize)
    inputs = [Path(model)] if isinstance(model, (str, Path)) else []
    with staged_output(out_dir, "bundle", inputs=inputs) as staging:
        qdq = quantize_for_compile(model, quantize, calibration)
        with tempfile.TemporaryDirectory(prefix="tvmnas-qdq-") as tmp:
            if qdq is not None:
                model = Path(tmp) / "quantized.onnx"
                model.write_bytes(qdq.SerializeToString())
            imported = import_source(model, input_shape)
            if import_check:
                check_import(imported)  # the reference may read the (temporary) model file
        mod, sources = imported.mod, imported.sources
        mod, quantization = integer_model(mod)  # QDQ models: integer kernels, int8 input and output
        use_simd = target.dsp if simd is None else simd and target.dsp
        lowered, graph = lower_model(mod, schedule, optimize, simd=use_simd)
        check_single_input_output(graph)
        if mod.attrs is not None and OUTPUT_NAMES_ATTR in mod.attrs:
            graph = graph.with_output_names([str(n) for n in mod.attrs[OUTPUT_NAMES_ATTR]])
        language = language_for(target)
        kernels = emit_kernels(lowered, graph, in_place=in_place, language=language)
        planned, kernels = plan_model_arena(lowered, graph, kernels, in_place, language)
        plan = planned.plan
        manifest = write_bundle(staging, graph, kernels, plan, target.name, [*target.cflags, *target.opt_flags],
                                kernel_sources(graph, sources), quantization)
        manifest["optimize"] = optimize
        manifest["arena_lower_bound_without_in_place_bytes"] = planned.lower_bound_without_in_place_bytes
        manifest["in_place"] = {out: src for out, src in plan.aliases.items()}
        if quantization is not None:
            manifest["int8_kernels"] = "simd" if any(uses_simd(k.text) for k in kernels.values()) else "scalar"
        if qdq is not None:
            (staging / "quantized.onnx").write_bytes(qdq.SerializeToString())
        manifest["flash_bytes"] = object_flash_bytes(staging, target)
        if not ignore_budget:
            check_budgets(manifest, target)
        write_manifest(staging, manifest)
    return CompiledModel(out_dir, manifest)


def check_budgets(manifest: dict, target: Target) -> None:
    """Refuse a model whose flash or arena exceeds the board's budget, naming both numbers."""
    if manifest["flash_bytes"] > target.flash_bytes:
        raise BudgetExceededError("model flash (code + weights)", manifest["flash_bytes"], target.flash_bytes, target.name)
    if manifest["arena_bytes"] > target.sram_bytes:
        raise BudgetExceededError("activation arena", manifest["arena_bytes"], target.sram_bytes, target.name)
