"""WrapNegativeIndices: give `take` the Python meaning of a negative constant index."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from .module_update import replace_functions


@tvm.transform.module_pass(opt_level=0, name="WrapNegativeIndices")
class WrapNegativeIndices:
    """Rewrite `take(x, c, axis)` with a constant `c` holding negative entries into
    `take(x, c % n, axis)`, n being the static extent of `x` along `axis`; likewise each constant
    index of `index_tensor(x, (c0, c1, ...))` (ci indexes axis i).

    Why: torch counts `x[:, -1]`, `x.select(1, -1)`, `x[:, [-1, 0]]` and `torch.take(x, tensor([-1]))`
    from the end, but TVM 0.27's exported-program importer passes the index to `relax.take`
    unchanged, and take's default "fast" mode reads out of bounds for it (no error, wrong numbers).
    Expects: a Relax module with weights bound as constants (as `from_exported_program` and
    `from_onnx` produce); an index reached through `astype` of a constant counts as constant.
    Guarantees: every "fast"-mode take and every index_tensor whose constant indices lie in
    [-n, n) has indices in [0, n), same dtype and shape; its result is what torch/numpy indexing
    gives. Takes in "clip", "wrap" or
    "nan" mode (negative indices are already defined there), non-constant indices, indices
    outside [-n, n) and dynamic extents are left untouched.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        data, indices = wildcard(), wildcard()
        take = is_op("relax.take")(data, indices)
        index_tensor = is_op("relax.index_tensor")(data, indices)

        def rewrite_take(expr: relax.Call, m: dict) -> relax.Expr:
            if expr.attrs.mode != "fast":
                return expr
            wrapped = _wrapped(m[indices], _extent(m[data], expr.attrs.axis))
            return expr if wrapped is None else relax.op.take(m[data], wrapped, expr.attrs.axis, expr.attrs.mode)

        def rewrite_index_tensor(expr: relax.Call, m: dict) -> relax.Expr:
            if not isinstance(m[indices], relax.Tuple):
                return expr
            fields = list(m[indices].fields)
            wrapped = [_wrapped(f, _extent(m[data], axis)) for axis, f in enumerate(fields)]
            if all(w is None for w in wrapped):
                return expr
            new = [f if w is None else w for f, w in zip(fields, wrapped)]
            return relax.op.index_tensor(m[data], relax.Tuple(new))

        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function):
                func = rewrite_call(take, rewrite_take, func)
                updates[gv] = rewrite_call(index_tensor, rewrite_index_tensor, func)
        return replace_functions(mod, updates)


def _wrapped(indices: relax.Expr, extent: int | None) -> relax.Expr | None:
    """`indices` with its negative entries counted from the end, or None where nothing is to be
    done (not a constant or astype of one, no negative entry, entries outside [-extent, extent))."""
    cast = None
    if isinstance(indices, relax.Call) and getattr(indices.op, "name", "") == "relax.astype":
        cast, indices = indices.attrs.dtype, indices.args[0]
    if extent is None or not isinstance(indices, tvm.ir.GenericConst):
        return None
    values = indices.value.numpy()
    if not np.issubdtype(values.dtype, np.integer) or not (values < 0).any():
        return None
    if (values < -extent).any() or (values >= extent).any():
        return None
    wrapped = relax.const(np.mod(values, extent).astype(values.dtype), str(values.dtype))
    return wrapped if cast is None else relax.op.astype(wrapped, cast)


def _extent(data: relax.Expr, axis) -> int | None:
    """Static length of `data` along `axis` (the flattened size when axis is None), else None."""
    shape = getattr(data.ty, "shape", None)
    if shape is None or not hasattr(shape, "values"):
        return None
    dims = list(shape.values)
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    dims = [int(d) for d in dims]
    if axis is None:
        return int(np.prod(dims))
    return dims[int(axis) % len(dims)]
