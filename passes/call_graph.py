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
    """One call_tir: `output = kernel(*args)`, args naming tensors or constants."""

    index: int
    kernel: str
    args: tuple[str, ...]
    output: str


@dataclass
class CallGraph:
    """Inputs, outputs, intermediate tensors, constants and calls of `main`, in execution order."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    tensors: dict[str, TensorInfo]
    constants: dict[str, np.ndarray]
    calls: list[KernelCall] = field(default_factory=list)


def _tensor_info(name: str, ty) -> TensorInfo:
    dims = ty.shape.values if hasattr(ty.shape, "values") else ty.shape
    return TensorInfo(name, tuple(int(d) for d in dims), str(ty.dtype))


def _relax_op_name(value) -> str:
    op = getattr(value, "op", None)
    return getattr(op, "name", type(value).__name__)


def extract_call_graph(mod: tvm.IRModule, func_name: str = "main") -> CallGraph:
    """Read the kernel sequence of `func_name` after MCULowering.

    Expects: only call_tir bindings with static shapes, var aliases and one output tuple.
    Raises UnsupportedOperatorError naming the operator and the binding for anything else
    (an operator LegalizeOps could not lower stays as a Relax call and ends up here).
    """
    func = mod[func_name]
    call_tir = tvm.ir.Op.get("relax.call_tir")
    inputs = [_tensor_info(p.name, p.ty) for p in func.params]
    tensors = {t.name: t for t in inputs}
    constants: dict[str, np.ndarray] = {}
    const_names: list[tuple[object, str]] = []
    alias: dict[str, str] = {}
    calls: list[KernelCall] = []
    outputs: list[TensorInfo] = []

    def const_name(c, call_index: int, arg_index: int) -> str:
        for seen, name in const_names:
            if seen.same_as(c):
                return name
        name = f"w{call_index:02d}_{arg_index}"
        const_names.append((c, name))
        constants[name] = c.value.numpy()
        return name

    body = func.body
    last_block = len(body.blocks) - 1
    for block_index, block in enumerate(body.blocks):
        for binding in block.bindings:
            var, value = binding.var.name, binding.value
            if isinstance(value, relax.Call) and value.op.same_as(call_tir):
                kernel = value.args[0].name_hint
                args = []
                for i, a in enumerate(value.args[1].fields):
                    if isinstance(a, relax.Var):
                        args.append(alias.get(a.name, a.name))
                    else:
                        args.append(const_name(a, len(calls), i))
                tensors[var] = _tensor_info(var, binding.var.ty)
                calls.append(KernelCall(len(calls), kernel, tuple(args), var))
            elif isinstance(value, relax.Var):
                alias[var] = alias.get(value.name, value.name)
            elif isinstance(value, relax.Tuple) and block_index == last_block:
                outputs = [tensors[alias.get(f.name, f.name)] for f in value.fields]
            else:
                raise UnsupportedOperatorError(_relax_op_name(value), var)
    result = body.body
    if isinstance(result, relax.Var) and not outputs:
        name = alias.get(result.name, result.name)
        if name in tensors:
            outputs = [tensors[name]]
    if not outputs:
        raise UnsupportedOperatorError("output", func_name, "the model returns no tensor computed by a kernel")
    return CallGraph(inputs, outputs, tensors, constants, calls)
