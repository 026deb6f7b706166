"""Fold an ONNX graph's shape arithmetic into initializers before TVM imports it.

torch.onnx.export (TorchScript exporter, the one tvmnas uses) writes the pads of `F.pad` /
`nn.ZeroPad2d` and the bounds of `chunk` as small integer subgraphs (Shape, Gather, Concat,
ConstantOfShape, Reshape, Slice, Cast, Div, ...) that depend only on constants and static shapes.
TVM 0.27's ONNX importer turns them into Relax computations instead of constants, then refuses
the Pad ("Dynamic pads are not supported yet") or fails inside Slice on the symbolic bounds. Here
each such node is evaluated once (onnx's reference evaluator) and replaced by its value.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

# Nodes whose outputs are integer or bool tensors up to this many elements are folded: index and
# shape arithmetic, never weights (folding float weights would also undo QDQ structure).
MAX_FOLDED_ELEMENTS = 4096
_INTEGER_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
    onnx.TensorProto.BOOL,
}


def fold_shape_arithmetic(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `proto` in which every node computing a small integer tensor from constants and
    static shapes is replaced by an initializer holding its value; Constant nodes left without
    readers are removed. A model with nothing to fold comes back as it was (the same object)."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    known = {t.name: t for t in proto.graph.initializer}
    folded: dict[str, np.ndarray] = {}  # outputs of folded nodes
    arrays: dict[str, np.ndarray] = {}  # every constant read so far

    def value(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(known[name])
        return arrays[name]

    graph_outputs = {o.name for o in proto.graph.output}
    removed = set()
    for i, node in enumerate(proto.graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            tensor = _constant_tensor(node)
            if tensor is not None:
                known[node.output[0]] = tensor
            continue
        out = None if graph_outputs.intersection(node.output) else _fold(node, types, known, value, opset)
        if out is None:
            continue
        for name, array in zip(node.output, out):
            folded[name] = arrays[name] = array
            known[name] = numpy_helper.from_array(array, name)
        removed.add(i)
    if not removed:
        return proto
    return _rebuild(proto, removed, folded)


def _fold(node: onnx.NodeProto, types: dict, known: dict, value, opset: int) -> list[np.ndarray] | None:
    """The values of `node`'s outputs if it can and should be folded, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type.startswith("Random") or node.op_type == "Multinomial":
        return None
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    for name in node.output:
        t = types.get(name)
        if t is None or t.elem_type not in _INTEGER_TYPES:
            return None
    if node.op_type == "Shape":
        shape = _static_shape(types.get(node.input[0]))
        if shape is None:
            return None
        attrs = {a.name: a.i for a in node.attribute}
        return [np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))], dtype=np.int64)]
    if node.op_type == "Size":
        shape = _static_shape(types.get(node.input[0]))
        return None if shape is None else [np.array(int(np.prod(shape)), dtype=np.int64)]
    inputs = [n for n in node.input if n]
    if not all(n in known for n in inputs):
        return None
    if any(int(np.prod(known[n].dims)) > MAX_FOLDED_ELEMENTS for n in inputs):
        return None
    try:
        outputs = ReferenceEvaluator(node, opsets={"": opset}).run(None, {n: value(n) for n in inputs})
    except Exception:  # an operator onnx's reference cannot run: leave the node to the importer
        return None
    outputs = [np.asarray(o) for o in outputs]
    if any(o.size > MAX_FOLDED_ELEMENTS for o in outputs):
        return None
    return outputs


def _static_shape(tensor_type) -> list[int] | None:
    if tensor_type is None or not tensor_type.HasField("shape"):
        return None
    dims = tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return [d.dim_value for d in dims]


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """A Constant node's value as a TensorProto named after its output (None for sparse or
    string constants, which are no shape arithmetic)."""
    for attr in node.attribute:
        if attr.name == "value":
            array = numpy_helper.to_array(attr.t)
        elif attr.name == "value_int":
            array = np.array(attr.i, dtype=np.int64)
        elif attr.name == "value_ints":
            array = np.array(list(attr.ints), dtype=np.int64)
        elif attr.name == "value_float":
            array = np.array(attr.f, dtype=np.float32)
        elif attr.name == "value_floats":
            array = np.array(list(attr.floats), dtype=np.float32)
        else:
            return None
        return numpy_helper.from_array(array, node.output[0])
    return None


def _rebuild(proto: onnx.ModelProto, removed: set[int], folded: dict[str, np.ndarray]) -> onnx.ModelProto:
    """`proto` without the folded nodes, their outputs as initializers, and without the Constant
    nodes whose output is then unread."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    nodes = [n for i, n in enumerate(proto.graph.node) if i not in removed]
    needed = {o.name for o in graph.output}
    kept, dropped = [], set()
    for node in reversed(nodes):  # last to first, so a reader is seen before what it reads
        if any(o in needed for o in node.output) or not _removable(node):
            kept.append(node)
            needed.update(node.input)
        else:
            dropped.update(node.output)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(folded[n], n) for n in sorted(folded.keys() & needed))
    value_info = [v for v in graph.value_info if v.name not in folded and v.name not in dropped]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    return out


def _removable(node: onnx.NodeProto) -> bool:
    """Only Constants go when nothing reads them (the folded nodes leave some so): any other
    node the model carries stays for the importer, read or not."""
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")
