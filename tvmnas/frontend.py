"""Import a network (torch.nn.Module, saved torch.export program `.pt2`, `.onnx` or `.tflite`) into Relax."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import tvm

from tvmnas.errors import ModelLoadError, TvmnasError, UnsupportedOperatorError
from tvmnas.frontend_rnn import (
    check_onnx_recurrent, onnx_recurrent_converters, onnx_recurrent_sources, torch_import_options,
    torch_recurrent_sources,
)
from tvmnas.import_failures import call_importer, dynamic_shape_error, first_dynamic_op, fx_node_label, importer_failure
from tvmnas.input_shapes import Notice, fix_onnx_batch, fix_torch_batch, stderr_notice
from tvmnas.model_file import check_model_file

ModelSource = Union[str, Path, "torch.nn.Module"]  # noqa: F821


# Source operators -> the Relax operator that heads the fused kernel computing them.
TORCH_KERNEL_OPS = {
    "conv2d": "conv2d", "convolution": "conv2d", "linear": "matmul", "max_pool2d": "max_pool2d",
    "avg_pool2d": "avg_pool2d", "adaptive_avg_pool2d": "mean", "mean": "mean", "softmax": "softmax",
}
ONNX_KERNEL_OPS = {
    "Conv": "conv2d", "Gemm": "matmul", "MatMul": "matmul", "MaxPool": "max_pool2d",
    "AveragePool": "avg_pool2d", "GlobalAveragePool": "mean", "ReduceMean": "mean", "Softmax": "softmax",
}

# (Relax op heading a kernel, weight shape or None, output shape) -> source layer names in graph order
SourceLayers = dict[tuple, list[str]]

OUTPUT_NAMES_ATTR = "tvmnas.output_names"  # IRModule attribute: the source model's output names

@dataclass
class ImportedModel:
    """A network imported into Relax, with what is needed to check the import against its source.

    reference: runs the source framework (the torch module or program, or onnxruntime on the
    original file) on float/integer numpy inputs and returns its outputs as numpy arrays.
    """

    mod: tvm.IRModule
    sources: SourceLayers
    framework: str
    output_names: list[str]
    reference: Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def import_model(model: ModelSource, input_shape: tuple[int, ...] | None = None) -> tvm.IRModule:
    """Relax IRModule (weights bound as constants) from a file path or an in-memory torch module.

    `input_shape` is needed only for an nn.Module (a file carries its shapes).
    """
    return import_model_with_sources(model, input_shape)[0]


def import_model_with_sources(
    model: ModelSource, input_shape: tuple[int, ...] | None = None, notice: Notice = stderr_notice
) -> tuple[tvm.IRModule, SourceLayers]:
    """`import_model`, plus the source layer names (torch module paths or ONNX node names) of the
    operators that head kernels, in graph order, so generated code can name layers users know."""
    imported = import_source(model, input_shape, notice)
    return imported.mod, imported.sources


def import_source(
    model: ModelSource, input_shape: tuple[int, ...] | None = None, notice: Notice = stderr_notice
) -> ImportedModel:
    """Import `model` (see `import_model`) and keep a handle on its source framework, so that
    `tvmnas.import_check` can compare the two.

    A file whose only dynamic input dimension is the batch is imported with batch 1 (`notice` says
    so in one line); the module carries the model's output names as attribute OUTPUT_NAMES_ATTR."""
    import torch

    if isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise ModelLoadError("an nn.Module needs input_shape to be traced")
        example = torch.zeros(*input_shape)
        try:
            program = torch.export.export(model.eval(), (example,))
        except Exception as err:  # torch.export raises many unrelated types
            raise ModelLoadError(f"torch.export failed on the module: {_first_line(err)}") from None
        return _torch_import(program, model)
    path = Path(model)
    check_model_file(path)  # an existing .onnx, .pt2 or .pt
    if path.suffix.lower() == ".onnx":
        return _import_onnx(path, notice)
    if path.suffix.lower() == ".tflite":
        from tvmnas.frontend_tflite import import_tflite

        return import_tflite(path, notice)
    program = fix_torch_batch(_load_exported_program(path), f"'{path}'", notice)
    return _torch_import(program, program.module)


