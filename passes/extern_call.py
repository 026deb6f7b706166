"""A PrimFunc that is one call of a C function the bundle ships (int8 softmax, int8 layer norm):
flat buffers passed as pointers, then scalar arguments; opaque, so FuseOps fuses nothing into it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
from tvm import tirx

OPAQUE = 8  # relax op_pattern kOpaque


def extern_call_primfunc(function: str, inputs: Sequence[tuple[str, tuple[int, ...], str]],
                         output: tuple[str, tuple[int, ...], str], scalars: Sequence[int]) -> tirx.PrimFunc:
    """`function(inputs..., output, scalars...)` over buffers given as (name, shape, dtype); the
    output is written, the inputs only read."""

    def param(name: str, shape: tuple[int, ...], dtype: str) -> str:
        return f"{name}: T.Buffer(({', '.join(str(int(d)) for d in shape)},), \"{dtype}\")"

    def pointer(name: str, shape: tuple[int, ...], dtype: str, access: int) -> str:
        return (f"T.tvm_access_ptr(T.type_annotation(\"{dtype}\"), {name}.data, 0, {int(np.prod(shape))}, "
                f"{access})")

    params = ", ".join(param(*b) for b in (*inputs, output))
    args = ", ".join([*(pointer(*b, 1) for b in inputs), pointer(*output, 2), *(str(int(s)) for s in scalars)])
    source = (
        "@T.prim_func(s_tir=True)\n"
        f"def main({params}):\n"
        "    T.func_attr({\"tirx.noalias\": True})\n"
        f"    T.evaluate(T.call_extern(\"void\", \"{function}\", {args}))\n"
    )
    return tvm.script.from_source(source).with_attr("op_pattern", OPAQUE)
