"""In-place analysis: which outputs of a lowered kernel may be written over which of its inputs.

The arena planner gives every tensor its own bytes while it is live, so a kernel's output never
shares memory with its inputs: at a residual add both addends and the sum are live at once. A
kernel may write its output over an input (the planner then gives both one buffer) when that
cannot change what it computes. `in_place_pairs` proves this from the flat TIR that is printed as
C (after LowerTIRForC, with every loop and every unrolled copy as the C has it), for an input `p`
and an output `o` of the same dtype and element count, by three checks:

1. every load of `p` sits in the value of a store to `o` at the same flat index
   (`o[e] = f(..., p[e], ...)`, the indices equal once let-bound names are substituted), so `p[i]`
   is only read by a store that writes `o[i]`, and C evaluates the value before it stores;
2. `o` is never loaded, and neither `p` nor `o` is used as a raw pointer (an extern call such as
   the SIMD micro-kernel, which the analysis cannot see into: a pass that writes such a call may
   declare the pairs its C kernel guarantees in DECLARED_ATTR, which are taken as stated);
3. no element of `o` is written twice: the flat indices of every store to `o`, evaluated over
   every iteration of the loops around it (all of them, conditions taken as true), are distinct.

Then each `p[i]` is read, at the latest, by the one store that overwrites it. An element-wise
kernel (add, activation, requantize, reshape) and a conv or dense kernel whose epilogue adds a
residual passes; a convolution over its own input does not (its window reads `p` at other
indices), nor does a depthwise convolution: its window reads `p[c, y+1, x]` after `o[c, y, x]`
would have overwritten `p[c, y, x]`, which the next output row still needs, so writing a depthwise
layer in place needs a kernel that buffers rows, not a different plan.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import tirx

INPLACE_ATTR = "tvmnas.in_place"  # PrimFunc attribute: [[input param, output param], ...]
# PrimFunc attribute set by the pass that writes a call of a C kernel: [[input, output], ...] pairs
# that kernel's C guarantees (each input element read only to compute the output element at the
# same index, each output element written once); the TIR cannot show it through raw pointers
DECLARED_ATTR = "tvmnas.in_place_declared"
MAX_ENUMERATED = 1 << 22  # store executions enumerated for check 3; more is refused


class _NotProven(Exception):
    """An access pattern the analysis does not cover: the pair is not used in place."""


def _int(value) -> int:
    if np.ndim(value) != 0:
        raise _NotProven("loop bound varies")
    return int(value)


class _Store:
    """A store to a buffer parameter: its flat index, the loops around it, the let bindings in scope."""

    def __init__(self, index, loops: tuple, env: dict) -> None:
        self.index, self.loops, self.env = index, loops, env
        self._grid: dict | None = None

    def grid(self) -> dict:
        """Loop variable -> its value at every iteration of the loops (numpy, broadcast to the grid)."""
        if self._grid is None:
            extents = [e for _, _, e in self.loops]
            if int(np.prod(extents, dtype=np.int64)) > MAX_ENUMERATED:
                raise _NotProven("too many stores to enumerate")
            axes = np.meshgrid(*[np.arange(m, m + e, dtype=np.int64) for _, m, e in self.loops], indexing="ij")
            self._grid = {v.__chandle__(): a.reshape(-1) for (v, _, _), a in zip(self.loops, axes)}
        return self._grid

    def size(self) -> int:
        return int(np.prod([e for _, _, e in self.loops], dtype=np.int64))

    def values(self, index) -> np.ndarray:
        """`index` (an expression in the store's scope) at every iteration."""
        return np.broadcast_to(_evaluate(index, self.grid(), self.env), (self.size(),))


_BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Min": np.minimum, "Max": np.maximum,
    "FloorDiv": np.floor_divide, "FloorMod": np.mod,
}


