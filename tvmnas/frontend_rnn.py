"""Import recurrent layers (LSTM, GRU, RNN) as one looping kernel per layer.

TVM 0.27's importers do not give the MCU path what it needs: `from_onnx` has no LSTM/GRU/RNN
converter at all, and `from_exported_program` first runs torch's default decompositions, which
unroll every time step into its own matmuls and gate arithmetic (several kernels per step; its
own aten.lstm converter, never reached then, unrolls too and takes one layer only). Here each
layer becomes one `call_tir` of a `tvmnas.rnn_kernels` PrimFunc that loops over time itself.

Supported: batch 1, fixed sequence length, any number of layers, forward, reverse (ONNX) and
bidirectional, PyTorch batch_first either way and ONNX layout 0 or 1, default activations.
ONNX GRU with linear_before_reset 0 or 1. Anything else (peepholes, clip, input_forget, custom
activations, sequence_lens, LSTM proj_size) is refused with one line naming the operator and node.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from tvm import relax

from tvmnas.errors import UnsupportedOperatorError
from tvmnas.rnn_kernels import GATES, ONNX_ORDER, TORCH_ORDER, RecurrentLayer, recurrent_kernel


def _dims(expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape.values)


def _emit_layer(bb: relax.BlockBuilder, layer: RecurrentLayer, seq, w, r, b, h0, c0=None) -> tuple:
    """Emit one layer's kernel call: returns (Y (T, D*H), Hn (D, H), Cn (D, H) or None)."""
    gv = bb.add_func(recurrent_kernel(layer), f"{layer.kind}_layer")
    state = relax.TensorType((layer.directions, layer.hidden_size), "float32")
    outs = [relax.TensorType((layer.steps, layer.directions * layer.hidden_size), "float32"), state]
    args = [seq, w, r, b, h0]
    if layer.kind == "lstm":
        args.append(c0)
        outs.append(state)
    call = bb.emit(relax.call_tir(gv, args, outs))
    items = [bb.emit(relax.TupleGetItem(call, i)) for i in range(len(outs))]
    return items[0], items[1], items[2] if layer.kind == "lstm" else None


def _zeros(shape: tuple[int, ...]) -> relax.Constant:
    return relax.const(np.zeros(shape, dtype="float32"))


# ---------------------------------------------------------------- PyTorch (aten.lstm/gru/rnn_*)

def _torch_converter(kind: str):
    def convert(node, importer) -> relax.Var:
        bb = importer.block_builder
        args = importer.retrieve_args(node)
        x, hx, params = args[0], args[1], list(args[2])
        has_biases, num_layers, bidirectional, batch_first = args[3], int(args[4]), bool(args[7]), bool(args[8])
        shape = _dims(x)
        n_dir = 2 if bidirectional else 1
        per_dir = 4 if has_biases else 2
        if len(shape) != 3:
            raise UnsupportedOperatorError(node.target.__name__, node.name, f"input of rank {len(shape)}, expected 3")
        batch, steps = (shape[0], shape[1]) if batch_first else (shape[1], shape[0])
        if batch != 1:
            raise UnsupportedOperatorError(node.target.__name__, node.name, f"batch {batch}, only batch 1 is supported")
        if len(params) != num_layers * n_dir * per_dir:  # LSTM proj_size adds a weight_hr per direction
            raise UnsupportedOperatorError(node.target.__name__, node.name,
                                           f"{len(params)} weights for {num_layers} layer(s), "
                                           f"expected {num_layers * n_dir * per_dir} (proj_size is not supported)")
        hidden = _dims(params[1])[1]
        h_all = hx[0] if kind == "lstm" else hx
        c_all = hx[1] if kind == "lstm" else None

        seq = bb.emit(relax.op.reshape(x, (steps, shape[2])))
        h_n, c_n = [], []
        for layer_index in range(num_layers):
            group = [params[(layer_index * n_dir + d) * per_dir:(layer_index * n_dir + d + 1) * per_dir]
                     for d in range(n_dir)]
            w = bb.emit(relax.op.stack([g[0] for g in group], axis=0))
            r = bb.emit(relax.op.stack([g[1] for g in group], axis=0))
            if has_biases:
                b = bb.emit(relax.op.stack([relax.op.concat([g[2], g[3]], axis=0) for g in group], axis=0))
            else:
                b = _zeros((n_dir, 2 * GATES[kind] * hidden))
            rows = (layer_index * n_dir, (layer_index + 1) * n_dir)

            def state(all_states):
                part = relax.op.strided_slice(all_states, axes=[0], begin=[rows[0]], end=[rows[1]])
                return bb.emit(relax.op.reshape(part, (n_dir, hidden)))

            layer = RecurrentLayer(kind, steps, _dims(seq)[1], hidden, n_dir, False, TORCH_ORDER[kind])
            seq, h, c = _emit_layer(bb, layer, seq, w, r, b, state(h_all), state(c_all) if c_all is not None else None)
            h_n.append(h)
            c_n.append(c)

        out_shape = (1, steps, n_dir * hidden) if batch_first else (steps, 1, n_dir * hidden)
        results = [bb.emit(relax.op.reshape(seq, out_shape))]
        for states in (h_n, c_n) if kind == "lstm" else (h_n,):
            stacked = bb.emit(relax.op.concat(states, axis=0)) if len(states) > 1 else states[0]
            results.append(bb.emit(relax.op.reshape(stacked, (num_layers * n_dir, 1, hidden))))
        return bb.emit(relax.Tuple(results))

    return convert


