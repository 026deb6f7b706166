"""Static input shapes for import: a model whose only dynamic dimension is the batch is compiled
with batch 1 (said in one notice line); any other dynamic input dimension is refused with one line
naming the input and the dimension. The MCU path needs every shape known at compile time."""

from __future__ import annotations

import sys
from typing import Callable

from tvmnas.errors import ModelLoadError

Notice = Callable[[str], None]


def stderr_notice(message: str) -> None:
    """Default notice: one line on stderr (progress and notes go there; results go to stdout)."""
    print(message, file=sys.stderr)


def _refuse(source: str, name: str, dims: list[str], axis: int) -> ModelLoadError:
    shape = "x".join(dims)
    return ModelLoadError(
        f"{source}: input '{name}' has a dynamic dimension {axis} ('{dims[axis]}' in {shape}): only a dynamic "
        f"batch (dimension 0) is supported; export the model with fixed sizes"
    )


def fix_onnx_batch(proto, source: str, notice: Notice = stderr_notice) -> None:
    """Set a dynamic batch dimension of every graph input (and the outputs sharing its name) to 1,
    in place; ModelLoadError for any other dynamic or unknown input dimension."""
    initializers = {i.name for i in proto.graph.initializer}
    batch_params: set[str] = set()
    fixed = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        texts = [d.dim_param or (str(d.dim_value) if d.dim_value > 0 else "?") for d in dims]
        for axis, d in enumerate(dims):
            if d.dim_value > 0:
                continue
            if axis != 0:
                raise _refuse(source, value.name, texts, axis)
            if d.dim_param:
                batch_params.add(d.dim_param)
            d.dim_value = 1  # clears dim_param (a oneof)
            fixed.append(value.name)
    for value in proto.graph.output:
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param and d.dim_param in batch_params:
                d.dim_value = 1
    if fixed:
        notice(f"note: {source}: input {', '.join(repr(n) for n in fixed)} has a dynamic batch; compiling with batch 1")


def fix_torch_batch(program, source: str, notice: Notice = stderr_notice):
    """The exported program re-exported with batch 1 when the batch (dimension 0) of its inputs is
    symbolic; ModelLoadError for any other symbolic input dimension; unchanged when all are static."""
    import torch

    user_inputs = set(program.graph_signature.user_inputs)
    examples, fixed = [], []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise ModelLoadError(f"{source}: input '{node.name}' is not a tensor: only tensor inputs are supported")
        dims = list(val.shape)
        texts = [str(d) for d in dims]
        for axis, d in enumerate(dims):
            if isinstance(d, torch.SymInt) and axis != 0:
                raise _refuse(source, node.name, texts, axis)
        if dims and isinstance(dims[0], torch.SymInt):
            fixed.append(node.name)
            dims[0] = 1
        examples.append(torch.zeros([int(d) for d in dims], dtype=val.dtype))
    if not fixed:
        return program
    notice(f"note: {source}: input {', '.join(repr(n) for n in fixed)} has a dynamic batch; compiling with batch 1")
    try:
        return torch.export.export(program.module(), tuple(examples))
    except Exception as err:  # torch.export raises many unrelated types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelLoadError(f"{source}: re-exporting with batch 1 failed: {first}") from None