def _evaluate(expr, values: dict, env: dict):
    """An integer index expression over the loop grid (int64 numpy, TIR's floor division); let-bound
    names are looked up in `env`."""
    kind = type(expr).__name__
    if kind == "IntImm":
        return np.int64(expr.value)
    if kind == "Var":
        key = expr.__chandle__()
        if key in values:
            return values[key]
        if key in env:
            return _evaluate(env[key], values, env)
        raise _NotProven(f"index uses {expr.name}")
    if kind == "Cast" and str(expr.ty).startswith(("int", "uint")):
        value = _evaluate(expr.value, values, env)
        bits = int(str(expr.ty).lstrip("uint") or 32)
        if bits >= 64:
            return value
        if str(expr.ty).startswith("uint"):
            return np.mod(value, np.int64(1) << bits)
        half = np.int64(1) << (bits - 1)
        return np.mod(value + half, 2 * half) - half  # the narrowing conversion wraps
    if kind in _BINARY:
        return _BINARY[kind](_evaluate(expr.a, values, env), _evaluate(expr.b, values, env))
    raise _NotProven(f"index expression {kind}")


class _Accesses:
    """Every access to the function's buffer parameters, with its loop context."""

    def __init__(self, func: tirx.PrimFunc) -> None:
        self.params = list(func.params)
        # the body's buffers reach a parameter through buffer_data(var) with a var of the parameter's
        # name (not always the same object): matched by name, as the C printer matches them
        self.index_of = {p.name: i for i, p in enumerate(self.params)}
        self.stores: dict[int, list[_Store]] = {}  # output param -> its stores
        self.loads_in_store: dict[tuple[int, int], list[tuple[tirx.Expr, _Store]]] = {}  # (input, output) -> loads
        self.loose_loads: set[int] = set()  # params loaded outside the value of a store to a param
        self.raw: set[int] = set()          # params used as a pointer
        self.loaded: set[int] = set()
        self._visit(func.body, {}, ())

    def param_of(self, buffer) -> int | None:
        data = buffer.data
        var = data.args[0] if type(data).__name__ == "Call" else data  # buffer_data(param)
        index = self.index_of.get(var.name)
        offset = buffer.elem_offset
        if index is not None and not (type(offset).__name__ == "IntImm" and int(offset.value) == 0):
            self.raw.add(index)  # a view at an offset: its indices are not the parameter's
        return index

    def _visit(self, stmt, env: dict, loops: tuple) -> None:
        kind = type(stmt).__name__
        if kind == "SeqStmt":
            env = dict(env)
            for child in stmt.seq:
                if type(child).__name__ == "Bind":  # binds its var for the statements after it
                    self._expr(child.value, env, None)
                    env[child.var.__chandle__()] = child.value
                else:
                    self._visit(child, env, loops)
            return
        if kind == "Bind":
            self._expr(stmt.value, env, None)
            return
        if kind == "For":
            self._expr(stmt.min, env, None)
            self._expr(stmt.extent, env, None)
            loop = (stmt.loop_var, _int(_evaluate(stmt.min, {}, env)), _int(_evaluate(stmt.extent, {}, env)))
            self._visit(stmt.body, env, loops + (loop,))
            return
        if kind == "BufferStore":
            target = self.param_of(stmt.buffer)
            (index,) = stmt.indices
            self._expr(index, env, None)
            if target is not None:
                store = _Store(index, loops, env)
                self.stores.setdefault(target, []).append(store)
                self._expr(stmt.value, env, (target, store))
            else:
                self._expr(stmt.value, env, None)
            return
        if kind == "IfThenElse":
            self._expr(stmt.condition, env, None)
            self._visit(stmt.then_case, env, loops)
            if stmt.else_case is not None:
                self._visit(stmt.else_case, env, loops)
            return
        if kind == "Evaluate":
            self._expr(stmt.value, env, None)
            return
        if kind in ("DeclBuffer", "AllocBuffer"):
            body = getattr(stmt, "body", None)
            if body is not None:
                self._visit(body, env, loops)
            return
        raise _NotProven(f"statement {kind}")

    def _expr(self, expr, env: dict, store) -> None:
        """Record the loads in `expr`; `store` = (output param, its index) when `expr` is that store's value."""
        kind = type(expr).__name__
        if kind in ("BufferLoad", "TensorLoad"):
            source = self.param_of(expr.buffer if kind == "BufferLoad" else expr.source)
            for i in expr.indices:
                self._expr(i, env, None)
            if source is None:
                return
            self.loaded.add(source)
            if store is None:
                self.loose_loads.add(source)
            else:
                (index,) = expr.indices
                self.loads_in_store.setdefault((source, store[0]), []).append((index, store[1]))
            return
        if kind == "Var":
            i = self.index_of.get(expr.name)
            if i is not None:
                self.raw.add(i)
            return
        if kind in ("IntImm", "FloatImm", "StringImm"):
            return
        children = []
        for attr in ("a", "b", "value", "condition", "true_value", "false_value", "base", "stride", "body"):
            child = getattr(expr, attr, None)
            if isinstance(child, tirx.Expr):
                children.append(child)
        if kind == "Call":
            if str(getattr(expr.op, "name", "")).endswith("address_of"):  # a pointer into a buffer
                for a in expr.args:
                    if type(a).__name__ in ("BufferLoad", "TensorLoad"):
                        index = self.param_of(a.buffer if type(a).__name__ == "BufferLoad" else a.source)
                        if index is not None:
                            self.raw.add(index)
            children.extend(a for a in expr.args if isinstance(a, tirx.Expr))
        for child in children:
            self._expr(child, env, store)


