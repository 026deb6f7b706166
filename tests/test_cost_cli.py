"""`tvmnas cost fit` and `tvmnas cost predict`: JSON shape of `tvmnas profile`, one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tvmnas.measure.store import FeatureRow, NetworkRow, ProfileDB, canonical_json
from tvmnas.passes import FEATURE_NAMES


def write_store(path: Path, precision: str, kernels: list[tuple[dict, int, int, int]]) -> None:
    """A profile store dump of one fit network on cortex-m7 calling each (features, macs, instructions, cycles)."""
    db = ProfileDB(":memory:")
    calls = [[f"k{i}", f"h{i}", n, c] for i, (_, _, n, c) in enumerate(kernels)]
    db.record_network([NetworkRow("cortex-m7", precision, "fit00", "fit", 0, "{}", 0, 0, 0, canonical_json(calls))],
                      [FeatureRow(precision, f"h{i}", int(m), canonical_json(f)) for i, (f, m, _, _) in enumerate(kernels)])
    db.dump(path)


def tvmnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from tvmnas.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    path = tmp_path_factory.mktemp("cli") / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False)
    return path


def test_predict_prints_the_profile_json_shape(onnx_model: Path) -> None:
    proc = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m4")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["instructions"] is None
    assert report["cycles_note"] == "predicted by the surrogate"
    assert report["target"] == "cortex-m4"
    assert len(report["kernels"]) >= 2
    for k in report["kernels"]:
        assert set(k) >= {"name", "macs", "instructions", "cycles"}
        assert k["cycles"] > 0
    assert report["cycles"] == sum(k["cycles"] for k in report["kernels"])
    assert max(k["macs"] for k in report["kernels"]) >= 4 * 8 * 8 * 9
    size = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m4", "--optimize", "size")
    assert size.returncode == 0, size.stderr
    size_report = json.loads(size.stdout.strip().splitlines()[-1])
    assert [k["macs"] for k in size_report["kernels"]] == [k["macs"] for k in report["kernels"]]
    assert size_report["cycles"] != report["cycles"]  # priced on the rolled kernels the size build has


def test_unknown_target_is_one_line(onnx_model: Path) -> None:
    proc = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m99")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "cortex-m99" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_fit_from_profile_data_then_predict_with_it(tmp_path: Path, onnx_model: Path) -> None:
    kernels = []
    for i in range(40):
        f = {n: 0.0 for n in FEATURE_NAMES}
        macs = 1000.0 * (i + 1)
        f.update({"log_macs": math.log1p(macs), "n_blocks": 2.0, "class_conv": 1.0})
        kernels.append((f, macs, int(macs * 5), int(macs * 9 + 300)))
    db = tmp_path / "profiles.jsonl.gz"
    write_store(db, "float32", kernels)
    out = tmp_path / "m7.json"
    proc = tvmnas("cost", "fit", "--db", str(db), "--target", "cortex-m7", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["kernels"] == 40
    proc = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m7", "--surrogate", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["target"] == "cortex-m7"
    proc = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m4", "--surrogate", str(out))
    assert proc.returncode == 1
    assert "is for target cortex-m7, not cortex-m4" in proc.stderr


def test_fit_from_a_missing_source_is_one_line(tmp_path: Path) -> None:
    proc = tvmnas("cost", "fit", "--db", str(tmp_path / "none.db"), "--target", "cortex-m4", "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr.strip().splitlines()[-1]


def test_predict_int8_prices_the_int8_build(onnx_model: Path) -> None:
    """--precision int8 prices the float model's int8 build with the shipped int8 surrogate: the
    same JSON as float32 plus the precision, other kernels, other cycles, the same MACs."""
    reports = {}
    for precision in ("float32", "int8"):
        proc = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m4", "--precision", precision)
        assert proc.returncode == 0, proc.stderr
        reports[precision] = json.loads(proc.stdout.strip().splitlines()[-1])
    f32, i8 = reports["float32"], reports["int8"]
    assert set(i8) == set(f32) and (f32["precision"], i8["precision"]) == ("float32", "int8")
    assert i8["target"] == "cortex-m4" and i8["instructions"] is None
    assert i8["cycles"] == sum(k["cycles"] for k in i8["kernels"]) and all(k["cycles"] > 0 for k in i8["kernels"])
    assert {k["name"] for k in i8["kernels"]} != {k["name"] for k in f32["kernels"]}
    assert i8["cycles"] != f32["cycles"]
    assert max(k["macs"] for k in i8["kernels"]) == max(k["macs"] for k in f32["kernels"])


def test_a_target_without_an_int8_surrogate_is_one_line(onnx_model: Path) -> None:
    proc = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m0", "--precision", "int8")
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no pre-fitted int8 cost surrogate for target cortex-m0")
    assert "Traceback" not in proc.stderr


def test_fit_int8_profile_data_and_refuse_the_other_precision(tmp_path: Path, onnx_model: Path) -> None:
    kernels = []
    for i in range(20):
        f = {n: 0.0 for n in FEATURE_NAMES}
        f.update({"log_macs": math.log1p(500.0 * (i + 1)), "class_conv": 1.0})
        kernels.append((f, 500 * (i + 1), 1000 * (i + 1), 1500 * (i + 1)))
    db = tmp_path / "profiles-int8.jsonl.gz"
    write_store(db, "int8", kernels)
    out = tmp_path / "m7-int8.json"
    proc = tvmnas("cost", "fit", "--db", str(db), "--target", "cortex-m7", "--out", str(out))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: profile store") and "--precision int8" in proc.stderr
    proc = tvmnas("cost", "fit", "--db", str(db), "--target", "cortex-m7", "--out", str(out), "--precision", "int8")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["precision"] == "int8"
    proc = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m7", "--surrogate", str(out),
                  "--precision", "int8")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["precision"] == "int8"
    proc = tvmnas("cost", "predict", str(onnx_model), "--target", "cortex-m7", "--surrogate", str(out))
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert "build is float32 but the cortex-m7 surrogate prices int8 kernels" in line and "Traceback" not in proc.stderr
