"""Import a network (torch.nn.Module, saved torch.export program `.pt2`, or `.onnx`) into Relax."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Union

import tvm

from tvmnas.errors import ModelLoadError, UnsupportedOperatorError

ModelSource = Union[str, Path, "torch.nn.Module"]  # noqa: F821


def import_model(model: ModelSource, input_shape: tuple[int, ...] | None = None) -> tvm.IRModule:
    """Relax IRModule (weights bound as constants) from a file path or an in-memory torch module.

    `input_shape` is needed only for an nn.Module (a file carries its shapes).
    """
    import torch

    if isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise ModelLoadError("an nn.Module needs input_shape to be traced")
        example = torch.zeros(*input_shape)
        try:
            program = torch.export.export(model.eval(), (example,))
        except Exception as err:  # torch.export raises many unrelated types
            raise ModelLoadError(f"torch.export failed on the module: {_first_line(err)}") from None
        return _from_exported_program(program)
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"model file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _import_onnx(path)
    if suffix in (".pt2", ".pt"):
        try:
            program = torch.export.load(str(path))
        except Exception as err:  # a corrupt archive raises zipfile, pickle or runtime errors
            raise ModelLoadError(f"'{path}' is not a readable torch.export program: {_first_line(err)}") from None
        return _from_exported_program(program)
    raise ModelLoadError(f"'{path}': unknown model format '{suffix}' (expected .onnx or .pt2)")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _from_exported_program(program) -> tvm.IRModule:
    from tvm.relax.frontend.torch import from_exported_program

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return from_exported_program(program)
        except AssertionError as err:
            found = re.search(r"Unsupported function types \[(.*)\]", str(err))
            if not found:
                raise ModelLoadError(f"the TVM PyTorch importer failed: {_first_line(err)}") from None
            op = found.group(1).split(",")[0].strip(" '\"")
            raise UnsupportedOperatorError(op, _torch_node_name(program, op)) from None
        except (ValueError, TypeError, KeyError, NotImplementedError, RuntimeError) as err:
            raise ModelLoadError(f"the TVM PyTorch importer failed: {_first_line(err)}") from None


def _torch_node_name(program, op: str) -> str:
    """Name of the first graph node calling `op`, with the module path it came from."""
    for node in program.graph.nodes:
        if node.op == "call_function" and op in (getattr(node.target, "__name__", ""), str(node.target)):
            stack = node.meta.get("nn_module_stack") or {}
            path = list(stack.values())[-1][0] if stack else ""
            return f"{node.name} ({path})" if path else node.name
    return "?"


def _import_onnx(path: Path) -> tvm.IRModule:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # protobuf decode errors have no common base class
        raise ModelLoadError(f"'{path}' is not a valid ONNX model: {_first_line(err)}") from None
    try:
        return from_onnx(proto)
    except tvm.error.OpNotImplemented as err:
        ops = str(err).split(":")[-1]
        op = ops.split(",")[0].strip().splitlines()[0].strip()
        node = next((n.name or f"{n.op_type}_{i}" for i, n in enumerate(proto.graph.node) if n.op_type == op), "?")
        raise UnsupportedOperatorError(op, node) from None
    except (ValueError, TypeError, KeyError, AssertionError, RuntimeError) as err:
        raise ModelLoadError(f"the TVM ONNX importer failed on '{path}': {_first_line(err)}") from None