def _written_once(stores: list[_Store], elems: int) -> bool:
    """True when the stores' flat indices, over every iteration of their loops, are distinct and in range."""
    if sum(s.size() for s in stores) > min(elems, MAX_ENUMERATED):
        return False
    flat = np.concatenate([s.values(s.index) for s in stores])
    return flat.size == np.unique(flat).size and bool(np.all((flat >= 0) & (flat < elems)))


def _elems(param) -> int:
    n = 1
    for d in param.ty.shape:
        n *= int(d)
    return n


def in_place_pairs(func: tirx.PrimFunc) -> list[tuple[int, int]]:
    """(input parameter, output parameter) positions of `func` where the output may be written over
    the input (see the module docstring for what is proven). Expects a PrimFunc after LowerTIRForC
    (flat buffers, one index per access); an access pattern it does not cover gives no pair."""
    names = [p.name for p in func.params]
    if len(set(names)) != len(names):  # one tensor passed twice: the C names its parameters apart by order
        return []
    if func.attrs is not None and DECLARED_ATTR in func.attrs:
        params = list(func.params)
        return [(int(p), int(o)) for p, o in func.attrs[DECLARED_ATTR]
                if str(params[int(p)].ty.dtype) == str(params[int(o)].ty.dtype)
                and _elems(params[int(p)]) == _elems(params[int(o)])]
    try:
        acc = _Accesses(func)
    except _NotProven:
        return []
    pairs = []
    outputs = sorted(acc.stores)
    for o in outputs:
        if o in acc.loaded or o in acc.raw:
            continue
        once = None
        for p, param in enumerate(acc.params):
            if p in acc.stores or p in acc.raw or p in acc.loose_loads or p not in acc.loaded:
                continue
            out = acc.params[o]
            if str(param.ty.dtype) != str(out.ty.dtype) or _elems(param) != _elems(out):
                continue
            if any(dst != o for (src, dst) in acc.loads_in_store if src == p):
                continue
            try:
                if once is None:
                    once = _written_once(acc.stores[o], _elems(out))
                same = all(index.same_as(store.index) or np.array_equal(store.values(index), store.values(store.index))
                           for index, store in acc.loads_in_store[(p, o)])
            except _NotProven:
                once, same = False, False
            if once and same:
                pairs.append((p, o))
    return pairs


@tvm.transform.module_pass(opt_level=0, name="AnnotateInPlace")
class AnnotateInPlace:
    """Module pass: attach `tvmnas.in_place` ([[input, output] parameter positions]) to every PrimFunc
    with at least one pair `in_place_pairs` proves safe.

    Expects: PrimFuncs after LowerTIRForC. Guarantees: only function attributes change; the arena
    planner (`plan_arena.in_place_aliases`) decides per call whether the input dies there.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        """Annotate (see the class docstring)."""
        out = tvm.IRModule(dict(mod.functions), attrs=mod.attrs)
        for gv, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc):
                pairs = in_place_pairs(func)
                if pairs:
                    out[gv] = func.with_attr(INPLACE_ATTR, [[int(p), int(o)] for p, o in pairs])
        return out
