"""KernelFeatures on kernels lowered from PyTorch and ONNX: shapes, MACs, class, hash, vector layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tvmnas.compiler import lower_model
from tvmnas.frontend import import_model
from tvmnas.passes import FEATURE_NAMES, extract_kernel_features, feature_vector, kernel_features, kernel_hash, kernel_macs


def lowered(module: nn.Module, shape: tuple[int, ...]):
    torch.manual_seed(0)
    return lower_model(import_model(module.eval(), shape))


def main_kernel(mod, graph):
    """The kernel with the most MACs (the conv of a one-conv network)."""
    return max((mod[c.kernel] for c in graph.calls), key=kernel_macs)


@pytest.mark.parametrize(
    "c_in, c_out, k, stride, dilation, groups, hw",
    [(8, 16, 3, 1, 1, 1, 16), (8, 16, 1, 2, 1, 1, 16), (12, 12, 5, 2, 1, 12, 16), (6, 6, 3, 1, 2, 6, 12)],
)
def test_conv_shape_features(c_in: int, c_out: int, k: int, stride: int, dilation: int, groups: int, hw: int) -> None:
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=dilation * (k // 2), dilation=dilation, groups=groups)
    mod, graph = lowered(nn.Sequential(conv, nn.ReLU()), (1, c_in, hw, hw))
    f = kernel_features(main_kernel(mod, graph))
    out_hw = -(-hw // stride)
    assert (f["kernel_h"], f["kernel_w"]) == (k, k)
    assert f["stride"] == stride
    assert f["dilation"] == dilation
    assert f["channels_out"] == c_out
    assert (f["out_h"], f["out_w"]) == (out_hw, out_hw)
    assert f["class_depthwise" if groups > 1 else "class_conv"] == 1.0
    macs = out_hw * out_hw * c_out * (c_in // groups) * k * k
    assert math.isclose(f["log_macs"], math.log1p(macs), rel_tol=1e-9)


def test_pool_and_linear_classes() -> None:
    net = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    mod, graph = lowered(net, (1, 4, 8, 8))
    classes = {next(c for c in ("pool_max", "pool_avg", "mean", "matmul", "elementwise", "conv", "depthwise", "concat")
                    if kernel_features(mod[call.kernel])[f"class_{c}"] == 1.0) for call in graph.calls}
    assert "pool_max" in classes
    assert "matmul" in classes


def test_identical_kernels_hash_equal_across_models_and_differ_by_shape() -> None:
    a, ga = lowered(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()), (1, 4, 8, 8))
    b, gb = lowered(nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()), (1, 4, 8, 8))
    c, gc = lowered(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()), (1, 4, 10, 10))
    ha = {kernel_hash(a[k.kernel]) for k in ga.calls}
    hb = {kernel_hash(b[k.kernel]) for k in gb.calls}
    hc = {kernel_hash(c[k.kernel]) for k in gc.calls}
    assert ha <= hb
    assert not ha & hc


def test_features_from_onnx_equal_features_from_pytorch(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU6())
    torch.manual_seed(0)
    net.eval()
    onnx_path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(onnx_path), dynamo=False)
    from_torch = extract_kernel_features(lower_model(import_model(net, (1, 3, 16, 16)))[0])
    from_onnx = extract_kernel_features(lower_model(import_model(onnx_path))[0])
    shape_keys = ("log_macs", "kernel_h", "kernel_w", "stride", "dilation", "channels_out", "out_h", "out_w",
                  "class_conv", "log_bytes_out")

    def conv(features: dict) -> tuple:
        main = max(features.values(), key=lambda f: f["log_macs"])
        return tuple(main[k] for k in shape_keys)

    assert conv(from_torch) == conv(from_onnx)


def test_feature_vector_follows_feature_names() -> None:
    mod, graph = lowered(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1)), (1, 2, 6, 6))
    f = kernel_features(main_kernel(mod, graph))
    v = feature_vector(f)
    assert v.dtype == np.float32
    assert v.shape == (len(FEATURE_NAMES),)
    assert v[FEATURE_NAMES.index("channels_out")] == 4.0
    assert list(f) == list(FEATURE_NAMES)
