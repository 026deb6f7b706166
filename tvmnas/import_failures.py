"""Import failures as one line: what TVM's importers raise, and imports that leave shapes unknown.

The importers raise any exception type, with a C++ traceback or none, from deep inside a
converter; the user is to see one line naming the operator and node that was being converted.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import tvm

from tvmnas.errors import ModelLoadError, TvmnasError, UnsupportedOperatorError


def fx_node_label(node) -> str:
    """A torch.fx node's name, with the module path it came from where known."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return f"{node.name} ({path})" if path else node.name


def importer_failure(framework: str, err: BaseException) -> TvmnasError:
    """One line for an exception raised inside TVM's importer: the operator and node it was
    converting (found in the traceback), and the importer's own reason."""
    import onnx
    import torch

    reason = _reason(err)
    node = None
    for frame, _ in traceback.walk_tb(err.__traceback__):  # innermost frame last
        if not frame.f_globals.get("__name__", "").startswith("tvm."):
            continue  # reading f_locals keeps a copy on the frame: only TVM's frames are read
        candidate = frame.f_locals.get("node")
        if isinstance(candidate, (torch.fx.Node, onnx.NodeProto)):
            node = candidate
    if isinstance(node, torch.fx.Node):
        failure = UnsupportedOperatorError(str(node.target), fx_node_label(node), f"the TVM {framework} importer failed: {reason}")
    elif isinstance(node, onnx.NodeProto):
        failure = UnsupportedOperatorError(node.op_type, node.name or node.output[0], f"the TVM {framework} importer failed: {reason}")
    else:
        failure = ModelLoadError(f"the TVM {framework} importer failed: {reason}")
    return failure


def call_importer(convert: Callable[[], tvm.IRModule], failure: Callable[[Exception], TvmnasError]) -> tvm.IRModule:
    """`convert()`, or the one-line error `failure` makes of what it raised.

    A failed import leaves TVM's BlockBuilder with open blocks, and it logs a warning line on
    native stderr when the exception's frames release it; that happens with stderr muted, so the
    user's error stays one line."""
    with _MutedTeardown() as teardown:
        try:
            return convert()
        except TvmnasError:
            raise
        except Exception as err:  # the importer's converters raise any type; `failure` names the node
            error = failure(err)
            teardown.mute()
    raise error from None


class _MutedTeardown:
    """Mutes native stderr (fd 2) from `mute()` until the block is left and garbage collected."""

    def __enter__(self) -> _MutedTeardown:
        self._saved: int | None = None
        return self

    def mute(self) -> None:
        import os
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)

    def __exit__(self, *exc) -> None:
        import gc
        import os

        if self._saved is None:
            return
        gc.collect()
        os.dup2(self._saved, 2)
        os.close(self._saved)


def _reason(err: BaseException) -> str:
    """The informative line of an importer exception: TVM's own errors put a C++ traceback first
    and the message last."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    if isinstance(err, tvm.error.InternalError) or lines[0].startswith("Traceback"):
        line = lines[-1]
    else:
        line = lines[0]
    return line if len(line) <= 200 else line[:197] + "..."


def first_dynamic_op(mod: tvm.IRModule) -> str | None:
    """The Relax operator of the first binding in `main` whose tensor shape is not fully known
    (the MCU path plans every buffer at compile time), or None."""
    from tvm import relax

    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if not isinstance(ty, relax.TensorType):
                continue
            shape = ty.shape
            static = isinstance(shape, relax.ShapeExpr) and all(isinstance(d, tvm.tirx.IntImm) for d in shape.values)
            if not static:
                value = binding.value
                return getattr(getattr(value, "op", None), "name", type(value).__name__)
    return None


def dynamic_shape_error(proto, relax_op: str) -> TvmnasError:
    """The error for an import leaving a shape unknown: it names the first ONNX node whose output
    shape ONNX's own inference cannot fix either (`proto`, None for torch), else the Relax operator."""
    import onnx

    if proto is None:
        return ModelLoadError(f"the imported model computes a tensor of unknown shape with '{relax_op}': "
                              "tvmnas compiles fixed shapes only (export with static shapes)")
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {v.name: v.type.tensor_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    for i, node in enumerate(proto.graph.node):
        for out in node.output:
            t = shapes.get(out)
            if t is not None and t.HasField("shape") and not all(d.HasField("dim_value") for d in t.shape.dim):
                return UnsupportedOperatorError(node.op_type, node.name or f"{node.op_type}_{i}",
                                                "its output shape is not fixed at import; tvmnas compiles fixed shapes only")
    return ModelLoadError(f"the imported model computes a tensor of unknown shape with '{relax_op}': "
                          "tvmnas compiles fixed shapes only")
