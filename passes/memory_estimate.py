"""EstimateMemory: flash (weights + a code estimate) and peak SRAM (the arena plan) before any C is built."""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import tirx

from .call_graph import DTYPE_BYTES, extract_call_graph
from .lower_tir import LowerTIRForC
from .in_place import in_place_pairs
from .plan_arena import graph_buffers, in_place_aliases, plan_arena

# Code-size model (bytes of Thumb-2 at -O3): a fixed part (model_run, shared helpers) plus one
# figure per distinct kernel. Checked against compiled zoo models (m0_cnn, resnet8, lenet5,
# mobilenetv2_tiny) it is within a factor of 2 of the measured code; weights dominate flash.
CODE_BASE_BYTES = 2048
CODE_PER_KERNEL_BYTES = 1200
LOCAL_SCRATCH_MAX_ELEMS = 16  # the C emitter keeps scratch this small on the stack, not in the arena

ATTR_FLASH = "tvmnas.flash_bytes"
ATTR_SRAM = "tvmnas.peak_sram_bytes"


@dataclass(frozen=True)
class MemoryEstimate:
    """Flash = weights + code estimate; peak SRAM = planned arena (activations + kernel scratch).

    The model's input and output buffers belong to the caller and are not in the arena.
    """

    flash_bytes: int
    weights_bytes: int
    code_bytes: int
    peak_sram_bytes: int
    sram_lower_bound_bytes: int


def _scratch(func: tirx.PrimFunc) -> list[tuple[str, int]]:
    """(name, bytes) of the buffers a lowered kernel allocates itself and the emitter puts in the arena."""
    found: list[tuple[str, int]] = []

    def visit(stmt) -> None:
        kind = type(stmt).__name__
        if kind == "SeqStmt":
            for child in stmt.seq:
                visit(child)
            return
        if kind == "AllocBuffer":
            elems = 1
            for d in stmt.buffer.shape:
                elems *= int(d)
            if elems > LOCAL_SCRATCH_MAX_ELEMS:
                found.append((stmt.buffer.name, elems * DTYPE_BYTES.get(str(stmt.buffer.dtype), 4)))
        for attr in ("body", "then_case", "else_case"):
            child = getattr(stmt, attr, None)
            if child is not None:
                visit(child)

    visit(func.body)
    return found


def estimate_memory(mod: tvm.IRModule, func_name: str = "main", in_place: bool = True) -> MemoryEstimate:
    """Analysis: flash and peak SRAM of a module after MCULowering (optionally scheduled).

    Weights are the constants `func_name` passes to its kernels; the arena is planned with
    PlanArena's greedy planner over every intermediate tensor (producer to last reader) and every
    kernel's scratch (during its call), as the compiler plans it: with in_place, a kernel proven
    safe to (passes/in_place.py) writes its output over an input that dies there.
    """
    graph = extract_call_graph(mod, func_name)
    used = sorted({c.kernel for c in graph.calls})
    flat = LowerTIRForC()(tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint in used}))
    scratch = {gv.name_hint: _scratch(f) for gv, f in flat.functions.items() if isinstance(f, tirx.PrimFunc)}
    pairs = {gv.name_hint: in_place_pairs(f) for gv, f in flat.functions.items()
             if in_place and isinstance(f, tirx.PrimFunc)}
    aliases = in_place_aliases(graph, pairs)
    plan = plan_arena(graph_buffers(graph, scratch, aliases), aliases=aliases)
    weights = int(sum(a.nbytes for a in graph.constants.values()))
    code = CODE_BASE_BYTES + CODE_PER_KERNEL_BYTES * len(used)
    return MemoryEstimate(weights + code, weights, code, plan.arena_bytes, plan.lower_bound_bytes)


@tvm.transform.module_pass(opt_level=0, name="EstimateMemory")
class EstimateMemory:
    """Module pass: attach `tvmnas.flash_bytes` and `tvmnas.peak_sram_bytes` (ints) to the module.

    Expects: a module after MCULowering (`main` of call_tir bindings, weights as constants).
    Guarantees: only module attributes change. See estimate_memory for what the figures count.

    Parameters:
      func_name: the Relax function to estimate (default "main").
      in_place: plan kernels proven safe to run in place over a dying input (default True).
    """

    def __init__(self, func_name: str = "main", in_place: bool = True):
        self.func_name = func_name
        self.in_place = in_place

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Annotate (see the class docstring)."""
        est = estimate_memory(mod, self.func_name, self.in_place)
        out = mod.with_attr(ATTR_FLASH, tvm.runtime.convert(est.flash_bytes))
        return out.with_attr(ATTR_SRAM, tvm.runtime.convert(est.peak_sram_bytes))
