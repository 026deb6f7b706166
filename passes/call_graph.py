"""Analysis: the straight-line kernel call sequence of a fused Relax `main`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from tvmnas.errors import UnsupportedOperatorError

DTYPE_BYTES = {"float32": 4, "int32": 4, "int8": 1, "uint8": 1, "int16": 2, "int64": 8, "float64": 8}


@dataclass(frozen=True)
class TensorInfo:
    """A named tensor of the graph."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def elems(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.elems * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class KernelCall:
    """One call_tir: `outputs = kernel(*args)`, args naming tensors or constants."""

    index: int
    kernel: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass
class CallGraph:
    """Inputs, outputs, intermediate tensors, constants and calls of `main`, in execution order."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    tensors: dict[str, TensorInfo]
    constants: dict[str, np.ndarray]
    calls: list[KernelCall] = field(default_factory=list)

    def with_output_names(self, names: list[str]) -> "CallGraph":
        """The same graph with its outputs renamed (e.g. to the source model's output names instead
        of Relax's `gv`); unchanged if the count differs or a name is already taken."""
        current = [t.name for t in self.outputs]
        taken = set(self.tensors) | set(self.constants)
        if len(names) != len(current) or len(set(names)) != len(names) or any(
            n in taken and n not in current for n in names
        ):
            return self
        rename = dict(zip(current, names))
        if all(old == new for old, new in rename.items()):
            return self

        def ren(name: str) -> str:
            return rename.get(name, name)

        tensors = {ren(k): TensorInfo(ren(k), t.shape, t.dtype) for k, t in self.tensors.items()}
        calls = [KernelCall(c.index, c.kernel, tuple(map(ren, c.args)), tuple(map(ren, c.outputs))) for c in self.calls]
        inputs = [tensors[ren(t.name)] for t in self.inputs]
        outputs = [tensors[ren(t.name)] for t in self.outputs]
        return CallGraph(inputs, outputs, tensors, self.constants, calls)


def _tensor_info(name: str, ty) -> TensorInfo:
    dims = ty.shape.values if hasattr(ty.shape, "values") else ty.shape
    return TensorInfo(name, tuple(int(d) for d in dims), str(ty.dtype))


def _relax_op_name(value) -> str:
    op = getattr(value, "op", None)
    return getattr(op, "name", type(value).__name__)


def extract_call_graph(mod: tvm.IRModule, func_name: str = "main") -> CallGraph:
    """Read the kernel sequence of `func_name` after MCULowering.

    Expects: only call_tir bindings with static shapes (tensor or tuple outputs), tuple
    projections, var aliases and one output tuple. Tensor names are the Relax var names made
    unique. Raises UnsupportedOperatorError naming the operator and the binding for anything else
    (an operator LegalizeOps could not lower stays as a Relax call and ends up here).
    """
    func = mod[func_name]
    call_tir = tvm.ir.Op.get("relax.call_tir")
    names: dict[int, object] = {}          # var handle -> tensor name, or tuple of names
    used: set[str] = set()
    tensors: dict[str, TensorInfo] = {}
    constants: dict[str, np.ndarray] = {}
    const_names: list[tuple[object, str]] = []
    calls: list[KernelCall] = []
    outputs: list[TensorInfo] = []

    def fresh(name: str) -> str:
        unique, k = name, 0
        while unique in used:
            k += 1
            unique = f"{name}_{k}"
        used.add(unique)
        return unique

    def lookup(var: relax.Var):
        return names[var.__chandle__()]

    def const_name(c, call_index: int, arg_index: int) -> str:
        for seen, name in const_names:
            if seen.same_as(c):
                return name
        name = fresh(f"w{call_index:02d}_{arg_index}")
        const_names.append((c, name))
        constants[name] = c.value.numpy()
        return name

    inputs = []
    for p in func.params:
        info = _tensor_info(fresh(p.name), p.ty)
        names[p.__chandle__()] = info.name
        tensors[info.name] = info
        inputs.append(info)

    body = func.body
    last_block = len(body.blocks) - 1
    for block_index, block in enumerate(body.blocks):
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, relax.Call) and value.op.same_as(call_tir):
                args = []
                for i, a in enumerate(value.args[1].fields):
                    args.append(lookup(a) if isinstance(a, relax.Var) else const_name(a, len(calls), i))
                fields = var.ty.fields if hasattr(var.ty, "fields") else None
                if fields is None:
                    outs = [_tensor_info(fresh(var.name), var.ty)]
                    names[var.__chandle__()] = outs[0].name
                else:
                    outs = [_tensor_info(fresh(f"{var.name}_{i}"), ty) for i, ty in enumerate(fields)]
                    names[var.__chandle__()] = tuple(o.name for o in outs)
                for o in outs:
                    tensors[o.name] = o
                calls.append(
                    KernelCall(len(calls), value.args[0].name_hint, tuple(args), tuple(o.name for o in outs))
                )
            elif isinstance(value, relax.Var):
                names[var.__chandle__()] = lookup(value)
            elif isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var):
                names[var.__chandle__()] = lookup(value.tuple_value)[value.index]
            elif isinstance(value, relax.Tuple) and block_index == last_block:
                outputs = [tensors[lookup(f)] for f in value.fields]
            else:
                raise UnsupportedOperatorError(_relax_op_name(value), var.name)
    result = body.body
    if isinstance(result, relax.Var) and not outputs:
        name = lookup(result)
        if isinstance(name, str) and name in tensors:
            outputs = [tensors[name]]
    if not outputs:
        raise UnsupportedOperatorError("output", func_name, "the model returns no tensor computed by a kernel")
    return CallGraph(inputs, outputs, tensors, constants, calls)
