"""Quantization-aware training (tvmnas.quant.qat, tvmnas.training.qat): the int8 network evaluates
with the integer reference's arithmetic, its QDQ export is that same network, its training form is
fake quantization with straight-through gradients, and the C compiled from the export on QEMU gives
the PyTorch model's output."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tvmnas.data import load_dataset
from tvmnas.errors import QuantizationError, TvmnasError
from tvmnas.quant.qat import export_qdq, prepare_qat
from tvmnas.quant.quantize import weight_qparams
from tvmnas.quant.reference import ReferenceModel
from tvmnas.search.genotype import CellEdge, CellGenotype, ChainLayer, Genotype
from tvmnas.models import build_model
from tvmnas.training.qat import QATConfig, calibrate, load_qat, quantization_aware_train

torch.set_num_threads(1)


class EveryOp(nn.Module):
    """Each layer kind QAT groups: conv+BN+ReLU6, conv+BN (no activation), ReLU on its own, max and
    average pool, concat of differently ranged inputs, add+ReLU, global average pool, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU6())
        self.b = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4))
        self.relu = nn.ReLU()
        self.max = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.c = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.relu(self.b(x))], dim=1)
        y = self.avg(self.max(y))
        y = F.relu(self.c(y) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


def _randomize_batch_norm(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so folding them matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def _chain_genotype() -> Genotype:
    return Genotype(space="chain", input_shape=(1, 8, 8), num_classes=10, channels=8,
                    layers=(ChainLayer("mb_k3_e3", 8, 1), ChainLayer("mb_k3_e1", 16, 2)))


def _darts_genotype() -> Genotype:
    """Two cells, the first a reduction: skip_connect at stride 2 and the next cell's preprocessing
    are FactorizedReduce (ceil_mode average pool, BatchNorm per path), pools with padding, dilated and
    separable convolutions, adds and concats."""
    normal = CellGenotype((CellEdge("sep_conv_3x3", 0), CellEdge("skip_connect", 1), CellEdge("dil_conv_3x3", 1),
                           CellEdge("avg_pool_3x3", 2)), (2, 3))
    reduce = CellGenotype((CellEdge("skip_connect", 0), CellEdge("max_pool_3x3", 1), CellEdge("avg_pool_3x3", 0),
                           CellEdge("sep_conv_3x3", 2)), (2, 3))
    return Genotype(space="darts", input_shape=(1, 8, 8), num_classes=10, channels=4, cells=2, stem_multiplier=3,
                    reduction_cells=(0,), normal=normal, reduce=reduce)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, 1, 8, 8).astype(np.float32)


def _calibrated(model: nn.Module, seed: int = 0):
    net = prepare_qat(copy.deepcopy(model), (1, 8, 8))
    calibrate(net, _images(32, seed), 16)
    return net.eval()


@pytest.mark.parametrize("which", ["every_op", "chain", "darts"])
def test_evaluated_network_is_its_qdq_export_bit_for_bit(which: str) -> None:
    """The PyTorch int8 network (evaluation mode) and the integer reference of its exported QDQ model
    give the same int8 output for every input: one network, two forms."""
    torch.manual_seed(1)
    genotypes = {"chain": _chain_genotype, "darts": _darts_genotype}
    model = EveryOp() if which == "every_op" else build_model(genotypes[which]())
    net = _calibrated(_randomize_batch_norm(model, 2))
    ref = ReferenceModel(export_qdq(net))
    x = _images(6, seed=3)
    ours = net.run_int8(net.quantize_input(x))
    theirs = np.concatenate([ref.run_int8(net.quantize_input(x[i:i + 1]))[0] for i in range(len(x))])
    np.testing.assert_array_equal(ours, theirs)
    assert len(np.unique(ours)) > 5  # not a saturated or constant output
    # forward() in evaluation mode is that int8 output, dequantized
    out = net.output_qtensor()
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.rint(y / out.scale).astype(int) + out.zero_point, ours.astype(int))


def test_export_folds_batch_norm_before_quantizing_weights() -> None:
    """The exported conv weights are the per-channel int8 weights of the BN-folded conv."""
    torch.manual_seed(0)
    model = _randomize_batch_norm(EveryOp(), 5)
    qdq = export_qdq(_calibrated(model))
    assert not any(n.op_type == "BatchNormalization" for n in qdq.graph.node)
    conv, bn = model.a[0], model.a[1]
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = (conv.weight * k.reshape(-1, 1, 1, 1)).detach().numpy()
    want, _ = weight_qparams(folded, 0)
    weights = [onnx.numpy_helper.to_array(t) for t in qdq.graph.initializer if t.name.endswith("_quantized")]
    assert any(w.shape == want.shape and np.array_equal(w, want) for w in weights)


