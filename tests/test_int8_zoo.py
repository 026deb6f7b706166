"""A representative subset of the test zoo through the whole int8 path, as benchmarks/int8_zoo.py runs
every network: PTQ on seeded random calibration data, int8 compile, QEMU, bit for bit against the
integer reference, and every op of the reference within 1 LSB of onnxruntime's fake-quant run.

m0_dwsep has depthwise convolutions, HardSwish and a Softmax; m0_resnet a squeeze-excite block
(Sigmoid gate and channel-wise Mul) and residual adds; m0_cnn a max pool and a global mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tvmnas.compiler import compile_model
from tvmnas.quant.quantize import quantize_model
from tvmnas.quant.reference import ReferenceModel, per_op_deviation, quantize_input
from tvmnas.measure.runner import build, run
from tvmnas.targets import load_target
from tvmnas.model_file import export_onnx
from zoo import ZOO


def _quantized(name: str, work: Path) -> tuple[Path, np.ndarray]:
    entry = ZOO[name]
    rng = np.random.RandomState(0)
    calibration = rng.randn(8, *entry.input_shape[1:]).astype(np.float32)
    x = rng.randn(*entry.input_shape).astype(np.float32)
    path = export_onnx(entry.build(), entry.input_shape, work / f"{name}.onnx")
    onnx.save(quantize_model(path, calibration), str(work / f"{name}.qdq.onnx"))
    return work / f"{name}.qdq.onnx", x


@pytest.mark.slow
@pytest.mark.parametrize("name,target_name", [
    pytest.param("m0_resnet", "cortex-m4", marks=pytest.mark.ci),
    ("m0_dwsep", "cortex-m4"),
    ("m0_cnn", "cortex-m4"),
    ("m0_dwsep", "cortex-m0"),
])
def test_zoo_network_int8_is_bit_exact_on_qemu(name: str, target_name: str, tmp_path: Path) -> None:
    qdq, x = _quantized(name, tmp_path)
    ref = ReferenceModel(qdq)
    assert not [op.attrs["node"].op_type for op in ref.graph.ops if op.kind == "float"]  # integer throughout
    assert max(per_op_deviation(qdq, x).values()) <= 1
    xq = quantize_input(x, ref.graph.tensors[ref.graph.inputs[0]])
    target = load_target(target_name)
    bundle = compile_model(qdq, target, tmp_path / "c", ignore_budget=True)
    assert not [k["name"] for k in bundle.manifest["kernels"] if "dequantize" in k["name"]]  # no float kernel
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [xq.astype(np.float32).reshape(-1)],
                 timeout_s=300)
    np.testing.assert_array_equal(result.outputs[0].astype(np.int8), ref.run_int8(xq)[0].reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param("gru_kws", marks=pytest.mark.ci), "lstm_kws", "gru2_kws"])
def test_recurrent_network_runs_its_cell_as_a_float_island(name: str, tmp_path: Path) -> None:
    """A recurrent network quantized to int8: the LSTM / GRU cell (no int8 form) stays float between
    DequantizeLinear and QuantizeLinear, reading its sequence or its last state, the rest is integer;
    the C on QEMU gives the integer reference's output within 1 step."""
    from zoo.recurrent import KWS_MODELS

    entry = KWS_MODELS[name]
    rng = np.random.RandomState(0)
    path = export_onnx(entry.build(), entry.input_shape, tmp_path / f"{name}.onnx")
    qdq = tmp_path / f"{name}.qdq.onnx"
    onnx.save(quantize_model(path, rng.randn(8, *entry.input_shape[1:]).astype(np.float32)), str(qdq))
    x = rng.randn(*entry.input_shape).astype(np.float32)
    ref = ReferenceModel(qdq)
    islands = {op.attrs["node"].op_type for op in ref.graph.ops if op.kind == "float"}
    assert islands & {"GRU", "LSTM"}
    assert [op.kind for op in ref.graph.ops][-1] == "dense"  # the classifier is an integer kernel
    assert max(per_op_deviation(qdq, x).values()) <= 1
    xq = quantize_input(x, ref.graph.tensors[ref.graph.inputs[0]])
    target = load_target("cortex-m4")
    bundle = compile_model(qdq, target, tmp_path / "c", ignore_budget=True)
    assert bundle.manifest["precision"] == "int8"
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [xq.astype(np.float32).reshape(-1)],
                 timeout_s=300)
    got = result.outputs[0].astype(np.int64)
    want = ref.run_int8(xq)[0].reshape(-1).astype(np.int64)
    assert np.abs(got - want).max() <= 1
