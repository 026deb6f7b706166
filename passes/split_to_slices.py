"""SplitToSlices: replace tuple-producing `split` by one `strided_slice` per used output."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, is_tuple_get_item, rewrite_call, wildcard

from .module_update import replace_functions


def _bounds(extent: int, indices_or_sections) -> list[tuple[int, int]]:
    if isinstance(indices_or_sections, (int, tvm.tirx.IntImm)):
        sections = int(indices_or_sections)
        step = extent // sections
        return [(i * step, (i + 1) * step) for i in range(sections)]
    cuts = [0] + [int(i) for i in indices_or_sections] + [extent]
    return list(zip(cuts[:-1], cuts[1:]))


@tvm.transform.module_pass(opt_level=0, name="SplitToSlices")
class SplitToSlices:
    """Rewrite `split(x)[i]` into `strided_slice(x, [axis], [begin_i], [end_i])`.

    Expects: static shapes. Guarantees: no kernel with a tuple output comes from `split`, so every
    kernel writes exactly one tensor (one arena buffer, one output pointer). Splits whose
    tuple is used other than by projection are left untouched.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        data = wildcard()
        split = is_op("relax.split")(data)
        pattern = is_tuple_get_item(split)

        def rewrite(expr: relax.Expr, m: dict) -> relax.Expr:
            call = m[split]
            shape = [int(d) for d in m[data].ty.shape.values]
            axis = int(call.attrs.axis) % len(shape)
            begin, end = _bounds(shape[axis], call.attrs.indices_or_sections)[int(expr.index)]
            return relax.op.strided_slice(m[data], axes=[axis], begin=[begin], end=[end])

        updates = {gv: rewrite_call(pattern, rewrite, f) for gv, f in mod.functions.items() if isinstance(f, relax.Function)}
        return relax.transform.DeadCodeElimination()(replace_functions(mod, updates))
