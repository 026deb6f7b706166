"""AnnotateCost: predicted cycles per kernel call and for the whole model, as IRModule attributes."""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import relax, tirx

from .kernel_features import kernel_features

ATTR_KERNEL = "tvmnas.predicted_cycles"          # on each PrimFunc: cycles of one call
ATTR_TOTAL = "tvmnas.predicted_cycles"           # on the module: sum over the calls of `main`
ATTR_CALLS = "tvmnas.predicted_call_cycles"      # on the module: per call of `main`, in order
ATTR_NOTE = "tvmnas.predicted_cycles_note"


def _called_kernels(mod: tvm.IRModule, func_name: str) -> list[str]:
    """Names of the PrimFuncs `func_name` calls through call_tir, in binding order (repeats kept)."""
    if func_name not in [gv.name_hint for gv in mod.get_global_vars()]:
        return []
    func = mod[func_name]
    if not isinstance(func, relax.Function):
        return []
    call_tir = tvm.ir.Op.get("relax.call_tir")
    names = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.same_as(call_tir):
                names.append(value.args[0].name_hint)
    return names


@tvm.transform.module_pass(opt_level=0, name="AnnotateCost")
class AnnotateCost:
    """Module pass: price every fused kernel with `predictor` and record the cycles on the module.

    Expects: a module after MCULowering (PrimFuncs per fused kernel, `main` calling them with
    call_tir); run ScheduleForMCU first if the predictor was fitted on scheduled kernels, as the
    shipped tvmnas surrogates are. PrimFuncs not called from `main` are still annotated.
    Guarantees: each PrimFunc gets attr `tvmnas.predicted_cycles` (float, one call); the module
    gets `tvmnas.predicted_cycles` (sum over the calls of `main`, repeats counted),
    `tvmnas.predicted_call_cycles` (one float per call, in order) and a note naming the predictor.
    Nothing else changes.

    Parameters:
      predictor: callable from a kernel feature dict (tvmnas.passes.kernel_features) to cycles,
        e.g. a tvmnas.cost CostSurrogate.
      func_name: the Relax function whose calls are summed (default "main").
      note: the text stored under `tvmnas.predicted_cycles_note`.
    """

    def __init__(self, predictor: Callable[[dict[str, float]], float], *, func_name: str = "main",
                 note: str = "predicted by a cost surrogate; cycles are a timing-table estimate"):
        self.predictor = predictor
        self.func_name = func_name
        self.note = note

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Annotate (see the class docstring)."""
        cycles: dict[str, float] = {}
        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc):
                value = float(self.predictor(kernel_features(func)))
                cycles[gv.name_hint] = value
                updates[gv] = func.with_attr(ATTR_KERNEL, tvm.runtime.convert(value))
        out = tvm.IRModule({gv: updates.get(gv, f) for gv, f in mod.functions.items()}, attrs=mod.attrs)
        calls = [cycles[name] for name in _called_kernels(mod, self.func_name) if name in cycles]
        if not calls and not _called_kernels(mod, self.func_name):
            calls = [cycles[n] for n in sorted(cycles)]
        out = out.with_attr(ATTR_TOTAL, tvm.runtime.convert(float(sum(calls))))
        out = out.with_attr(ATTR_CALLS, tvm.runtime.convert(calls))
        return out.with_attr(ATTR_NOTE, self.note)


def predicted_cycles(mod: tvm.IRModule) -> tuple[float, list[float]]:
    """(total, per-call cycles) that AnnotateCost attached to `mod`."""
    attrs = mod.attrs
    if attrs is None or ATTR_TOTAL not in attrs:
        raise KeyError("module has no tvmnas.predicted_cycles: run AnnotateCost first")
    return float(attrs[ATTR_TOTAL]), [float(c) for c in attrs[ATTR_CALLS]]
