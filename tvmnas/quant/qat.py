"""Quantization-aware training: a float network rewritten as the int8 network the compiler builds.

:func:`prepare_qat` traces a float network (torch.fx) and groups its layers the way the quantizer
groups the exported ONNX graph (tvmnas.quant.quantize): a conv with the BatchNorm after it folded
in and a ReLU / ReLU6 after that fused as its output clamp; a linear or an add with a fused ReLU;
pools, flatten, global average pool, concat and a ReLU on its own. Each group is one integer
operator, and its output is one int8 tensor with its own range, except max / average pool,
flatten and a ReLU6 on its own, which keep their input's quantization (TFLite's rule).

The :class:`QATNetwork` it returns runs two ways:

- training (``.train()``): float ops on fake-quantized values (:mod:`tvmnas.quant.fake_quant`),
  per-channel symmetric weights of the folded conv, int32-grid biases, per-tensor asymmetric
  activations, straight-through gradients. BatchNorm is frozen: its running statistics are the
  trained float network's and only gamma and beta (through the fold) keep learning, so training
  and deployment compute the same folded weights.
- evaluation (``.eval()``): every operator runs as the integer reference runs it
  (:func:`tvmnas.quant.reference.run_op`, TFLite Micro's arithmetic: int32 accumulation,
  double-rounding requantization), on the int8 values the fake-quantized tensors hold. That is the
  arithmetic of the compiled C, so the evaluated accuracy is the deployed one.

:func:`export_qdq` writes the QDQ ONNX model the compiler takes: the float network with the folded
weights, exported to ONNX and quantized by the post-training quantizer's own
:func:`tvmnas.quant.quantize.insert_qdq` with the ranges learned here instead of calibrated ones.
"""

from __future__ import annotations

import io
import operator
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import fx, nn

from tvmnas.errors import QuantizationError
from tvmnas.quant.fake_quant import ActivationQuant, fake_quant_activation, fake_quant_bias, fake_quant_weight, weight_scale
from tvmnas.quant.qgraph import QGraph, QOp, QTensor, activation_range, ceil_mode_pads
from tvmnas.quant.quantize import bias_qparams, insert_qdq, prepare_float_graph, weight_qparams
from tvmnas.quant.reference import dequantize, quantize_input, run_op

INPUT = "input"
MARK_DOMAIN = "tvmnas.qat"


# ---------------------------------------------------------------------------------------------- ops


class QuantOp(nn.Module):
    """One integer operator of the network: its float (training / export) and integer forms."""

    kind = ""

    def float_forward(self, xs: list[torch.Tensor], in_scales: list[float]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__}: float form")

    def integer_op(self, name: str, ins: list[QTensor], out: QTensor) -> QOp:
        """The op as the integer reference reads it from the exported QDQ graph."""
        return QOp(self.kind, name, [t.name for t in ins], out.name, act=self.clamp(out), activation=None)

    def clamp(self, out: QTensor) -> tuple[int, int]:
        """The int8 range of the output: a fused ReLU / ReLU6 clamps as TFLite computes it."""
        return (-128, 127)


def _act_clamp(act: str | None, out: QTensor) -> tuple[int, int]:
    if act is None:
        return (-128, 127)
    return activation_range(act.upper(), 0.0, 6.0 if act == "relu6" else None, out.scale, out.zero_point)


def _apply_act(x: torch.Tensor, act: str | None) -> torch.Tensor:
    if act == "relu":
        return F.relu(x)
    if act == "relu6":
        return F.relu6(x)
    return x


class _WeightedOp(QuantOp):
    """A conv or dense layer: per-channel int8 weights, int32 bias and a fused ReLU / ReLU6."""

    act: str | None

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (weight, bias) as deployed."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The layer's float op on given weight and bias."""
        raise NotImplementedError

    def attrs(self) -> dict:
        """The integer reference's attributes of the op."""
        return {}

    def float_forward(self, xs: list[torch.Tensor], in_scales: list[float]) -> torch.Tensor:
        w, b = self.folded()
        return _apply_act(self.apply(xs[0], fake_quant_weight(w), fake_quant_bias(b, in_scales[0], weight_scale(w))),
                          self.act)

    def clamp(self, out: QTensor) -> tuple[int, int]:
        return _act_clamp(self.act, out)

    def integer_op(self, name: str, ins: list[QTensor], out: QTensor) -> QOp:
        w, b = (t.detach().numpy() for t in self.folded())
        q, ws = weight_qparams(w, 0)
        bq, _ = bias_qparams(b, ins[0].scale, ws)
        return QOp(self.kind, name, [ins[0].name], out.name, q, ws, bq, self.clamp(out), None, self.attrs())


