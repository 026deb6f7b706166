"""The calibration set: a few dozen small layers spanning the instruction mix of real networks
(convolutions 1x1/3x3/5x5 at strides 1 and 2, depthwise, dense, max/average/global pooling,
element-wise activations and adds; float32 and int8), written as ONE timing firmware so one run on
a board times them all, with each kernel's emulated instruction mix (features) in kernels.json.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from tvmnas.board.firmware import FirmwareModel, Placement, write_firmware
from tvmnas.targets import Target

SET_VERSION = 1


class _Add(nn.Module):
    """x + conv(x): an element-wise add of two activations after a 1x1 convolution."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv(x))


class _Act(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@dataclass(frozen=True)
class Item:
    """One calibration layer: a label, a builder and its input shape (N, C, H, W) or (N, F)."""

    label: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    int8: bool = False


def _conv(ci: int, co: int, k: int, s: int = 1, g: int = 1, act: bool = True) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        layers: list[nn.Module] = [nn.Conv2d(ci, co, k, s, padding=k // 2, groups=g)]
        if act:
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)
    return build


def calibration_items() -> list[Item]:
    """The layers of the set, float32 then int8 (fixed: the same set on every machine)."""
    f32 = [
        Item("conv3x3_3to8_16", _conv(3, 8, 3), (1, 3, 16, 16)),
        Item("conv3x3_8to16_16", _conv(8, 16, 3), (1, 8, 16, 16)),
        Item("conv3x3_16to16_8", _conv(16, 16, 3), (1, 16, 8, 8)),
        Item("conv3x3_s2_8to16_16", _conv(8, 16, 3, 2), (1, 8, 16, 16)),
        Item("conv1x1_16to32_8", _conv(16, 32, 1), (1, 16, 8, 8)),
        Item("conv1x1_32to16_8_linear", _conv(32, 16, 1, act=False), (1, 32, 8, 8)),
        Item("conv1x1_s2_16to32_8", _conv(16, 32, 1, 2), (1, 16, 8, 8)),
        Item("conv5x5_4to8_12", _conv(4, 8, 5), (1, 4, 12, 12)),
        Item("dw3x3_16_16", _conv(16, 16, 3, 1, 16), (1, 16, 16, 16)),
        Item("dw3x3_s2_16_16", _conv(16, 16, 3, 2, 16), (1, 16, 16, 16)),
        Item("dw5x5_16_8", _conv(16, 16, 5, 1, 16), (1, 16, 8, 8)),
        Item("dense_64to32", lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU()), (1, 64)),
        Item("dense_256to10", lambda: nn.Linear(256, 10), (1, 256)),
        Item("dense_32to128", lambda: nn.Linear(32, 128), (1, 32)),
        Item("maxpool2_16_16", lambda: nn.MaxPool2d(2), (1, 16, 16, 16)),
        Item("maxpool3_s2_8_16", lambda: nn.MaxPool2d(3, 2, 1), (1, 8, 16, 16)),
        Item("avgpool2_16_16", lambda: nn.AvgPool2d(2), (1, 16, 16, 16)),
        Item("gap_32_8", lambda: nn.AdaptiveAvgPool2d(1), (1, 32, 8, 8)),
        Item("relu6_16_16", lambda: nn.ReLU6(), (1, 16, 16, 16)),
        Item("hardswish_16_8", lambda: nn.Hardswish(), (1, 16, 8, 8)),
        Item("sigmoid_8_8", lambda: nn.Sigmoid(), (1, 8, 8, 8)),
        Item("add_relu_16_8", lambda: _Add(16), (1, 16, 8, 8)),
        Item("scale_shift_16_16", lambda: _Act(lambda x: x * 0.5 + 1.0), (1, 16, 16, 16)),
    ]
    i8 = [
        Item("i8_conv3x3_8to16_16", _conv(8, 16, 3), (1, 8, 16, 16), True),
        Item("i8_conv3x3_s2_8to16_16", _conv(8, 16, 3, 2), (1, 8, 16, 16), True),
        Item("i8_conv3x3_3to8_16", _conv(3, 8, 3), (1, 3, 16, 16), True),
        Item("i8_conv1x1_16to32_8", _conv(16, 32, 1), (1, 16, 8, 8), True),
        Item("i8_dw3x3_16_16", _conv(16, 16, 3, 1, 16), (1, 16, 16, 16), True),
        Item("i8_dense_64to32", lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU()), (1, 64), True),
        Item("i8_maxpool2_16_16", lambda: nn.Sequential(nn.Conv2d(8, 16, 1), nn.MaxPool2d(2)), (1, 8, 16, 16), True),
        Item("i8_gap_32_8", lambda: nn.Sequential(nn.Conv2d(16, 32, 1), nn.AdaptiveAvgPool2d(1)), (1, 16, 8, 8), True),
        Item("i8_add_relu_16_8", lambda: _Add(16), (1, 16, 8, 8), True),
    ]
    return f32 + i8


