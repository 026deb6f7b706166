"""Small int8 networks, each written as float ONNX, QDQ ONNX and .tflite: the bit-exact test set.

Every operator the int8 path handles appears in at least one network: conv (SAME, VALID and
explicit padding, stride 2), depthwise conv, 1x1 conv, fully connected, residual add, max and
average pool (average with padding excluded from the count), global mean, flatten, fused ReLU and
ReLU6. The weights are seeded and the calibration data is seeded random, so the files are the
same on every machine. ``scripts/make_int8_tflite.py`` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn


class ConvNet(nn.Module):
    """conv 3x3 SAME + ReLU (BatchNorm folded), conv 3x3 stride 2 with PyTorch's padding (a PAD op
    in .tflite) + ReLU6, conv 3x3 VALID, flatten of a 2x2 map, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(12, 6, 3)  # VALID
        self.fc = nn.Linear(6 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu6(self.conv2(x))
        x = self.conv3(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class DepthwiseNet(nn.Module):
    """Depthwise-separable blocks (MobileNet style), stride-2 depthwise with SAME padding, global mean."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw1 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw1 = nn.Conv2d(8, 16, 1)
        self.dw2 = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.pw2 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu6(self.dw1(x))
        x = F.relu6(self.pw1(x))
        x = F.relu(self.dw2(x))
        x = F.relu(self.pw2(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class ResidualNet(nn.Module):
    """ResNet-style block: two convs and a residual add (inputs at different scales), ReLU after the add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.proj = nn.Conv2d(8, 8, 1, stride=2)
        self.conv3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        y = F.relu(self.conv1(x))
        y = self.conv2(y)
        x = F.relu(x + y)
        x = F.relu(self.proj(x) + self.conv3(x))
        x = x.mean(dim=(2, 3))
        return self.fc(x)


class PoolNet(nn.Module):
    """Max pool 2x2, average pool 3x3 SAME (padding not counted), average pool 2x2, flatten, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 3 * 3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        x = F.max_pool2d(x, 2)
        x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        x = F.avg_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


class PreActNet(nn.Module):
    """DARTS-style ReLU -> conv -> BN ops on a shared input, one dilated, summed with a skip: the
    ReLUs follow no conv (a ReLU6 on the input, a ReLU whose input also feeds the skip, a ReLU
    after a max pool), so each is its own int8 op."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv_a = nn.Conv2d(8, 8, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
        self.bn_b = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(F.relu6(x))
        r = F.relu(s)
        a = self.bn_a(self.conv_a(r))
        b = self.bn_b(self.conv_b(r))
        y = F.relu(F.max_pool2d(a + b + s, 2))
        return self.fc(y.mean(dim=(2, 3)))


class DenseNet(nn.Module):
    """Fully connected autoencoder in miniature (MLPerf Tiny's FC autoencoder shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(40, 32)
        self.fc2 = nn.Linear(32, 8)
        self.fc3 = nn.Linear(8, 32)
        self.fc4 = nn.Linear(32, 40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = F.relu(self.fc3(x))
        return self.fc4(x)


@dataclass(frozen=True)
class Int8Net:
    """A network of the set: its constructor and input shape (batch 1)."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


INT8_NETS: dict[str, Int8Net] = {
    "conv": Int8Net(ConvNet, (1, 3, 8, 8)),
    "depthwise": Int8Net(DepthwiseNet, (1, 3, 13, 13)),
    "residual": Int8Net(ResidualNet, (1, 3, 9, 9)),
    "pool": Int8Net(PoolNet, (1, 2, 12, 12)),
    "dense": Int8Net(DenseNet, (1, 40)),
    "preact": Int8Net(PreActNet, (1, 3, 8, 8)),
}


def build_net(name: str, seed: int = 0) -> nn.Module:
    """The float network `name` with seeded weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = INT8_NETS[name].build()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def calibration_data(name: str, samples: int = 16, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal calibration samples for `name`, shape (samples, *input_shape[1:])."""
    shape = INT8_NETS[name].input_shape
    return np.random.RandomState(seed).randn(samples, *shape[1:]).astype(np.float32)


@dataclass(frozen=True)
class Int8Files:
    """Paths of one network's files."""

    float_onnx: Path
    qdq_onnx: Path
    tflite: Path
    calibration: Path


def write_int8_net(name: str, out_dir: str | Path) -> Int8Files:
    """Write `name` as float ONNX, quantized QDQ ONNX and int8 .tflite (plus its calibration .npy)."""
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.quant.tflite_writer import write_tflite
    from tvmnas.model_file import export_onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = Int8Files(out / f"{name}.onnx", out / f"{name}.qdq.onnx", out / f"{name}.tflite", out / f"{name}.calibration.npy")
    export_onnx(build_net(name), INT8_NETS[name].input_shape, files.float_onnx, keep_batchnorm=True)
    calib = calibration_data(name)
    np.save(files.calibration, calib)
    qdq = quantize_model(files.float_onnx, calib)
    onnx.save(qdq, str(files.qdq_onnx))
    files.tflite.write_bytes(write_tflite(qdq))
    return files