class QConv(_WeightedOp):
    """Conv2d with the BatchNorm after it folded in (running statistics) and a fused ReLU / ReLU6."""

    kind = "conv"

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, act: str | None) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise QuantizationError(f"conv {conv} pads with '{conv.padding_mode}' / '{conv.padding}'; "
                                    "int8 convolutions take explicit zero padding")
        self.conv, self.bn, self.act = conv, bn, act

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (weight, bias) of the conv with the BatchNorm folded in, as deployed."""
        w = self.conv.weight
        b = self.conv.bias if self.conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        if self.bn is not None:
            k = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
            w = w * k.reshape(-1, 1, 1, 1)
            b = (b - self.bn.running_mean) * k + self.bn.bias
        return w, b

    def apply(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)

    def attrs(self) -> dict:
        c = self.conv
        ph, pw = c.padding
        return {"strides": tuple(c.stride), "pads": (ph, pw, ph, pw), "dilations": tuple(c.dilation), "group": c.groups}


class QLinear(_WeightedOp):
    """Linear with a fused ReLU."""

    kind = "dense"

    def __init__(self, linear: nn.Linear, act: str | None) -> None:
        super().__init__()
        self.linear, self.act = linear, act

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (weight, bias) as deployed."""
        w = self.linear.weight
        return w, self.linear.bias if self.linear.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)

    def apply(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w, b)


class QAdd(QuantOp):
    """Element-wise add with a fused ReLU / ReLU6."""

    kind = "add"

    def __init__(self, act: str | None) -> None:
        super().__init__()
        self.act = act

    def float_forward(self, xs: list[torch.Tensor], in_scales: list[float]) -> torch.Tensor:
        return _apply_act(xs[0] + xs[1], self.act)

    def clamp(self, out: QTensor) -> tuple[int, int]:
        return _act_clamp(self.act, out)


class QPool(QuantOp):
    """Max or average pooling (the output keeps the input's quantization)."""

    def __init__(self, pool: nn.MaxPool2d | nn.AvgPool2d) -> None:
        super().__init__()
        self.kind = "maxpool" if isinstance(pool, nn.MaxPool2d) else "avgpool"
        pair = nn.modules.utils._pair
        self.kernel, self.stride, self.padding = pair(pool.kernel_size), pair(pool.stride), pair(pool.padding)
        self.ceil_mode = bool(pool.ceil_mode)
        if self.kind == "maxpool" and pair(pool.dilation) != (1, 1):
            raise QuantizationError(f"{pool} uses dilation; not supported in int8")
        if self.kind == "avgpool" and pool.count_include_pad and any(self.padding):
            raise QuantizationError(f"{pool} counts padding (count_include_pad=True); TFLite's int8 average "
                                    "pool does not")

    def float_forward(self, xs: list[torch.Tensor], in_scales: list[float]) -> torch.Tensor:
        if self.kind == "maxpool":
            return F.max_pool2d(xs[0], self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode)
        return F.avg_pool2d(xs[0], self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode,
                            count_include_pad=False)

    def integer_op(self, name: str, ins: list[QTensor], out: QTensor) -> QOp:
        ph, pw = self.padding
        pads = ceil_mode_pads(ins[0].shape, out.shape, self.kernel, self.stride, (ph, pw, ph, pw))
        attrs = {"kernel": self.kernel, "strides": self.stride, "pads": pads}
        return QOp(self.kind, name, [ins[0].name], out.name, act=(-128, 127), activation="NONE", attrs=attrs)