def test_training_form_is_fake_quantized_with_straight_through_gradients() -> None:
    """Training mode: outputs on the output's int8 grid, within 2 steps of the integer arithmetic
    (float accumulation and one rounding against int32 and TFLite's double rounding), and gradients
    reach the conv weights and the BatchNorm affine parameters through the fold."""
    torch.manual_seed(0)
    model = _randomize_batch_norm(EveryOp(), 7)
    net = _calibrated(model)
    x = torch.from_numpy(_images(8, seed=9))
    with torch.no_grad():
        exact = net(x).numpy()
    net.train()
    net.set_observe("frozen")
    y = net(x)
    out = net.output_qtensor()
    steps = y.detach().numpy() / out.scale
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-3)
    assert np.abs(y.detach().numpy() - exact).max() <= 2.01 * out.scale
    y.square().sum().backward()
    conv = net.ops["a_0"]
    for param in (conv.conv.weight, conv.bn.weight, conv.bn.bias, net.ops["fc"].linear.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_activation_ranges_follow_the_post_training_rule() -> None:
    """Calibration takes the min and max of every activation over the samples (post-training
    quantization's choice); fine-tuning then moves them by the moving average only."""
    torch.manual_seed(0)
    net = _calibrated(EveryOp())
    lo, hi = net.quants["input"].range()
    x = _images(32, 0)
    assert (lo, hi) == pytest.approx((float(x.min()), float(x.max())))
    net.train()
    net.set_observe("ema")
    for q in net.quants.values():
        q.momentum = 0.5
    net(torch.from_numpy(np.zeros((2, 1, 8, 8), np.float32)))
    assert net.quants["input"].range() == pytest.approx((lo / 2, hi / 2))


def test_a_layer_with_no_int8_form_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(72, 3))
    with pytest.raises(QuantizationError, match=r"layer '1' \(Sigmoid\) has no int8 form"):
        prepare_qat(model, (1, 8, 8))
    dilated = nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(2, dilation=2), nn.Flatten(), nn.Linear(18, 3))
    with pytest.raises(QuantizationError, match=r"layer '1': MaxPool2d.* uses dilation"):
        prepare_qat(dilated, (1, 8, 8))


def test_fine_tuning_writes_its_model_and_accuracies(tmp_path: Path) -> None:
    data = load_dataset("digits", limit_train=128, limit_test=48)
    torch.manual_seed(0)
    model = _randomize_batch_norm(build_model(_chain_genotype()), 1)
    before = copy.deepcopy(model.state_dict())
    result = quantization_aware_train(model, data, tmp_path, QATConfig(epochs=1, batch_size=32, calibration_images=64),
                                      float_accuracy=0.5)
    m = result.metrics
    assert m["float_test_accuracy"] == 0.5 and 0.0 <= m["ptq_test_accuracy"] <= 1.0
    assert (tmp_path / "model_int8.onnx").is_file() and (tmp_path / "qat_log.csv").is_file()
    again = load_qat(model, data.input_shape, tmp_path)
    x = torch.from_numpy(data.test_x[:8])
    with torch.no_grad():
        assert torch.equal(again(x), result.network.eval()(x))
    after = model.state_dict()  # the float model it started from is left as it was
    assert all(torch.equal(before[k], after[k]) for k in before)
    ref = ReferenceModel(tmp_path / "model_int8.onnx")
    xi = again.quantize_input(data.test_x[:1])
    np.testing.assert_array_equal(ref.run_int8(xi)[0], again.run_int8(xi))


def test_interrupted_fine_tuning_resumes_to_the_same_network(tmp_path: Path) -> None:
    """A killed QAT run resumes from its epoch checkpoint to the uninterrupted result; a checkpoint of
    another float network is refused, not resumed."""
    data = load_dataset("digits", limit_train=96, limit_test=32)
    torch.manual_seed(0)
    model = _randomize_batch_norm(build_model(_chain_genotype()), 4)
    config = QATConfig(epochs=2, batch_size=32, calibration_images=32)
    whole = quantization_aware_train(model, data, tmp_path / "whole", config)

    def die(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise KeyboardInterrupt()

    with pytest.raises(KeyboardInterrupt):
        quantization_aware_train(model, data, tmp_path / "split", config, on_epoch_end=die)
    resumed = quantization_aware_train(model, data, tmp_path / "split", config)
    a, b = whole.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "model_int8.onnx").read_bytes() == (tmp_path / "split" / "model_int8.onnx").read_bytes()
    other = _randomize_batch_norm(build_model(_chain_genotype()), 5)
    with pytest.raises(TvmnasError, match="written with other settings"):
        quantization_aware_train(other, data, tmp_path / "split", config)


def _require_tools() -> None:
    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run scripts/setup.sh or "
                    "'apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm'")


@pytest.mark.slow
@pytest.mark.ci
def test_compiled_qat_model_on_qemu_gives_the_pytorch_output(tmp_path: Path) -> None:
    """A small chain network fine-tuned with QAT on digits, exported and compiled for cortex-m4: on
    QEMU, every image's int8 output is within 1 step of the quantized PyTorch model's, same class."""
    from tvmnas.compiler import compile_model
    from tvmnas.quantized import bundle_input
    from tvmnas.measure.runner import build, run
    from tvmnas.targets import load_target

    _require_tools()
    data = load_dataset("digits", limit_train=256, limit_test=64)
    torch.manual_seed(0)
    model = _randomize_batch_norm(build_model(_chain_genotype()), 3)
    result = quantization_aware_train(model, data, tmp_path / "qat", QATConfig(epochs=1, batch_size=32))
    net = result.network.eval()
    target = load_target("cortex-m4")
    bundle = compile_model(tmp_path / "qat" / "model_int8.onnx", target, tmp_path / "c")
    assert bundle.manifest["precision"] == "int8"
    images = data.test_x[:12]
    inputs = [bundle_input(x[None], bundle.manifest, raw=False) for x in images]
    emulated = np.stack(run(build(bundle.out_dir, target, tmp_path / "b"), target, inputs, timeout_s=300).outputs)
    out = net.output_qtensor()
    with torch.no_grad():
        logits = net(torch.from_numpy(images)).numpy()
    pytorch = np.rint(logits / out.scale).astype(np.int64) + out.zero_point
    emulated = emulated.reshape(pytorch.shape).astype(np.int64)
    assert np.abs(emulated - pytorch).max() <= 1
    np.testing.assert_array_equal(emulated.argmax(1), logits.argmax(1))
