"""`tvmnas compile` from the shell: a bundle on success, one error line and exit 1 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tvmnas.model_file import export_onnx
from zoo import ZOO


def tvmnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmnas", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    entry = ZOO["m0_cnn"]
    path = tmp_path_factory.mktemp("model") / "m0_cnn.onnx"
    export_onnx(entry.build(), entry.input_shape, path)
    return path


def test_compile_writes_bundle_and_prints_json(onnx_model: Path, tmp_path: Path) -> None:
    proc = tvmnas("compile", str(onnx_model), "--target", "cortex-m0", "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert summary["target"] == manifest["target"] == "cortex-m0"
    assert manifest["inputs"][0]["shape"] == [1, 1, 8, 8] and manifest["outputs"][0]["dtype"] == "float32"
    assert manifest["arena_bytes"] > 0 and manifest["flash_bytes"] > 0 and manifest["kernels"]
    for name in ("model.h", "model.c", "model_weights.c", "Makefile", "examples/classify.c"):
        assert (tmp_path / "b" / name).is_file(), name


@pytest.mark.parametrize(
    "args, expected",
    [
        (["compile", "missing.onnx", "--out", "o"], "does not exist"),
        (["compile", "MODEL", "--target", "cortex-m99", "--out", "o"], "cortex-m99"),
        (["compile", "MODEL", "--optimize", "fast", "--out", "o"], "optimize must be one of speed, size"),
        (["compile", "MODEL", "--target", "cortex-m0", "--out", "o"], None),
    ],
)
def test_bad_input_gives_one_error_line(args: list[str], expected: str | None, onnx_model: Path, tmp_path: Path) -> None:
    args = [str(onnx_model) if a == "MODEL" else str(tmp_path / a) if a in ("o", "missing.onnx") else a for a in args]
    if expected is None:  # over budget: the m0 board has 16 KB SRAM; a 64x64 net does not fit
        entry = ZOO["resnet_stem7"]
        big = tmp_path / "big.onnx"
        export_onnx(entry.build(), entry.input_shape, big)
        args[1] = str(big)
        expected = "bytes but target 'cortex-m0' has"
    proc = tvmnas(*args)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