class QMean(QuantOp):
    """Global average pooling to 1x1 (ONNX GlobalAveragePool)."""

    kind = "mean"

    def float_forward(self, xs: list[torch.Tensor], in_scales: list[float]) -> torch.Tensor:
        return F.adaptive_avg_pool2d(xs[0], 1)

    def integer_op(self, name: str, ins: list[QTensor], out: QTensor) -> QOp:
        return QOp("mean", name, [ins[0].name], out.name, act=(-128, 127), attrs={"axes": (2, 3), "keepdims": True})


class QFlatten(QuantOp):
    """Flatten from dimension 1 (the values and their quantization unchanged)."""

    kind = "reshape"

    def float_forward(self, xs: list[torch.Tensor], in_scales: list[float]) -> torch.Tensor:
        return torch.flatten(xs[0], 1)


class QRelu(QuantOp):
    """A ReLU that follows no conv, linear or add (own quantization) or a ReLU6 (the input's)."""

    kind = "relu"

    def __init__(self, act: str) -> None:
        super().__init__()
        self.act = act

    def float_forward(self, xs: list[torch.Tensor], in_scales: list[float]) -> torch.Tensor:
        return _apply_act(xs[0], self.act)

    def clamp(self, out: QTensor) -> tuple[int, int]:
        return _act_clamp(self.act, out)


class QConcat(QuantOp):
    """Concatenation along channels (inputs requantized to the output's quantization)."""

    kind = "concat"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def float_forward(self, xs: list[torch.Tensor], in_scales: list[float]) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)

    def integer_op(self, name: str, ins: list[QTensor], out: QTensor) -> QOp:
        return QOp("concat", name, [t.name for t in ins], out.name, act=(-128, 127), attrs={"axis": self.dim % 4})


# ---------------------------------------------------------------------------------------------- network


@dataclass(frozen=True)
class Step:
    """One operator: `op` (a key of QATNetwork.ops) reads `inputs` and writes `output` (value names);
    `quant` is its output's own ActivationQuant (a key of QATNetwork.quants), or None where the output
    keeps its input's quantization."""

    op: str
    inputs: tuple[str, ...]
    output: str
    quant: str | None
    shape: tuple[int, ...]  # the output's shape for one input (batch 1)


