"""Integer-arithmetic features of an int8 kernel: what its requantizations, divisions, clamps and
branches cost as the C code executes them.

The float32 features (kernel_features) count every operation of a kernel once per iteration of
its loops. Two things that decide an int8 element-wise, mean or pooling kernel's cycles escape
them:
- branches: a fused concatenation is a chain of `if_then_else(c >= 24, A, if_then_else(c >= 12,
  B, C))` and each element runs one arm only. Which arm requantizes (and how deep in the chain it
  sits) is counted here over the iterations that take it (the conditions are evaluated on the
  grid of their loop variables);
- constants: `tvmnas_requantize(x, multiplier, shift)` is inlined with a constant shift, and gcc
  drops the rounding right shift when the shift is >= 0 (a left shift, or none), so a rescale with
  a negative shift costs more; a division by a constant becomes a multiply or shift, one by a
  loop-dependent count (average pooling over a padded border) an SDIV.
The counts are executed operations (trip counts times the fraction of iterations on each arm)
and the same per output element. Only kernels with an int8 parameter get them
(integer_kernel), so float32 kernels' features are unchanged.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import tirx

from .integer_kernels import REQUANTIZE_FUNCTION

# executed counts (see the module docstring); requant_round: shift < 0 (rounding right shift),
# requant_left: shift > 0, requant_var: shift read from memory (per-channel), conds: branch
# conditions evaluated, copies: values stored or chosen by a branch that are a plain (cast) load, idiv_var / idiv_const: integer
# divisions by a loop-dependent / constant non-power-of-two divisor; requant_nonneg_in: rescales
# of a value whose zero point is -128 (the real value is >= 0: the product's sign test in
# tvmnas_requantize always goes one way), requant_relu_out: rescales clamped at their output zero
# point (a ReLU: gcc skips the rounding of every value that clamps)
INTEGER_COUNTS = ("requant", "requant_round", "requant_left", "requant_var", "requant_nonneg_in",
                  "requant_relu_out", "conds", "copies", "clamps", "idiv_var", "idiv_const", "loads", "stores")
INTEGER_FEATURE_NAMES: tuple[str, ...] = (
    *(f"int8_log_{c}" for c in INTEGER_COUNTS),
    *(f"int8_per_out_{c}" for c in INTEGER_COUNTS),
)
# conditions over more grid points than this are taken as true half the time
MAX_GRID = 1 << 18

_BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "FloorDiv": np.floor_divide, "FloorMod": np.mod,
    "Min": np.minimum, "Max": np.maximum, "LT": np.less, "LE": np.less_equal, "GT": np.greater,
    "GE": np.greater_equal, "EQ": np.equal, "NE": np.not_equal, "And": np.logical_and, "Or": np.logical_or,
}


def integer_kernel(func: tirx.PrimFunc) -> bool:
    """Whether `func` is a kernel of an int8 build: one of its parameters is an int8 buffer."""
    for p in func.params:
        buf = p if hasattr(p, "dtype") and hasattr(p, "shape") else getattr(func, "buffer_map", {}).get(p)
        if buf is not None and str(buf.dtype) in ("int8", "uint8"):
            return True
    return False


def _vars(e, out: set[str]) -> None:
    kind = type(e).__name__
    if kind == "Var":
        out.add(e.name)
    elif kind in _BINARY or kind == "Div":
        _vars(e.a, out)
        _vars(e.b, out)
    elif kind in ("Not", "Cast"):
        _vars(e.a if kind == "Not" else e.value, out)
    elif kind == "Call":
        for a in e.args:
            _vars(a, out)
    elif kind not in ("IntImm",):
        out.add("?")  # loads and anything else: not a function of the loop variables alone


def _evaluate(e, env: dict[str, np.ndarray]) -> np.ndarray:
    """`e` on the grid `env` (loop variable name -> broadcastable array of its values)."""
    kind = type(e).__name__
    if kind == "IntImm":
        return np.int64(e.value)
    if kind == "Var":
        return env[e.name]
    if kind in _BINARY:
        return _BINARY[kind](_evaluate(e.a, env), _evaluate(e.b, env))
    if kind == "Div":
        a, b = _evaluate(e.a, env), _evaluate(e.b, env)
        return np.trunc(np.true_divide(a, b)).astype(np.int64)
    if kind == "Not":
        return np.logical_not(_evaluate(e.a, env))
    if kind == "Cast":
        return _evaluate(e.value, env)
    if kind == "Call" and e.op.name.rsplit(".", 1)[-1] == "likely":
        return _evaluate(e.args[0], env)
    raise ValueError(kind)


def _strip(e):
    while type(e).__name__ == "Cast":
        e = e.value
    return e


def _offset(e) -> tuple[object, int]:
    """(a, c) of `a + c` or `a - (-c)` with c an integer constant; (e, 0) otherwise."""
    kind = type(e).__name__
    if kind in ("Add", "Sub") and type(e.b).__name__ == "IntImm":
        return e.a, int(e.b.value) * (1 if kind == "Add" else -1)
    return e, 0


def _zero_point_is_min(arg, window: int) -> bool:
    """Whether a rescale's argument is `x - zp` with zp = -128 for an int8 x (TFLite's zero point of a
    non-negative tensor), optionally times a constant left shift, or an int32 sum of `window` such
    values less window * zp (the integer mean)."""
    arg = _strip(arg)
    if type(arg).__name__ == "Mul" and type(arg.b).__name__ == "IntImm":
        arg = _strip(arg.a)
    inner, c = _offset(arg)
    inner = _strip(inner)
    if type(inner).__name__ not in ("BufferLoad", "TensorLoad") or c <= 0 or c % 128:
        return False
    dtype = str(inner.buffer.dtype if hasattr(inner, "buffer") else getattr(inner, "ty", ""))
    return c == 128 if dtype == "int8" else dtype == "int32" and c == 128 * window


def _clamped_at_zero_point(e) -> bool:
    """`max(tvmnas_requantize(...) + zp, lo)` with lo == zp: the clamp of a ReLU at the output's zero point."""
    lo = _strip(e.b)
    inner, zp = _offset(_strip(e.a))
    inner = _strip(inner)
    return (type(lo).__name__ == "IntImm" and int(lo.value) == zp and type(inner).__name__ == "Call"
            and len(inner.args) == 4 and getattr(inner.args[0], "value", None) == REQUANTIZE_FUNCTION)


