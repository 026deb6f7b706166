"""int8 models in the compile path: QOperator ONNX refused with a clear line, QDQ graphs rewritten
to integer kernels (passes/quantize_to_integer.py), and the quantization of the model's ends."""

from __future__ import annotations

import tvm
from tvm import relax

from tvmnas.errors import UnsupportedOperatorError
from tvmnas.passes.quantize_to_integer import QuantizeToInteger, QuantParams, io_quantization

# ONNX's "QOperator" form: integer operators with their scales as inputs. TVM's ONNX importer has
# none of them; the same model exported in QDQ form (QuantizeLinear/DequantizeLinear around float
# operators) compiles.
QOPERATOR_OPS = (
    "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearSoftmax", "QLinearLeakyRelu",
    "QLinearReduceMean", "ConvInteger", "MatMulInteger",
)


def check_not_qoperator(proto) -> None:
    """Refuse a QOperator-form ONNX model, naming its first such node and what to export instead."""
    for i, node in enumerate(proto.graph.node):
        if node.op_type in QOPERATOR_OPS:
            raise UnsupportedOperatorError(
                node.op_type, node.name or f"{node.op_type}_{i}",
                "QOperator ONNX is not supported; export the model in QDQ form "
                "(onnxruntime quantize_static(..., quant_format=QuantFormat.QDQ))",
            )


def has_quantize(mod: tvm.IRModule) -> bool:
    """Whether `main` quantizes anything (a QDQ model) rather than being float throughout."""
    quantize = tvm.ir.Op.get("relax.quantize")
    found = []

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(quantize):
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return bool(found)


def integer_model(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, QuantParams] | None]:
    """A QDQ model rewritten to integer kernels, with the quantization of its int8 input and output;
    a float model unchanged, with None."""
    if not has_quantize(mod):
        return mod, None
    return QuantizeToInteger()(mod), io_quantization(mod)