def _load_exported_program(path: Path):
    """torch.export.load with torch's own warnings and log lines held back: a corrupt file gives one
    ModelLoadError line, not a dozen lines of logged traceback first."""
    import torch

    from tvmnas.frontend_pt2e import register_quantized_ops

    register_quantized_ops()  # PT2E-quantized programs hold quantized_decomposed ops
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(str(path))
    except Exception as err:  # a corrupt archive raises zipfile, pickle or runtime errors
        raise ModelLoadError(f"'{path}' is not a readable torch.export program: {_first_line(err)}") from None
    finally:
        logger.setLevel(level)


def _with_output_names(mod: tvm.IRModule, names: list[str]) -> tvm.IRModule:
    return mod.with_attr(OUTPUT_NAMES_ATTR, names) if names and all(names) else mod


def _torch_import(program, module) -> ImportedModel:
    """The Relax module of an exported program, with `module` (the same network, runnable in
    PyTorch, or a function making it when it is needed) as its reference."""
    import torch

    def reference(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        net = module() if callable(module) and not isinstance(module, torch.nn.Module) else module
        with torch.no_grad():
            out = net(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        return [t.detach().numpy() for t in _tensors(out)]

    names = [str(n) for n in program.graph_signature.user_outputs]
    mod = _with_output_names(_from_exported_program(program), names)
    return ImportedModel(mod, _torch_sources(program), "PyTorch", names, reference)


def _tensors(out) -> list:
    """The tensors of a module's output (a tensor, or tuples and lists of them), in order."""
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _tensors(item)]
    return [out]


def _torch_sources(program) -> SourceLayers:
    sources: SourceLayers = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        op = TORCH_KERNEL_OPS.get(str(node.target).split(".")[1] if "." in str(node.target) else "")
        val = node.meta.get("val")
        if op and hasattr(val, "shape"):
            weight = node.args[1].meta.get("val") if op in ("conv2d", "matmul") and len(node.args) > 1 else None
            key = (op, tuple(weight.shape) if hasattr(weight, "shape") else None, tuple(val.shape))
            stack = node.meta.get("nn_module_stack") or {}
            sources.setdefault(key, []).append(list(stack.values())[-1][0] if stack else node.name)
    sources.update(torch_recurrent_sources(program))
    return sources


def _onnx_sources(proto) -> SourceLayers:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    for info in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value for d in dims)
    sources: SourceLayers = {}
    for i, node in enumerate(proto.graph.node):
        op = ONNX_KERNEL_OPS.get(node.op_type)
        if op and node.output[0] in shapes:
            weight = shapes.get(node.input[1]) if op == "conv2d" and len(node.input) > 1 else None
            if op == "matmul" and len(node.input) > 1 and node.input[1] in shapes:
                w = shapes[node.input[1]]
                weight = w[::-1] if node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute) else w
            key = (op, weight, shapes[node.output[0]])
            sources.setdefault(key, []).append(node.name or f"{node.op_type}_{i}")
    sources.update(onnx_recurrent_sources(proto, shapes))
    return sources


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _from_exported_program(program) -> tvm.IRModule:
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from tvmnas.frontend_pt2e import is_pt2e_quantized, pt2e_converters
    from tvmnas.passes import WrapNegativeIndices

    def convert() -> tvm.IRModule:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decomposed, options = torch_import_options(program)  # LSTM/GRU/RNN: one kernel per layer
            if is_pt2e_quantized(decomposed):  # quantized_decomposed ops -> relax quantize / dequantize
                options["custom_convert_map"] = {**options.get("custom_convert_map", {}), **pt2e_converters(decomposed)}
                options["unwrap_unit_return_tuple"] = True  # a single int8 output, as QuantizeToInteger reads it
                return relax.transform.CanonicalizeBindings()(from_exported_program(decomposed, **options))
            return from_exported_program(decomposed, **options)

    def failure(err: Exception) -> TvmnasError:
        found = re.search(r"Unsupported function types \[(.*)\]", str(err)) if isinstance(err, AssertionError) else None
        if not found:
            return importer_failure("PyTorch", err)
        op = found.group(1).split(",")[0].strip(" '\"")
        return UnsupportedOperatorError(op, _torch_node_name(program, op))

    mod = call_importer(convert, failure)
    dynamic = first_dynamic_op(mod)
    if dynamic:
        raise dynamic_shape_error(None, dynamic)
    # TVM 0.27 passes x[:, -1] and friends to take() as a negative index: count it from the end
    return WrapNegativeIndices()(mod)