class _Mark(torch.autograd.Function):
    """Identity that exports as a marker node naming the activation (removed after export)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: int) -> torch.Tensor:  # noqa: ANN001
        return x.clone()

    @staticmethod
    def symbolic(g, x, index: int):  # noqa: ANN001, ANN205
        out = g.op(f"{MARK_DOMAIN}::Activation", x, index_i=index)
        out.setType(x.type())
        return out


class QATNetwork(nn.Module):
    """The int8 network of a float one: steps in execution order over named values (see the module
    docstring for its training and evaluation forms)."""

    def __init__(self, ops: dict[str, QuantOp], steps: list[Step], input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.ops = nn.ModuleDict(ops)
        self.steps = steps
        self.input_shape = tuple(input_shape)
        self.quants = nn.ModuleDict({INPUT: ActivationQuant(), **{s.quant: ActivationQuant() for s in steps if s.quant}})
        self._exporting = False

    # -- quantization of each value --------------------------------------------------------------
    def value_quant(self) -> dict[str, str]:
        """Each value's ActivationQuant key (its own, or the one it inherits)."""
        owner = {INPUT: INPUT}
        for s in self.steps:
            owner[s.output] = s.quant or owner[s.inputs[0]]
        return owner

    def set_observe(self, mode: str, enabled: bool = True) -> None:
        """Range tracking of every activation ('calibrate', 'ema' or 'frozen'), fake quantization on/off."""
        for q in self.quants.values():
            q.observe, q.enabled = mode, enabled

    def _qtensor(self, value: str, quant: str, shape: tuple[int, ...]) -> QTensor:
        scale, zp = self.quants[quant].qparams()
        return QTensor(value, shape, np.float32(scale), int(zp))

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized float ops when training or calibrating (or exporting), the integer operators
        when evaluating; the output is the dequantized int8 output tensor either way."""
        if self.training or self._exporting or not all(q.enabled for q in self.quants.values()) \
                or any(q.observe == "calibrate" for q in self.quants.values()):
            return self._float_forward(x)
        return self._integer_forward(x)

    def _float_forward(self, x: torch.Tensor) -> torch.Tensor:
        owner = self.value_quant()
        env = {INPUT: self._finish(x if self._exporting else self.quants[INPUT](x), 0)}
        for i, s in enumerate(self.steps, start=1):
            op = self.ops[s.op]
            in_scales = [float(self.quants[owner[v]].qparams()[0]) for v in s.inputs]
            y = op.float_forward([env[v] for v in s.inputs], in_scales)
            quant = self.quants[owner[s.output]]
            if self._exporting:
                pass
            elif s.quant is not None:  # tracks the range (training, calibration), then fake-quantizes
                clamp = op.clamp(self._qtensor(s.output, s.quant, s.shape))
                y = quant(y, clamp)
            elif quant.enabled:  # keeps the input's quantization: back on its grid (average pool), clamped (ReLU6)
                scale, zp = quant.qparams()
                y = fake_quant_activation(y, float(scale), zp, op.clamp(self._qtensor(s.output, owner[s.output], s.shape)))
            env[s.output] = self._finish(y, i)
        return env[self.steps[-1].output]

    def _finish(self, y: torch.Tensor, index: int) -> torch.Tensor:
        return _Mark.apply(y, index) if self._exporting else y

    @torch.no_grad()
    def run_int8(self, x: np.ndarray) -> np.ndarray:
        """The int8 output for int8 inputs (NCHW), every operator as the integer reference runs it."""
        owner = self.value_quant()
        n = x.shape[0]
        tensors = {INPUT: self._qtensor(INPUT, INPUT, (n, *self.input_shape))}
        for s in self.steps:
            tensors[s.output] = self._qtensor(s.output, owner[s.output], (n, *s.shape[1:]))
        graph = QGraph([], tensors, [INPUT], [self.steps[-1].output], [INPUT], ["output"])
        env = {INPUT: np.asarray(x, np.int8)}
        for s in self.steps:
            op = self.ops[s.op].integer_op(s.op, [tensors[v] for v in s.inputs], tensors[s.output])
            env[s.output] = run_op(graph, op, [env[v] for v in s.inputs])
        return env[self.steps[-1].output]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float32 inputs as the int8 values the deployed model takes (ONNX QuantizeLinear)."""
        return quantize_input(x, self._qtensor(INPUT, INPUT, tuple(x.shape)))

    def output_qtensor(self) -> QTensor:
        """Scale and zero point of the int8 output."""
        last = self.steps[-1]
        return self._qtensor(last.output, self.value_quant()[last.output], last.shape)

    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.run_int8(self.quantize_input(x.detach().cpu().numpy()))
        return torch.from_numpy(dequantize(y, self.output_qtensor())).to(x.device)


# ---------------------------------------------------------------------------------------------- prepare


def _kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        m = modules[node.target]
        for cls, kind in ((nn.Conv2d, "conv"), (nn.BatchNorm2d, "bn"), (nn.ReLU6, "relu6"), (nn.ReLU, "relu"),
                          (nn.Linear, "linear"), (nn.Identity, "identity"), (nn.MaxPool2d, "pool"),
                          (nn.AvgPool2d, "pool"), (nn.Flatten, "flatten"), (nn.AdaptiveAvgPool2d, "gap")):
            if isinstance(m, cls):
                return kind
        return None
    if node.op == "call_function":
        return {operator.add: "add", torch.add: "add", torch.cat: "cat", torch.flatten: "flatten",
                torch.relu: "relu", F.relu: "relu", F.relu6: "relu6"}.get(node.target)
    if node.op == "call_method":
        return {"flatten": "flatten", "relu": "relu"}.get(node.target)
    return None


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return getattr(node.target, "__name__", str(node.target))


