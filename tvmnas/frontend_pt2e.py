"""PT2E-quantized torch.export programs: `quantized_decomposed` quantize / dequantize ops as Relax.

torchao's `prepare_pt2e` / `convert_pt2e` write an int8 model as float ops between
`quantized_decomposed.quantize_per_tensor` and `dequantize_per_tensor` (activations) and
`dequantize_per_channel` (int8 weight constants), the same pattern as QDQ ONNX. TVM 0.27's
`from_exported_program` has no converter for them; the ones here map them onto
`relax.quantize` / `relax.dequantize`, so QuantizeToInteger turns the program into integer
kernels as it does a QDQ ONNX model. Loading such a .pt2 needs the operators registered first
(`register_quantized_ops`).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from tvmnas.errors import UnsupportedOperatorError

QUANTIZED_NAMESPACE = "quantized_decomposed"


def register_quantized_ops() -> None:
    """Register torch's `quantized_decomposed` operators, without which torch.export.load cannot
    read a PT2E-quantized program."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the ops)


def _scalar(value, dtype: str) -> relax.Expr:
    return relax.const(np.asarray(value, dtype=dtype).reshape(()))


def _check_int8(node, qmin, qmax, dtype) -> None:
    import torch

    if dtype != torch.int8 or int(qmin) < -128 or int(qmax) > 127:
        raise UnsupportedOperatorError(node.target.__name__, node.name,
                                       f"quantizes to {dtype} in [{qmin}, {qmax}]; int8 is supported")


def _clamped(bb, q: relax.Expr, qmin: int, qmax: int) -> relax.Expr:
    """A narrower range than int8's (weights in [-127, 127]) is a clamp after the quantize."""
    if (int(qmin), int(qmax)) == (-128, 127):
        return q
    return bb.emit(relax.op.clip(q, int(qmin), int(qmax)))


def _quantize_per_tensor(node, importer) -> relax.Var:
    x, scale, zero_point, qmin, qmax, dtype = importer.retrieve_args(node)[:6]
    _check_int8(node, qmin, qmax, dtype)
    bb = importer.block_builder
    q = bb.emit(relax.op.quantize(x, _scalar(scale, "float32"), _scalar(zero_point, "int8"), axis=-1, out_dtype="int8"))
    return _clamped(bb, q, qmin, qmax)


def _dequantize_per_tensor(node, importer) -> relax.Var:
    args = importer.retrieve_args(node)
    x, scale, zero_point, qmin, qmax, dtype = args[:6]
    _check_int8(node, qmin, qmax, dtype)
    return importer.block_builder.emit(relax.op.dequantize(x, _scalar(scale, "float32"), _scalar(zero_point, "int8"),
                                                           axis=-1, out_dtype="float32"))


def _dequantize_per_channel(constants: dict[str, np.ndarray]):
    """The converter of dequantize_per_channel; the zero points (a buffer of the program, int64 in
    torch) become an int8 constant, as relax.dequantize needs."""

    def convert(node, importer) -> relax.Var:
        x, scales, zero_points, axis, qmin, qmax, dtype = importer.retrieve_args(node)[:7]
        _check_int8(node, qmin, qmax, dtype)
        source = node.args[2]
        if getattr(source, "name", None) not in constants:
            raise UnsupportedOperatorError(node.target.__name__, node.name, "its zero points are not a constant of the program")
        zp = relax.const(constants[source.name].astype("int8"))
        return importer.block_builder.emit(relax.op.dequantize(x, scales, zp, axis=int(axis), out_dtype="float32"))

    return convert


def program_constants(program) -> dict[str, np.ndarray]:
    """Placeholder name -> value of the program's parameters, buffers and constants."""
    values = {**dict(program.named_parameters()), **dict(program.named_buffers()), **program.constants}
    found = {}
    for spec in program.graph_signature.input_specs:
        value = values.get(spec.target) if spec.target is not None else None
        if value is not None and hasattr(value, "detach"):
            found[spec.arg.name] = value.detach().numpy()
    return found


def pt2e_converters(program) -> dict:
    """The `custom_convert_map` entries for a PT2E-quantized program."""
    return {
        "quantize_per_tensor.default": _quantize_per_tensor,
        "dequantize_per_tensor.default": _dequantize_per_tensor,
        "dequantize_per_channel.default": _dequantize_per_channel(program_constants(program)),
    }


def is_pt2e_quantized(program) -> bool:
    """Whether the program holds `quantized_decomposed` operators (a PT2E-quantized model)."""
    return any(node.op == "call_function" and getattr(node.target, "namespace", None) == QUANTIZED_NAMESPACE
               for node in program.graph.nodes)