def _torch_node_name(program, op: str) -> str:
    """Name of the first graph node calling `op`, with the module path it came from."""
    for node in program.graph.nodes:
        if node.op == "call_function" and op in (getattr(node.target, "__name__", ""), str(node.target)):
            return fx_node_label(node)
    return "?"


def _import_onnx(path: Path, notice: Notice = stderr_notice) -> ImportedModel:
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # protobuf decode errors have no common base class
        raise ModelLoadError(f"'{path}' is not a valid ONNX model: {_first_line(err)}") from None
    return import_onnx_proto(proto, f"'{path}'", "onnxruntime", lambda names: _onnxruntime_reference(path, names), notice)


def import_onnx_proto(
    proto, label: str, framework: str, reference_of: Callable[[list[str]], Callable], notice: Notice = stderr_notice
) -> ImportedModel:
    """Import an ONNX ModelProto (`label` names it in messages); `reference_of(input_names)` gives
    the run of the source framework (`framework`) that the import check compares with."""
    from tvm.relax.frontend.onnx import from_onnx

    from tvmnas.onnx_fold import fold_shape_arithmetic
    from tvmnas.passes import WrapNegativeIndices
    from tvmnas.quant.qgraph import reject_qoperator

    reject_qoperator(proto)  # QOperator ONNX: one line saying to export QDQ
    check_onnx_recurrent(proto)
    fix_onnx_batch(proto, label, notice)
    # torch.onnx.export writes pads and chunk bounds as integer subgraphs TVM 0.27 cannot import
    folded = fold_shape_arithmetic(proto)

    def convert() -> tvm.IRModule:
        with contextlib.redirect_stdout(io.StringIO()):  # the importer prints its failures to stdout
            with onnx_recurrent_converters():
                return from_onnx(folded)

    def failure(err: Exception) -> TvmnasError:
        if not isinstance(err, tvm.error.OpNotImplemented):
            return importer_failure("ONNX", err)
        ops = str(err).split(":")[-1]
        op = ops.split(",")[0].strip().splitlines()[0].strip()
        node = next((n.name or f"{n.op_type}_{i}" for i, n in enumerate(proto.graph.node) if n.op_type == op), "?")
        return UnsupportedOperatorError(op, node)

    mod = call_importer(convert, failure)
    dynamic = first_dynamic_op(mod)
    if dynamic:
        raise dynamic_shape_error(folded, dynamic)
    names = [o.name for o in proto.graph.output]
    mod = _with_output_names(WrapNegativeIndices()(mod), names)
    return ImportedModel(mod, _onnx_sources(folded), framework, names,
                         reference_of([i.name for i in _graph_inputs(proto)]))


def _graph_inputs(proto) -> list:
    """The model's real inputs (old exporters also list every initializer as a graph input)."""
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def _onnxruntime_reference(path: Path, input_names: list[str]) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    def reference(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [np.asarray(o) for o in session.run(None, dict(zip(input_names, inputs)))]

    return reference
