"""int8 sub-networks whose weights are slices of ONE int8 tensor per super-network layer.

Post-training quantization (tvmnas.quant.quantize) folds each BatchNorm into its conv's weights
before quantizing them, so two configurations with their own recalibrated BatchNorms would get
different int8 weights. Here the shared conv and linear tensors are quantized once, whole
(`quantize_shared`: int8 per output channel, scale ``max|w[c]| / 127`` over the full super-network
tensor), and each configuration folds its BatchNorm into what is small and its own:

- the per-channel weight scale: ``scale[c] * g[c]`` with ``g = gamma / sqrt(var + eps)``, so the
  requantization multiplier ``in_scale * scale[c] * g[c] / out_scale`` carries the BatchNorm;
- the int32 bias: ``(beta - mean * g) / (in_scale * scale[c] * g[c])``, rounded.

The int8 values are untouched, so every configuration's weight is a nested slice of the shared
int8 tensor, bit for bit, and the compiler stores it once (passes/share_weights.py). A negative
``g[c]`` gives a negative scale, hence a negative multiplier (``quantize_multiplier`` of a negative
real, as TFLite's ``QuantizeMultiplier`` computes it); the integer reference and the C
``tvmnas_requantize`` compute the same products and roundings for either sign. A ``g[c]`` of zero
(a channel the BatchNorm switches off) has no such form and is refused.

Activations are calibrated per configuration on the same calibration samples, so each
configuration has its own activation and output quantization; the input's is the same for all
(one range of the same samples).
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import torch
from torch import nn

from tvmnas.errors import CalibrationError, QuantizationError
from tvmnas.passes.share_weights import find_slice, share_weights
from tvmnas.quant.quantize import (
    _activation_ranges,
    insert_qdq,
    load_calibration,
    prepare_float_graph,
    weight_qparams,
)

INPUT_NAME = "input"


@dataclass(frozen=True)
class SharedInt8:
    """The super-network's conv and linear tensors quantized once: int8 values and the float32
    scale of each output channel (axis 0), by parameter name."""

    values: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]


def quantize_shared(shared: Mapping[str, np.ndarray]) -> SharedInt8:
    """Every 2-D (linear) and 4-D (conv) tensor of `shared` as symmetric int8 per output channel."""
    values, scales = {}, {}
    for name in sorted(shared):
        w = np.asarray(shared[name], np.float32)
        if w.ndim in (2, 4):
            values[name], scales[name] = weight_qparams(w, 0)
    return SharedInt8(values, scales)


def _bn_gain(bn: nn.BatchNorm2d) -> np.ndarray:
    assert bn.running_var is not None
    return (bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()


def _fold(net: nn.Module) -> tuple[nn.Module, dict[str, np.ndarray]]:
    """A float copy of `net` with each Conv2d -> BatchNorm2d pair of an nn.Sequential fused into the
    conv (weights and bias, for calibration), and each fused conv's BatchNorm gain by its name."""
    folded = copy.deepcopy(net).eval()
    gains: dict[str, np.ndarray] = {}
    for prefix, module in list(folded.named_modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                gains[f"{prefix}.{name}" if prefix else name] = _bn_gain(bn)
                setattr(module, name, torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return folded, gains


def _export(net: nn.Module, input_shape: tuple[int, ...], path: Path) -> onnx.ModelProto:
    """The TorchScript ONNX export (opset 17), parameters kept under their module names."""
    torch.onnx.export(net, (torch.zeros(1, *input_shape),), str(path), dynamo=False, opset_version=17,
                      input_names=[INPUT_NAME], output_names=["output"], do_constant_folding=True)
    return onnx.load(str(path))


def layer_weights(net: nn.Module) -> dict[str, np.ndarray]:
    """The float weight of every Conv2d and Linear of `net`, by module name."""
    return {name: m.weight.detach().numpy() for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def shared_slices(layers: Mapping[str, np.ndarray], shared: Mapping[str, np.ndarray], quantized: SharedInt8
                  ) -> dict[str, tuple[str, tuple[int, ...], np.ndarray]]:
    """For every layer weight (`layer_weights`) that is a nested slice of a shared float tensor:
    (that tensor's name, the slice's offsets, the same slice of its int8 tensor), by layer name."""
    candidates = {n: np.asarray(shared[n], np.float32) for n in quantized.values}
    found = {}
    for name, w in layers.items():
        match = find_slice(w, candidates)
        if match is not None:
            tensor, offsets = match
            window = tuple(slice(o, o + s) for o, s in zip(offsets, w.shape))
            found[name] = (tensor, offsets, np.ascontiguousarray(quantized.values[tensor][window]))
    return found


def shared_weight_overrides(layers: Mapping[str, np.ndarray], shared: Mapping[str, np.ndarray], quantized: SharedInt8,
                            gains: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """For every layer weight that is a nested slice of a shared tensor (`shared_slices`): its int8
    values and per-channel scales (the shared scales of its output channels, times the layer's
    BatchNorm gain where `gains` names one), by initializer name ('<layer>.weight'). Other layers
    are left to the post-training rule."""
    overrides = {}
    for name, (tensor, offsets, q) in shared_slices(layers, shared, quantized).items():
        scale = quantized.scales[tensor][offsets[0]:offsets[0] + q.shape[0]].astype(np.float64)
        if name in gains:
            gain = gains[name]
            dead = np.flatnonzero(gain == 0)
            if dead.size:
                raise QuantizationError(f"layer '{name}' channel {int(dead[0])}: BatchNorm gain gamma / sqrt(var + eps) "
                                        "is 0, which no int8 weight scale can carry (retrain or prune the channel)")
            scale = scale * gain
        overrides[f"{name}.weight"] = (q, scale.astype(np.float32))
    return overrides


def check_calibration(data: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """`data` as float32 if it holds N >= 1 finite float samples of `input_shape`; CalibrationError if not."""
    if data.ndim != len(input_shape) + 1 or tuple(data.shape[1:]) != tuple(input_shape) or data.shape[0] < 1:
        expected = "(" + ", ".join(["N"] + [str(d) for d in input_shape]) + ")"
        raise CalibrationError(f"calibration array has shape {tuple(data.shape)}; expected {expected}, N >= 1")
    if not np.issubdtype(data.dtype, np.floating) or not np.all(np.isfinite(data)):
        raise CalibrationError(f"calibration array must be finite floats, got {data.dtype}")
    return data.astype(np.float32)


def quantize_subnetwork(net: nn.Module, shared: Mapping[str, np.ndarray], quantized: SharedInt8,
                        input_shape: tuple[int, ...], calibration: np.ndarray) -> onnx.ModelProto:
    """The QDQ ONNX model of one configuration: weights as slices of the shared int8 tensors, its
    BatchNorms in the weight scales and biases, activations calibrated on `calibration`."""
    data = check_calibration(load_calibration(calibration), input_shape)
    folded, gains = _fold(net)   # fusion keeps each conv's module name
    with tempfile.TemporaryDirectory(prefix="tvmnas-dynamic-") as tmp:
        model = _export(folded, input_shape, Path(tmp) / "float.onnx")
    weights = shared_weight_overrides(layer_weights(net), shared, quantized, gains)
    names = {t.name for t in model.graph.initializer}
    missing = sorted(set(weights) - names)
    if missing:
        raise QuantizationError(f"the ONNX export renamed weight '{missing[0]}': cannot attach its shared int8 values")
    model = prepare_float_graph(model)
    return insert_qdq(model, INPUT_NAME, lambda acts: _activation_ranges(model, acts, data, INPUT_NAME), weights)


def contiguous_weights(subnets: list[nn.Module], shared: Mapping[str, np.ndarray], quantized: SharedInt8
                       ) -> list[list[np.ndarray]]:
    """Per configuration, its int8 layer weights that are one contiguous block of the stored shared
    array (the bounding box of what all configurations read, as share_weights lays it out): the
    ones a SIMD micro-kernel, which reads a weight through a plain pointer, can read in place."""
    per_config = [{name: q for name, (_, _, q) in shared_slices(layer_weights(net), shared, quantized).items()}
                  for net in subnets]
    layout = share_weights(per_config, quantized.values)
    return [[a for name, a in slices.items() if (k, name) in layout.views and layout.views[(k, name)].contiguous]
            for k, slices in enumerate(per_config)]