def prepare_qat(model: nn.Module, input_shape: tuple[int, ...]) -> QATNetwork:
    """The QATNetwork of a float network (its modules are shared, not copied: copy first to keep the
    float one). Raises QuantizationError naming a layer with no int8 form."""
    model = model.eval()
    traced = fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    _merge_repeated_activations(traced, modules)
    nodes = list(traced.graph.nodes)
    value: dict[fx.Node, str] = {}
    consumed: set[fx.Node] = set()
    ops: dict[str, QuantOp] = {}
    raw_steps: list[tuple[str, tuple[str, ...], str | None, fx.Node]] = []  # op, inputs, own quant?, last node
    output_node = nodes[-1]

    def sole_user(node: fx.Node, kinds: tuple[str, ...]) -> fx.Node | None:
        users = list(node.users)
        if len(users) == 1 and users[0] is not output_node and _kind(users[0], modules) in kinds:
            return users[0]
        return None

    def fuse_act(node: fx.Node) -> tuple[str | None, fx.Node]:
        act = sole_user(node, ("relu", "relu6"))
        if act is None:
            return None, node
        consumed.add(act)
        return _kind(act, modules), act

    def add_step(node: fx.Node) -> None:
        """Group `node` (with the BatchNorm and activation it fuses) into one step."""
        if node.op in ("output", "get_attr") or node in consumed:
            return
        kind = _kind(node, modules)
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if kind == "identity":
            value[node] = value[args[0]]
            return
        name = node.name
        if kind == "conv":
            bn_node = sole_user(node, ("bn",))
            last = node
            bn = None
            if bn_node is not None:
                consumed.add(bn_node)
                bn, last = modules[bn_node.target], bn_node
            act, last = fuse_act(last)
            ops[name] = QConv(modules[node.target], bn, act)
        elif kind == "linear":
            act, last = fuse_act(node)
            ops[name] = QLinear(modules[node.target], act)
        elif kind == "add" and len(args) == 2 and not node.kwargs:
            act, last = fuse_act(node)
            ops[name] = QAdd(act)
        elif kind == "pool":
            ops[name], last = QPool(modules[node.target]), node
        elif kind == "gap" and nn.modules.utils._pair(modules[node.target].output_size) == (1, 1):
            ops[name], last = QMean(), node
        elif kind == "flatten" and _flatten_dim(node) == 1:
            ops[name], last = QFlatten(), node
        elif kind in ("relu", "relu6"):
            ops[name], last = QRelu(kind), node
        elif kind == "cat":
            tensors = node.args[0]
            args = list(tensors)
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            ops[name], last = QConcat(int(dim)), node
        else:
            label = node.target if node.op == "call_module" else node.name
            raise QuantizationError(f"layer '{label}' ({_describe(node, modules)}) has no int8 form in "
                                    "quantization-aware training")
        own = None if ops[name].kind in ("maxpool", "avgpool", "reshape") or kind == "relu6" else name
        raw_steps.append((name, tuple(value[a] for a in args), own, last))
        value[last] = name

    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise QuantizationError(f"the network has {len(placeholders)} inputs; quantization-aware training takes one")
    for node in nodes:
        if node.op in ("placeholder",):
            value[node] = INPUT
            continue
        try:
            add_step(node)
        except QuantizationError as err:
            label = node.target if node.op == "call_module" else node.name
            raise QuantizationError(str(err) if str(err).startswith("layer '") else f"layer '{label}': {err}") from None
    result = output_node.args[0]
    if not isinstance(result, fx.Node) or value.get(result) != raw_steps[-1][0]:
        raise QuantizationError("the network's output is not its last layer's; quantization-aware training "
                                "takes one output computed last")
    shapes = _output_shapes(traced, input_shape, {last: name for name, _, _, last in raw_steps})
    steps = [Step(name, inputs, name, own, shapes[name]) for name, inputs, own, _ in raw_steps]
    return QATNetwork(ops, steps, input_shape)


