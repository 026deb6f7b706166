"""The .tflite test set: int8 and float32 .tflite files written without TensorFlow or network access.

Every network of :mod:`tvmnas.quant.int8_nets` (conv with SAME, VALID and PAD-op padding, depthwise
conv, fully connected, residual add, max and average pool, mean, reshape/flatten, fused and
stand-alone ReLU / ReLU6, per-channel weights), plus ``concat``: two branches (one a depthwise
conv with depth multiplier 2) concatenated on channels, the inputs sharing the concatenation's
quantization as TFLite converters arrange it (TFLite Micro's int8 concatenation only copies).
Each is seeded and quantized by :func:`tvmnas.quant.quantize_model`, then written by
:mod:`tvmnas.quant.tflite_writer`: ``NAME.tflite`` (int8) and ``NAME.float.tflite`` (the same
network with every tensor dequantized). ``scripts/make_tflite_models.py`` writes them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tvmnas.quant.int8_nets import INT8_NETS, write_int8_net
from tvmnas.quant.qgraph import QGraph, activation_range


class ConcatNet(nn.Module):
    """A 3x3 conv branch (ReLU) and a depthwise branch with depth multiplier 2 (ReLU6),
    concatenated on channels, then max pool, a 1x1 conv, global mean and a dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.dw = nn.Conv2d(3, 6, 3, padding=1, groups=3)
        self.pw = nn.Conv2d(10, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.conv(x)), F.relu6(self.dw(x))], dim=1)
        y = F.relu(self.pw(F.max_pool2d(y, 2)))
        return self.fc(y.mean(dim=(2, 3)))


CONCAT_INPUT_SHAPE = (1, 3, 8, 8)
TFLITE_NETS = (*INT8_NETS, "concat")

_BOUNDS = {"NONE": (None, None), "RELU": (0.0, None), "RELU6": (0.0, 6.0)}


def share_concat_quantization(graph: QGraph) -> QGraph:
    """The graph with each concatenation's inputs quantized like its output (their producers
    requantize straight to it, clamps recomputed), as TFLite converters write concatenations.
    An input that another op also reads, or that a graph input is, keeps its own."""
    ops = [replace(op) for op in graph.ops]
    readers: dict[str, int] = {}
    for op in ops:
        for name in op.inputs:
            readers[name] = readers.get(name, 0) + 1
    producer = {op.output: op for op in ops}
    tensors = dict(graph.tensors)
    for op in ops:
        if op.kind != "concat":
            continue
        out = tensors[op.output]
        for name in op.inputs:
            src = producer.get(name)
            if src is None or readers[name] != 1 or src.activation not in _BOUNDS:
                continue
            tensors[name] = replace(tensors[name], scale=out.scale, zero_point=out.zero_point)
            src.act = activation_range(src.activation, *_BOUNDS[src.activation], out.scale, out.zero_point)
    return replace(graph, ops=ops, tensors=tensors)


def write_tflite_models(out_dir: str | Path, names: tuple[str, ...] | None = None) -> dict[str, tuple[Path, Path]]:
    """Write NAME.tflite (int8) and NAME.float.tflite for `names` (default: all of TFLITE_NETS)
    into `out_dir`; returns name -> (int8 path, float path)."""
    from tvmnas.quant.qgraph import read_qdq
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.quant.tflite_writer import write_tflite
    from tvmnas.model_file import export_onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in names or TFLITE_NETS:
        if name == "concat":
            torch.manual_seed(0)
            float_onnx = export_onnx(ConcatNet().eval(), CONCAT_INPUT_SHAPE, out / "concat.onnx")
            calib = np.random.RandomState(0).randn(16, *CONCAT_INPUT_SHAPE[1:]).astype(np.float32)
            graph = share_concat_quantization(read_qdq(quantize_model(float_onnx, calib)))
        else:
            graph = read_qdq(write_int8_net(name, out).qdq_onnx)
        int8_path, float_path = out / f"{name}.tflite", out / f"{name}.float.tflite"
        int8_path.write_bytes(write_tflite(graph))
        float_path.write_bytes(write_tflite(graph, float32=True))
        written[name] = (int8_path, float_path)
    return written

