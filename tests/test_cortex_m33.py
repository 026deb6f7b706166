"""Cortex-M33 on QEMU's MPS2 AN505 end to end: a float32 CNN against PyTorch, an int8 QDQ network
bit for bit against the integer reference, estimated cycles from the M33 timing table, per-kernel
profiling, and the PSRAM relink of a firmware larger than the SSRAM "flash"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tvmnas.cli import app
from tvmnas.compiler import compile_model
from tvmnas.quant.int8_nets import calibration_data, write_int8_net
from tvmnas.quant.reference import ReferenceModel, quantize_input
from tvmnas.measure.runner import build, memory_usage, run
from tvmnas.targets import load_target
from tvmnas.model_file import export_onnx
from zoo import get_entry

M33 = "cortex-m33"
TOLERANCE = 1e-4  # as tests/test_compiler.py: max abs error relative to the output's scale


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.ci
def test_float_cnn_matches_pytorch_with_exact_counts_and_m33_cycle_estimate(tmp_path: Path) -> None:
    entry = get_entry("m0_cnn")
    model = entry.build()
    x = entry.sample_input(0).numpy()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    target = load_target(M33)
    bundle = compile_model(model, target, tmp_path / "c", input_shape=x.shape)
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x])
    err = float(np.abs(result.outputs[0].reshape(ref.shape) - ref).max())
    assert err <= TOLERANCE * float(np.abs(ref).max())
    assert result.instructions[0] > 1000

    np.save(tmp_path / "x.npy", x)
    cli = CliRunner().invoke(app, ["run", str(bundle.out_dir), "-i", str(tmp_path / "x.npy"),
                                   "-o", str(tmp_path / "y.npy"), "-t", M33])
    assert cli.exit_code == 0, cli.output
    summary = last_json(cli.stdout)
    assert summary["target"] == M33 and summary["instructions"] == result.instructions[0]
    assert "cortex-m33 timing table" in summary["cycles_note"]
    assert summary["cycles"] > summary["instructions"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["residual", "depthwise"])
def test_int8_qdq_network_is_bit_exact(name: str, tmp_path: Path) -> None:
    qdq = write_int8_net(name, tmp_path).qdq_onnx
    ref = ReferenceModel(qdq)
    tensor = ref.graph.tensors[ref.graph.inputs[0]]
    xs = [quantize_input(c[None], tensor) for c in calibration_data(name, samples=2, seed=7)]
    target = load_target(M33)
    bundle = compile_model(qdq, target, tmp_path / "c")
    assert bundle.manifest["precision"] == "int8"
    result = run(build(bundle.out_dir, target, tmp_path / "b"), target, [x.astype(np.float32) for x in xs])
    for x, y in zip(xs, result.outputs):
        np.testing.assert_array_equal(y.astype(np.int8), ref.run_int8(x)[0].reshape(-1))
    assert all(n > 0 for n in result.instructions)


@pytest.mark.slow
def test_profile_times_every_kernel_on_the_an505(tmp_path: Path) -> None:
    entry = get_entry("m0_cnn")
    onnx_path = export_onnx(entry.build(), entry.input_shape, tmp_path / "m0_cnn.onnx")
    result = CliRunner().invoke(app, ["profile", str(onnx_path), "--target", M33])
    assert result.exit_code == 0, result.output
    report = last_json(result.stdout)
    assert report["target"] == M33 and len(report["kernels"]) >= 4
    assert all(k["instructions"] > 0 and k["cycles"] >= k["instructions"] for k in report["kernels"])
    assert report["instructions"] == report["preamble_instructions"] + sum(k["instructions"] for k in report["kernels"])
    assert report["cycles"] > sum(k["cycles"] for k in report["kernels"]) - 1
    assert report["cycles_note"] == "estimated from a per-core timing table"


OVERSIZED = """#include "model.h"
#define N (5u * 1024u * 1024u / 4u)
static const float weights[N] = {[0] = 3.0f, [N / 2] = 5.0f, [N - 1] = 7.0f};
int model_run(const float *input, float *output, uint8_t *arena)
{
    (void)arena;
    const volatile float *w = weights;
    for (int i = 0; i < MODEL_INPUT_SIZE; ++i) output[i] = input[i] * w[0] + w[N / 2] + w[N - 1];
    return 0;
}
"""


@pytest.mark.slow
def test_firmware_over_the_4_mib_ssram_runs_from_the_psram(tmp_path: Path) -> None:
    bundle = tmp_path / "big"
    bundle.mkdir()
    (bundle / "model.h").write_text(
        "#include <stddef.h>\n#include <stdint.h>\n#define MODEL_INPUT_SIZE 16\n#define MODEL_OUTPUT_SIZE 16\n"
        "#define MODEL_ARENA_SIZE 64\nint model_run(const float *input, float *output, uint8_t *arena);\n"
    )
    (bundle / "model.c").write_text(OVERSIZED)
    target = load_target(M33)
    elf = build(bundle, target, tmp_path / "b")
    assert memory_usage(elf, target).flash_bytes > 5 * 1024 * 1024
    x = np.arange(16, dtype=np.float32)
    np.testing.assert_array_equal(run(elf, target, [x]).outputs[0], 3 * x + 12)