def _lower_item(item: Item, target: Target, work: Path):
    from tvmnas.measure.profiler import lower_network

    torch.manual_seed(0)
    module = item.build().eval()
    if not item.int8:
        return lower_network(module, input_shape=item.shape, simd=target.dsp)
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    import onnx

    float_path = export_onnx(module, item.shape, work / f"{item.label}.onnx")
    calibration = np.random.default_rng(0).standard_normal((8, *item.shape[1:])).astype(np.float32)
    qdq = work / f"{item.label}-int8.onnx"
    onnx.save(quantize_model(float_path, calibration), str(qdq))
    return lower_network(qdq, simd=target.dsp)


def model_features(network, target: Target, work: Path) -> list[dict[str, float]]:
    """Each kernel's instruction mix (flash reads counted) from one `tvmnas profile`-style run."""
    from tvmnas.board.mix import kernel_features_of, run_mix_profile
    from tvmnas.measure.profiler import profile_input, write_network
    from tvmnas.measure.runner import build

    prepared = write_network(network, target, work / "bundle")
    elf = build(prepared.bundle_dir, target, work / "build", profile=True)
    blocks = run_mix_profile(elf, target, [profile_input(prepared.input_floats)])
    return kernel_features_of(blocks, target)


def write_calibration_set(target: Target, out_dir: Path, *, placement: Placement = Placement(),
                          progress: Callable[[str], None] = print) -> dict:
    """Lower every item, measure its kernels' instruction mix on the emulator and write the firmware
    (weights always in flash: the set measures what reads from flash cost). Returns the manifest."""
    if placement.weights != "flash":
        placement = Placement(weights="flash", arena_section=placement.arena_section,
                              arena_memory=placement.arena_memory, flash=placement.flash, ram=placement.ram,
                              stack_bytes=placement.stack_bytes)
    items = calibration_items()
    models, features = [], []
    with tempfile.TemporaryDirectory(prefix="tvmnas-calset-") as tmp:
        for i, item in enumerate(items):
            work = Path(tmp) / f"{i:02d}"
            work.mkdir()
            network = _lower_item(item, target, work)
            models.append(FirmwareModel(item.label, network))
            features.append(model_features(network, target, work))
            progress(f"[{i + 1}/{len(items)}] {item.label}: {len(network.graph.calls)} kernel(s)")
    manifest_path = write_firmware(models, target, out_dir, placement=placement,
                                   extra_manifest={"calibration_set": SET_VERSION})
    manifest = json.loads(manifest_path.read_text())
    by_model = {f"{i}": f for i, f in enumerate(features)}
    for k in manifest["kernels"]:
        model, index = k["id"].split(".")
        feats = by_model[model][int(index)]
        k["features"] = feats
        k["instructions"] = int(sum(v for n, v in feats.items() if n.startswith("n:")))
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


__all__ = ["Item", "calibration_items", "model_features", "write_calibration_set"]