TORCH_RECURRENT_CONVERTERS = {
    "lstm.input": _torch_converter("lstm"),
    "gru.input": _torch_converter("gru"),
    "rnn_tanh.input": _torch_converter("rnn_tanh"),
    "rnn_relu.input": _torch_converter("rnn_relu"),
}


# ---------------------------------------------------------------- ONNX (LSTM, GRU, RNN nodes)

ONNX_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}


def _onnx_attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            if isinstance(value, bytes):
                return value.decode()
            if isinstance(value, list):
                return tuple(v.decode() if isinstance(v, bytes) else v for v in value)
            return value
    return default


def _onnx_kind(node) -> str:
    if node.op_type == "RNN":
        acts = _onnx_attr(node, "activations", ("Tanh",))
        return "rnn_relu" if acts[0] == "Relu" else "rnn_tanh"
    return node.op_type.lower()


def check_onnx_recurrent(proto) -> None:
    """Refuse, before import, an ONNX LSTM/GRU/RNN node this path cannot compile, naming it.

    (Checked here rather than in the converter: TVM's importer prints the inputs of a converter
    that raises to stdout, where the CLI's JSON goes.)"""
    if not any(n.op_type in ONNX_DEFAULT_ACTIVATIONS for n in proto.graph.node):
        return  # no shape inference for models without recurrent nodes
    shapes = _onnx_shapes(proto)
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in ONNX_DEFAULT_ACTIVATIONS:
            continue
        name = node.name or f"{node.op_type}_{i}"
        n_dir = 2 if _onnx_attr(node, "direction", "forward") == "bidirectional" else 1
        acts = _onnx_attr(node, "activations")
        allowed = [tuple(a for _ in range(n_dir) for a in ONNX_DEFAULT_ACTIVATIONS[node.op_type])]
        if node.op_type == "RNN":
            allowed.append(("Relu",) * n_dir)
        problems = []
        if acts is not None and tuple(acts) not in allowed:
            problems.append(f"activations {list(acts)} (only the defaults are supported)")
        if _onnx_attr(node, "clip") is not None:
            problems.append("clip (not supported)")
        if _onnx_attr(node, "input_forget", 0):
            problems.append("input_forget=1 (not supported)")
        if len(node.input) > 4 and node.input[4]:
            problems.append("sequence_lens (only a fixed sequence length is supported)")
        if node.op_type == "LSTM" and len(node.input) > 7 and node.input[7]:
            problems.append("peephole weights P (not supported)")
        x_shape = shapes.get(node.input[0], ())
        batch_axis = 0 if _onnx_attr(node, "layout", 0) else 1
        if len(x_shape) == 3 and x_shape[batch_axis] != 1:
            problems.append(f"batch {x_shape[batch_axis]}, only batch 1 is supported")
        if problems:
            raise UnsupportedOperatorError(node.op_type, name, "; ".join(problems))