class _Walker:
    """Executed integer counts of one flat kernel (see INTEGER_COUNTS)."""

    def __init__(self, window: int = 1) -> None:
        self.window = window
        self.counts = dict.fromkeys(INTEGER_COUNTS, 0.0)
        self._fractions: dict[str, float] = {}

    def fraction(self, conds: tuple, loops: dict[str, int]) -> float:
        """Share of the grid of the conditions' loop variables on which every (condition, taken)
        holds; 0.5 per condition that is not a function of loop variables alone."""
        if not conds:
            return 1.0
        key = repr([(str(c), t) for c, t in conds]) + repr(sorted(loops.items()))
        if key in self._fractions:
            return self._fractions[key]
        names: set[str] = set()
        for c, _ in conds:
            _vars(c, names)
        size = math.prod(loops.get(n, 0) for n in names) if names else 1
        if "?" in names or any(n not in loops for n in names) or size > MAX_GRID:
            value = 0.5 ** len(conds)
        else:
            order = sorted(names)
            env = {n: np.arange(loops[n]).reshape([-1 if i == k else 1 for i in range(len(order))])
                   for k, n in enumerate(order)}
            mask = np.ones([loops[n] for n in order], dtype=bool)
            try:
                for c, taken in conds:
                    v = np.broadcast_to(_evaluate(c, env), mask.shape).astype(bool)
                    mask &= v if taken else ~v
                value = float(mask.mean())
            except (ValueError, ZeroDivisionError, FloatingPointError):
                value = 0.5 ** len(conds)
        self._fractions[key] = value
        return value

    def add(self, count: str, weight: float, conds: tuple, loops: dict[str, int]) -> None:
        self.counts[count] += weight * self.fraction(conds, loops)

    def expr(self, e, weight: float, conds: tuple, loops: dict[str, int]) -> None:
        kind = type(e).__name__
        if kind == "Call":
            op = e.op.name.rsplit(".", 1)[-1] if hasattr(e.op, "name") else ""
            if op == "if_then_else":
                self.branch(e.args[0], e.args[1], e.args[2], weight, conds, loops)
                return
            name = getattr(e.args[0], "value", None) if op in ("call_pure_extern", "call_extern") and e.args else None
            if name == REQUANTIZE_FUNCTION and len(e.args) == 4:
                self.add("requant", weight, conds, loops)
                if _zero_point_is_min(e.args[1], self.window):
                    self.add("requant_nonneg_in", weight, conds, loops)
                shift = e.args[3]
                if type(shift).__name__ != "IntImm":
                    self.add("requant_var", weight, conds, loops)
                elif int(shift.value) < 0:
                    self.add("requant_round", weight, conds, loops)
                elif int(shift.value) > 0:
                    self.add("requant_left", weight, conds, loops)
            for a in e.args:
                self.expr(a, weight, conds, loops)
            return
        if kind == "Select":
            self.branch(e.condition, e.true_value, e.false_value, weight, conds, loops)
            return
        if kind in ("BufferLoad", "TensorLoad"):
            self.add("loads", weight, conds, loops)
            for i in e.indices:
                self.expr(i, weight, conds, loops)
            return
        if kind in ("Min", "Max") and str(getattr(e, "ty", "")).startswith(("int", "uint")):
            self.add("clamps", weight, conds, loops)
            if kind == "Max" and _clamped_at_zero_point(e):
                self.add("requant_relu_out", weight, conds, loops)
        if kind in ("Div", "FloorDiv", "FloorMod") and str(getattr(e, "ty", "")).startswith(("int", "uint")):
            b = e.b
            if type(b).__name__ != "IntImm":
                self.add("idiv_var", weight, conds, loops)
            elif int(b.value) & (int(b.value) - 1):
                self.add("idiv_const", weight, conds, loops)
        if kind == "Cast":
            self.expr(e.value, weight, conds, loops)
        elif kind == "Not":
            self.expr(e.a, weight, conds, loops)
        elif hasattr(e, "a") and hasattr(e, "b"):
            self.expr(e.a, weight, conds, loops)
            self.expr(e.b, weight, conds, loops)

    def value(self, e, weight: float, conds: tuple, loops: dict[str, int]) -> None:
        """A value stored or chosen by a branch: a plain (cast) load of it is a copy."""
        inner = e
        while type(inner).__name__ == "Cast":
            inner = inner.value
        if type(inner).__name__ in ("BufferLoad", "TensorLoad"):
            self.add("copies", weight, conds, loops)
        self.expr(e, weight, conds, loops)

    def branch(self, cond, then, other, weight: float, conds: tuple, loops: dict[str, int]) -> None:
        self.add("conds", weight, conds, loops)
        self.expr(cond, weight, conds, loops)
        self.value(then, weight, conds + ((cond, True),), loops)
        self.value(other, weight, conds + ((cond, False),), loops)

    def stmt(self, s, weight: float, conds: tuple, loops: dict[str, int]) -> None:
        kind = type(s).__name__
        if kind == "SeqStmt":
            for child in s.seq:
                self.stmt(child, weight, conds, loops)
        elif kind == "For":
            trips = int(s.extent.value) if hasattr(s.extent, "value") else 1
            self.stmt(s.body, weight * trips, conds, {**loops, s.loop_var.name: trips})
        elif kind in ("BufferStore", "TensorStore"):
            self.add("stores", weight, conds, loops)
            for i in s.indices:
                self.expr(i, weight, conds, loops)
            self.value(s.value, weight, conds, loops)
        elif kind == "Bind":
            self.expr(s.value, weight, conds, loops)
        elif kind == "IfThenElse":
            self.add("conds", weight, conds, loops)
            self.expr(s.condition, weight, conds, loops)
            self.stmt(s.then_case, weight, conds + ((s.condition, True),), loops)
            if s.else_case is not None:
                self.stmt(s.else_case, weight, conds + ((s.condition, False),), loops)
        elif kind == "Evaluate":
            self.expr(s.value, weight, conds, loops)
        elif hasattr(s, "body"):
            self.stmt(s.body, weight, conds, loops)


def integer_counts(flat: tirx.PrimFunc, window: int = 1) -> dict[str, float]:
    """INTEGER_COUNTS executed by the flat kernel `flat` (as LowerTIRForC prints it); `window`: the
    values its main reduction sums per output (a mean's zero-point correction is window * zp)."""
    walker = _Walker(window)
    walker.stmt(flat.body, 1.0, (), {})
    return walker.counts


def integer_features(counts: dict[str, float], out_elems: float) -> dict[str, float]:
    """INTEGER_FEATURE_NAMES from executed counts and the kernel's output elements."""
    outs = max(float(out_elems), 1.0)
    return {**{f"int8_log_{c}": math.log1p(max(v, 0.0)) for c, v in counts.items()},
            **{f"int8_per_out_{c}": v / outs for c, v in counts.items()}}
