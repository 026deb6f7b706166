"""A dynamic batch compiles with batch 1 and says so in one line; the manifest names inputs and
outputs as the source model does."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tvmnas.measure.runner import build_host, run_host


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def export_dynamic_batch_onnx(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(Small().eval(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def export_dynamic_batch_pt2(path: Path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(Small().eval(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def compile_cli(model: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmnas", "compile", str(model), "--out", str(out)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("suffix, export, input_name, output_name", [
    (".onnx", export_dynamic_batch_onnx, "image", "logits"),
    (".pt2", export_dynamic_batch_pt2, "x", "linear"),
])
def test_dynamic_batch_compiles_with_batch_one_and_says_so(suffix, export, input_name, output_name,
                                                           tmp_path: Path) -> None:
    model = tmp_path / f"dynamic{suffix}"
    export(model)
    proc = compile_cli(model, tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    notes = [ln for ln in proc.stderr.splitlines() if "dynamic batch" in ln]
    assert notes == [f"note: '{model}': input '{input_name}' has a dynamic batch; compiling with batch 1"]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": input_name, "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": output_name, "shape": [1, 10], "dtype": "float32"}]

    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    (got,) = run_host(build_host(tmp_path / "b", tmp_path / "host"), [x])
    with torch.no_grad():
        expected = Small().eval()(torch.from_numpy(x)).numpy().reshape(-1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