def _onnx_shapes(proto) -> dict[str, tuple]:
    """Static shapes of the graph's values (0 for a dimension shape inference leaves unknown)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info]:
        shapes[info.name] = tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
    return shapes


def _onnx_convert(bb: relax.BlockBuilder, inputs, attr, op_type: str) -> relax.Var:
    x, w, r = inputs[0], inputs[1], inputs[2]
    n_dir, gates_h, in_size = _dims(w)
    hidden = int(attr["hidden_size"])
    kind = op_type.lower()
    if op_type == "RNN":
        first = attr.get("activations", (b"Tanh",))[0]
        kind = "rnn_relu" if (first.decode() if isinstance(first, bytes) else first) == "Relu" else "rnn_tanh"
    layout = int(attr.get("layout", 0))
    shape = _dims(x)
    steps, batch = (shape[1], shape[0]) if layout else (shape[0], shape[1])
    if batch != 1:  # check_onnx_recurrent refuses this before import where shapes are known
        raise UnsupportedOperatorError(op_type, attr["tvm_custom"]["name"], f"batch {batch}, only batch 1 is supported")
    direction = attr.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction

    def optional(index: int, shape_: tuple[int, ...]):
        given = inputs[index] if len(inputs) > index else None
        return bb.emit(relax.op.reshape(given, shape_)) if given is not None else _zeros(shape_)

    b = optional(3, (n_dir, 2 * gates_h))
    h0 = optional(5, (n_dir, hidden))
    c0 = optional(6, (n_dir, hidden)) if kind == "lstm" else None
    seq = bb.emit(relax.op.reshape(x, (steps, in_size)))
    layer = RecurrentLayer(kind, steps, in_size, hidden, n_dir, direction == "reverse", ONNX_ORDER[kind],
                           linear_before_reset=bool(attr.get("linear_before_reset", 0)))
    y, h, c = _emit_layer(bb, layer, seq, w, r, b, h0, c0)
    y_shape = (1, steps, n_dir, hidden) if layout else (steps, n_dir, 1, hidden)
    state_shape = (1, n_dir, hidden) if layout else (n_dir, 1, hidden)
    results = [bb.emit(relax.op.reshape(y, y_shape)), bb.emit(relax.op.reshape(h, state_shape))]
    if c is not None:
        results.append(bb.emit(relax.op.reshape(c, state_shape)))
    return bb.emit(relax.Tuple(results))


def _onnx_converter_class(op_type: str):
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    def impl(cls, bb, inputs, attr, params):
        return _onnx_convert(bb, inputs, attr, op_type)

    return type(op_type, (OnnxOpConverter,), {"_impl_v7": classmethod(impl)})


@contextmanager
def onnx_recurrent_converters() -> Iterator[None]:
    """Inside the block, TVM's `from_onnx` converts LSTM, GRU and RNN nodes with this module."""
    from tvm.relax.frontend.onnx import onnx_frontend

    stock = onnx_frontend._get_convert_map
    extra = {op: _onnx_converter_class(op) for op in ONNX_DEFAULT_ACTIVATIONS}

    def convert_map():
        return {**stock(), **extra}

    onnx_frontend._get_convert_map = convert_map
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = stock


# ---------------------------------------------------------------- PyTorch: keep the ops whole

TORCH_RECURRENT_OPS = ("lstm.input", "gru.input", "rnn_tanh.input", "rnn_relu.input")


def torch_import_options(program) -> tuple[object, dict]:
    """The program and extra `from_exported_program` arguments that keep recurrent ops whole.

    `from_exported_program` runs torch's default decompositions first, which unroll aten.lstm and
    friends into per-step matmuls. For a program holding one, decompose here with those ops left
    out, so `TORCH_RECURRENT_CONVERTERS` sees them; any other program is passed on unchanged.
    """
    import torch

    ops = [getattr(torch.ops.aten, name.split(".")[0]).input for name in TORCH_RECURRENT_OPS]
    if not any(node.op == "call_function" and node.target in ops for node in program.graph.nodes):
        return program, {}
    table = torch.export.default_decompositions()
    for op in ops:
        table.pop(op, None)
    return program.run_decompositions(table), {
        "custom_convert_map": TORCH_RECURRENT_CONVERTERS, "run_ep_decomposition": False,
    }


# ---------------------------------------------------------------- source layer names

KERNEL_HEADS = ("lstm_layer", "gru_layer", "rnn_tanh_layer", "rnn_relu_layer")


def torch_recurrent_sources(program) -> dict[tuple, list[str]]:
    """Source layer names of the recurrent kernels, keyed as `tvmnas.frontend.SourceLayers`:
    (kernel head, None, output shape (T, D*H)) -> ["<module path>.l<layer>", ...] in graph order."""
    sources: dict[tuple, list[str]] = {}
    for node in program.graph.nodes:
        kind = str(node.target).split(".")[1] if node.op == "call_function" and "." in str(node.target) else ""
        if f"{kind}.input" not in TORCH_RECURRENT_OPS:
            continue
        val = node.meta.get("val")
        out = val[0] if isinstance(val, (tuple, list)) else val
        if not hasattr(out, "shape") or len(out.shape) != 3:
            continue
        batch_first = bool(node.args[8]) if len(node.args) > 8 else False
        steps, width = (int(out.shape[1]) if batch_first else int(out.shape[0])), int(out.shape[2])
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else node.name
        for layer in range(int(node.args[4])):
            sources.setdefault((f"{kind}_layer", None, (steps, width)), []).append(f"{path}.l{layer}")
    return sources


def onnx_recurrent_sources(proto, shapes: dict[str, tuple]) -> dict[tuple, list[str]]:
    """As `torch_recurrent_sources`, for ONNX LSTM/GRU/RNN nodes (named by node name)."""
    sources: dict[tuple, list[str]] = {}
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in ONNX_DEFAULT_ACTIVATIONS or node.input[1] not in shapes:
            continue
        x_shape = shapes.get(node.input[0])
        if not x_shape or len(x_shape) != 3:
            continue
        n_dir = shapes[node.input[1]][0]
        steps = x_shape[1] if _onnx_attr(node, "layout", 0) else x_shape[0]
        width = n_dir * int(_onnx_attr(node, "hidden_size"))
        sources.setdefault((f"{_onnx_kind(node)}_layer", None, (steps, width)), []).append(node.name or f"{node.op_type}_{i}")
    return sources
