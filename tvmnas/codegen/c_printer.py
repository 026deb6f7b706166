"""Print one lowered, flattened TIR PrimFunc as a plain C function taking raw pointers.

The input is what `tvmnas.passes.LowerTIRForC` produces: flat 1-D buffers, no blocks, no packed API.
Buffers the function allocates itself (scratch) become extra pointer parameters when they are
large (the arena planner places them) or local arrays when they are tiny (so gcc keeps them in
registers). Nothing from TVM's runtime is referenced; only <math.h> for transcendental calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tvmnas.errors import TargetDescriptorError, UnsupportedOperatorError

# Scratch buffers up to this many elements live on the stack as local arrays.
LOCAL_SCRATCH_MAX_ELEMS = 16


@dataclass(frozen=True)
class CLanguage:
    """The C a target's kernels are printed in: the spelling of each dtype, TIR binary operator and
    float32 math intrinsic, and the min/max helper suffix per dtype. A target selects one by name
    (its descriptor's "c_language"), so a back end with other intrinsics is a new table, not an edit
    of the printer (tinygrad's renderers: one language table per back end)."""

    name: str
    types: Mapping[str, str]
    binary_ops: Mapping[str, str]
    math_calls: Mapping[str, str]       # TIR intrinsic -> C, for float32
    min_max_suffix: Mapping[str, str]   # dtype -> suffix of the tvmnas_min*/tvmnas_max* helper

    def c_type(self, dtype: str) -> str:
        """C spelling of a TVM scalar dtype."""
        try:
            return self.types[str(dtype)]
        except KeyError:
            raise NotImplementedError(f"dtype {dtype} has no C type in the tvmnas emitter") from None


C99 = CLanguage(
    name="c99",
    types=MappingProxyType({
        "float32": "float", "float64": "double", "int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t",
        "int32": "int32_t", "int64": "int64_t", "uint32": "uint32_t", "bool": "int32_t",
    }),
    binary_ops=MappingProxyType({
        "Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "Mod": "%",
        "EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">=",
        "And": "&&", "Or": "||",
        "BitwiseAnd": "&", "BitwiseOr": "|", "BitwiseXor": "^", "LShift": "<<", "RShift": ">>",
    }),
    # float32 variants from libm
    math_calls=MappingProxyType({
        "exp": "expf", "log": "logf", "sqrt": "sqrtf", "rsqrt": "1.0f / sqrtf", "tanh": "tanhf", "fabs": "fabsf",
        "floor": "floorf", "ceil": "ceilf", "round": "nearbyintf", "nearbyint": "nearbyintf", "trunc": "truncf",
        "pow": "powf", "erf": "erff", "sigmoid": "tvmnas_sigmoidf",
    }),
    # the bundle PRELUDE's helpers: narrower integers widen to int32 exactly, int64 has its own
    # helper (through the int32 one it would be silently narrowed)
    min_max_suffix=MappingProxyType(
        {"float32": "f", "int8": "i", "int16": "i", "int32": "i", "uint8": "i", "bool": "i", "int64": "l"}),
)
"""Plain C99 with <stdint.h> and <math.h>: every target's language today."""

LANGUAGES: dict[str, CLanguage] = {C99.name: C99}


def language_for(target) -> CLanguage:
    """The C language a target's descriptor names ("c_language"); TargetDescriptorError if unknown."""
    try:
        return LANGUAGES[target.c_language]
    except KeyError:
        raise TargetDescriptorError(f"target {target.name}: c_language '{target.c_language}' is not one of "
                                    f"{sorted(LANGUAGES)}") from None


def c_identifier(name: str) -> str:
    """A stable C identifier from a source name (dots, slashes and other symbols become '_')."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    if not ident or ident[0].isdigit():
        ident = "_" + ident
    return ident


def c_type(dtype: str) -> str:
    """C spelling of a TVM scalar dtype in C99 (the bundle's API, weights and call sequence; kernels
    spell theirs through their target's CLanguage)."""
    return C99.c_type(dtype)


def dtype_of(node) -> str:
    """The scalar dtype of a TIR expression or variable, e.g. 'float32'."""
    return str(node.ty)


def float_literal(value: float, dtype: str = "float32") -> str:
    """An exact C literal for a float value (float32 gets the 'f' suffix)."""
    suffix = "f" if str(dtype) == "float32" else ""
    if math.isnan(value):
        return "(0.0f/0.0f)"
    if math.isinf(value):
        return ("-" if value < 0 else "") + ("HUGE_VALF" if suffix else "HUGE_VAL")
    text = "%.9g" % value if suffix else "%.17g" % value
    if "." not in text and "e" not in text and "n" not in text:
        text += ".0"
    return text + suffix


@dataclass
class KernelSignature:
    """What the call sequence needs to know about a printed kernel."""

    name: str
    params: list[str]                      # C names, in TIR parameter order
    param_dtypes: list[str]
    param_elems: list[int]
    written: set[str]                      # params the kernel stores to (outputs)
    scratch: list[tuple[str, str, int]] = field(default_factory=list)  # (name, dtype, elems) -> arena


class CPrinter:
    """Prints one PrimFunc; create one instance per function."""

    def __init__(self, func, name: str, restrict: bool = True, noclone: bool = False,
                 shared: frozenset[int] = frozenset(), language: CLanguage = C99) -> None:
        self.func = func
        self.name = name
        self.language = language
        self.restrict = " restrict" if restrict else ""
        self.shared = shared  # parameter positions that may share memory: printed without restrict
        self.noclone = noclone
        self.storage_names: dict[str, str] = {}  # buffer data-var name -> C name (buffers alias by name)
        # a kernel can take one tensor twice (concat(a, b, a)): its parameters then share a name, and
        # the k-th body data var of that name stands for the k-th of them
        self.repeated_params: dict[str, list[str]] = {}
        self.repeated_storage: dict[int, str] = {}  # data var object -> C name, for those
        self.var_names: dict[int, str] = {}      # scalar var object -> C name (loop vars can share names)
        self.taken: set[str] = set()
        self.locals_: list[str] = []
        self.scratch: list[tuple[str, str, int]] = []
        self.written: set[str] = set()
        self.lines: list[str] = []

    # ---- names -------------------------------------------------------------------------
    def _storage(self, buffer) -> str:
        return self._storage_of_data(buffer.data)

    def _storage_of_data(self, data) -> str:
        var = data.args[0] if type(data).__name__ == "Call" else data  # buffer_data(var)
        key = var.name
        if key in self.repeated_params:
            handle = var.__chandle__()
            if handle not in self.repeated_storage:
                self.repeated_storage[handle] = self.repeated_params[key].pop(0)
            return self.repeated_storage[handle]
        if key not in self.storage_names:
            self.storage_names[key] = self._fresh(key)
        return self.storage_names[key]

    def _var(self, var) -> str:
        key = var.__chandle__()
        if key not in self.var_names:
            self.var_names[key] = self._fresh(var.name)
        return self.var_names[key]

    def _fresh(self, name: str) -> str:
        base = c_identifier(name)
        unique, k = base, 0
        while unique in self.taken:
            k += 1
            unique = f"{base}_{k}"
        self.taken.add(unique)
        return unique

    def _storage_of_param(self, param) -> str:
        if param.name in self.storage_names:  # the same tensor passed again
            queue = self.repeated_params.setdefault(param.name, [self.storage_names[param.name]])
            queue.append(self._fresh(param.name))
            return queue[-1]
        self.storage_names[param.name] = self._fresh(param.name)
        return self.storage_names[param.name]

    # ---- expressions ---------------------------------------------------------------------
    def expr(self, e) -> str:
        kind = type(e).__name__
        if kind == "IntImm":
            if dtype_of(e) == "bool":
                return "1" if e.value else "0"
            return str(e.value) if dtype_of(e) != "int64" else f"INT64_C({e.value})"
        if kind == "FloatImm":
            return float_literal(e.value, dtype_of(e))
        if kind == "Var":
            return self._var(e)
        if kind in ("BufferLoad", "TensorLoad"):
            (index,) = e.indices
            source = e.buffer if kind == "BufferLoad" else e.source
            return f"{self._storage(source)}[{self.expr(index)}]"
        if kind in self.language.binary_ops:
            return f"({self.expr(e.a)} {self.language.binary_ops[kind]} {self.expr(e.b)})"
        if kind in ("Min", "Max"):
            return self._min_max(kind, e)
        if kind == "FloorDiv":
            return f"tvmnas_floordiv({self.expr(e.a)}, {self.expr(e.b)})"
        if kind == "FloorMod":
            return f"tvmnas_floormod({self.expr(e.a)}, {self.expr(e.b)})"
        if kind == "Not":
            return f"(!{self.expr(e.a)})"
        if kind == "Cast":
            return f"(({self.language.c_type(dtype_of(e))}){self.expr(e.value)})"
        if kind == "Select":
            return f"({self.expr(e.condition)} ? {self.expr(e.true_value)} : {self.expr(e.false_value)})"
        if kind == "Let":
            raise NotImplementedError("TIR Let expressions are not printed by the tvmnas C emitter")
        if kind == "Call":
            return self._call(e)
        raise NotImplementedError(f"TIR expression {kind} is not supported by the tvmnas C emitter")

    def _min_max(self, kind: str, e) -> str:
        a, b = self.expr(e.a), self.expr(e.b)
        dtype = dtype_of(e)
        if dtype not in self.language.min_max_suffix:
            raise NotImplementedError(f"{kind} on {dtype} is not supported by the tvmnas C emitter")
        suffix = self.language.min_max_suffix[dtype]
        return f"tvmnas_{kind.lower()}{suffix}({a}, {b})"

    def _call(self, e) -> str:
        full = e.op.name if hasattr(e.op, "name") else str(e.op)
        op = full.rsplit(".", 1)[-1]  # "prim.if_then_else" / "tirx.exp" -> short name
        if op in ("call_pure_extern", "call_extern"):
            fname = e.args[0].value
            return f"{fname}({', '.join(self.expr(a) for a in e.args[1:])})"
        if op == "tvm_access_ptr":  # (type, data, offset, extent, rw_mask): a buffer handed to a C function
            name = self._storage_of_data(e.args[1])
            if int(e.args[4].value) & 2:
                self.written.add(name)
            return f"(&{name}[{self.expr(e.args[2])}])"
        args = [self.expr(a) for a in e.args]
        if op == "if_then_else":
            return f"({args[0]} ? {args[1]} : {args[2]})"
        if op in self.language.math_calls:
            if dtype_of(e) != "float32":
                raise NotImplementedError(f"{op} on {e.dtype} is not supported by the tvmnas C emitter")
            return f"{self.language.math_calls[op]}({', '.join(args)})"
        if op == "likely":
            return args[0]
        if op == "address_of":
            return f"(&{args[0]})"
        raise NotImplementedError(f"TIR intrinsic {full} is not supported by the tvmnas C emitter")

    # ---- statements ----------------------------------------------------------------------
    def stmt(self, s, depth: int) -> None:
        pad = "  " * depth
        kind = type(s).__name__
        if kind == "SeqStmt":
            for child in s.seq:
                self.stmt(child, depth)
        elif kind == "For":
            v = self._var(s.loop_var)
            lo, ext = self.expr(s.min), self.expr(s.extent)
            bound = ext if lo == "0" else f"{lo} + {ext}"
            self.lines.append(f"{pad}for (int32_t {v} = {lo}; {v} < {bound}; ++{v}) {{")
            self.stmt(s.body, depth + 1)
            self.lines.append(f"{pad}}}")
        elif kind in ("BufferStore", "TensorStore"):
            (index,) = s.indices
            target = self._storage(s.buffer)
            self.written.add(target)
            self.lines.append(f"{pad}{target}[{self.expr(index)}] = {self.expr(s.value)};")
        elif kind == "Bind":
            v = self._var(s.var)
            self.lines.append(f"{pad}const {self.language.c_type(dtype_of(s.var))} {v} = {self.expr(s.value)};")
        elif kind == "IfThenElse":
            self.lines.append(f"{pad}if ({self.expr(s.condition)}) {{")
            self.stmt(s.then_case, depth + 1)
            if s.else_case is not None:
                self.lines.append(f"{pad}}} else {{")
                self.stmt(s.else_case, depth + 1)
            self.lines.append(f"{pad}}}")
        elif kind == "DeclBuffer":
            self._storage(s.buffer)  # an alias of a parameter or scratch: same storage name
        elif kind == "AllocBuffer":
            self._alloc(s.buffer)
        elif kind == "Evaluate":
            if type(s.value).__name__ != "IntImm":
                self.lines.append(f"{pad}{self.expr(s.value)};")
        elif kind == "AttrStmt":
            self.stmt(s.body, depth)
        else:
            raise NotImplementedError(f"TIR statement {kind} is not supported by the tvmnas C emitter")

    def _alloc(self, buffer) -> None:
        name = self._storage(buffer)
        elems = 1
        for dim in buffer.shape:
            elems *= int(dim)
        if elems <= LOCAL_SCRATCH_MAX_ELEMS:
            self.locals_.append(f"  {self.language.c_type(buffer.dtype)} {name}[{elems}];")
        else:
            self.scratch.append((name, str(buffer.dtype), elems))

    # ---- the function --------------------------------------------------------------------
    def print(self) -> tuple[str, KernelSignature]:
        """Return the C definition and the signature the call sequence uses."""
        params, dtypes, elems = [], [], []
        for p in self.func.params:
            ty = p.ty
            if type(ty).__name__ != "BufferType":
                raise NotImplementedError(f"kernel {self.name}: scalar parameter {p.name} is not supported")
            params.append(self._storage_of_param(p))
            dtypes.append(str(ty.dtype))
            n = 1
            for dim in ty.shape:
                n *= int(dim)
            elems.append(n)
        self.stmt(self.func.body, 1)
        written = {p for p in params if p in self.written}
        decls = [
            f"{'' if p in written else 'const '}{self.language.c_type(d)} *{'' if i in self.shared else self.restrict} {p}"
            for i, (p, d) in enumerate(zip(params, dtypes))
        ]
        decls += [f"{self.language.c_type(d)} *{self.restrict} {n}" for n, d, _ in self.scratch]
        # noinline: a kernel compiles to the same code wherever it is called, so its profiled cost
        # (and the cost model keyed on its C text) holds in any network; it also bounds stack use.
        # noclone also stops gcc -O3 from copying the kernel per call site with its constant pointers
        # propagated: faster, but each copy is paid for in flash again.
        attributes = "noinline, noclone" if self.noclone else "noinline"
        header = f"static __attribute__(({attributes})) void {self.name}({', '.join(decls)})"
        body = "\n".join(self.locals_ + self.lines)
        sig = KernelSignature(self.name, params, dtypes, elems, written, list(self.scratch))
        return f"{header} {{\n{body}\n}}\n", sig


def print_kernel(func, name: str, restrict: bool = True, noclone: bool = False,
                 shared: frozenset[int] = frozenset(), language: CLanguage = C99) -> tuple[str, KernelSignature]:
    """Print `func` (a lowered PrimFunc) as a static C function named `name`.

    noclone: forbid gcc's per-call-site copies, for a kernel that several programs call (dynamic bundles).
    shared: parameter positions printed without `restrict`, because a call passes them the same
    memory (an output written in place over an input, passes/in_place.py).
    language: the C tables to print with (`language_for(target)`; C99 by default).
    """
    try:
        return CPrinter(func, name, restrict, noclone, frozenset(shared), language).print()
    except NotImplementedError as err:
        raise UnsupportedOperatorError(name, name, str(err)) from None