def _merge_repeated_activations(traced: fx.GraphModule, modules: dict[str, nn.Module]) -> None:
    """One ReLU (ReLU6) node per input: the ONNX exporter merges repeated ones (a DARTS cell's edges
    each begin with a ReLU of the same state), after which the layer before it fuses the ReLU; the
    QAT network must group its steps the same way, or it rounds twice where the export rounds once."""
    order = {n: i for i, n in enumerate(traced.graph.nodes)}
    for node in list(traced.graph.nodes):
        first: dict[str, fx.Node] = {}
        for user in sorted(node.users, key=order.__getitem__):
            kind = _kind(user, modules)
            if kind not in ("relu", "relu6") or user.args[:1] != (node,) or len(user.args) != 1 or user.kwargs:
                continue
            if kind in first:
                user.replace_all_uses_with(first[kind])
                traced.graph.erase_node(user)
            else:
                first[kind] = user
    traced.recompile()


def _flatten_dim(node: fx.Node) -> int:
    if node.op == "call_module":
        return 1 if node.graph.owning_module.get_submodule(node.target).start_dim == 1 else 0
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    return int(start)


def _output_shapes(traced: fx.GraphModule, input_shape: tuple[int, ...], names: dict[fx.Node, str]) -> dict[str, tuple[int, ...]]:
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(traced).propagate(torch.zeros(1, *input_shape))
    return {name: tuple(node.meta["tensor_meta"].shape) for node, name in names.items()}


# ---------------------------------------------------------------------------------------------- export


def export_qdq(net: QATNetwork, path: Path | None = None) -> onnx.ModelProto:
    """The int8 QDQ ONNX model of a trained QATNetwork (written to `path` when given).

    The float network with BatchNorm folded (the weights the network quantizes) is exported with
    torch's ONNX exporter, each activation marked; the marks name the learned range of each ONNX
    tensor, and the post-training quantizer inserts QuantizeLinear / DequantizeLinear with them, so
    weights, biases, scales and zero points are chosen by one rule for both paths.
    """
    owner = net.value_quant()
    ranges_by_index = {0: net.quants[INPUT].range()}
    for i, s in enumerate(net.steps, start=1):
        ranges_by_index[i] = net.quants[owner[s.output]].range()
    was_training = net.training
    net.eval()
    net._exporting = True
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, *net.input_shape),), buf, dynamo=False, opset_version=17,
                              input_names=[INPUT], output_names=["logits"], custom_opsets={MARK_DOMAIN: 1})
    finally:
        net._exporting = False
        net.train(was_training)
    model = onnx.load_from_string(buf.getvalue())
    ranges = _remove_marks(model, ranges_by_index)
    model = prepare_float_graph(model)

    def lookup(names: list[str]) -> dict[str, tuple[float, float]]:
        missing = [n for n in names if n not in ranges]
        if missing:
            raise QuantizationError(f"exported tensor '{missing[0]}' has no learned range (an ONNX node the "
                                    "network's layers do not account for)")
        return {n: ranges[n] for n in names}

    qdq = insert_qdq(model, INPUT, lookup)
    if path is not None:
        Path(path).write_bytes(qdq.SerializeToString())
    return qdq


def _remove_marks(model: onnx.ModelProto, ranges_by_index: dict[int, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Drop the marker nodes (their consumers read the marked tensor; a marked graph output keeps its
    name) and return each marked tensor's range by its ONNX name."""
    g = model.graph
    source: dict[str, str] = {}  # marker output -> the tensor it marks
    ranges: dict[str, tuple[float, float]] = {}

    def resolve(name: str) -> str:
        while name in source:
            name = source[name]
        return name

    kept = []
    for node in g.node:
        if node.domain == MARK_DOMAIN:
            source[node.output[0]] = node.input[0]
            ranges[resolve(node.input[0])] = ranges_by_index[next(a.i for a in node.attribute if a.name == "index")]
        else:
            kept.append(node)
    rename = {name: resolve(name) for name in source}
    for out in g.output:  # the producer of a graph output writes it under the output's name
        if out.name in rename:
            marked = rename[out.name]
            rename = {k: (out.name if v == marked else v) for k, v in rename.items()}
            rename[marked] = out.name
            rename.pop(out.name)
            ranges[out.name] = ranges.pop(marked)
    for node in kept:
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name in rename:
                    field[i] = rename[name]
    del g.node[:]
    g.node.extend(kept)
    del g.value_info[:]
    kept_opsets = [o for o in model.opset_import if o.domain != MARK_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept_opsets)
    return ranges
