"""`tvmnas dynamic train | select | compile | export` and `tvmnas run --config` from the shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def tvmnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmnas", *args], capture_output=True, text=True)


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command, expected",
    [
        (["dynamic", "select", "DIR", "--out", "o"], "not a super-network folder"),
        (["dynamic", "compile", "DIR", "--out", "o"], "not a selection folder"),
        (["dynamic", "export", "DIR", "--config", "0", "--out", "o"], "not a selection folder"),
    ],
)
def test_wrong_folder_gives_one_error_line_and_no_output(command, expected, tmp_path):
    args = [str(tmp_path) if a == "DIR" else str(tmp_path / "o") if a == "o" else a for a in command]
    assert expected in one_error_line(tvmnas(*args))
    assert not (tmp_path / "o").exists()


def test_select_with_an_unknown_executor_is_one_line_and_no_output(tmp_path: Path):
    from tvmnas.dynamic.supernet import DynamicSupernet, StageSpec, SupernetSpec
    from tvmnas.dynamic.train import save_supernet

    spec = SupernetSpec((1, 8, 8), 10, 8, (StageSpec(8, 1, 1),), width_fractions=(1.0,), kernels=(3,), expands=(2,))
    save_supernet(DynamicSupernet(spec), tmp_path / "sup", {"data_source": {"name": "digits", "limit_train": 100}}, [])
    line = one_error_line(tvmnas("dynamic", "select", str(tmp_path / "sup"), "--out", str(tmp_path / "o"),
                                 "--executor", "nope", "--jobs", "2"))
    assert "unknown --executor 'nope'" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_select_compile_export_run(tmp_path: Path):
    sup, sel, cdir, mdir = (tmp_path / n for n in ("sup", "sel", "cdir", "mdir"))
    trained = last_json(tvmnas("dynamic", "train", "--dataset", "digits", "--epochs", "1", "--limit-train", "400",
                               "--limit-test", "60", "--holdout", "80", "--out", str(sup), "--no-progress"))
    assert 0.0 <= trained["largest_test_acc"] <= 1.0 and (sup / "supernet.pt").is_file()

    picked = last_json(tvmnas("dynamic", "select", str(sup), "--k", "2", "--target", "cortex-m4", "--out", str(sel),
                              "--candidates", "4", "--cost-model", "mac", "--finetune-epochs", "1",
                              "--executor", "local", "--jobs", "2"))
    assert [c["index"] for c in picked["configs"]] == [0, 1]
    assert picked["configs"][0]["cycles"] < picked["configs"][1]["cycles"]
    assert picked["cost_model"] == "mac"

    compiled = last_json(tvmnas("dynamic", "compile", str(sel), "--out", str(cdir)))
    manifest = json.loads((cdir / "manifest.json").read_text())
    assert compiled["num_configs"] == manifest["num_configs"] == 2
    assert compiled["config_arena_bytes"] == [c["arena_bytes"] for c in manifest["configs"]]
    for key in ("target", "inputs", "outputs", "arena_bytes", "flash_bytes", "kernels"):
        assert key in manifest

    exported = last_json(tvmnas("dynamic", "export", str(sel), "--config", "1", "--out", str(mdir)))
    assert exported["max_abs_diff_onnx"] < 1e-4 and (mdir / "model.pt2").is_file() and (mdir / "model.onnx").is_file()
    assert "out of range" in one_error_line(tvmnas("dynamic", "export", str(sel), "--config", "7", "--out",
                                                   str(tmp_path / "x")))

    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ran = last_json(tvmnas("run", str(cdir), "--config", "1", "--input", str(tmp_path / "x.npy"),
                           "--output", str(tmp_path / "y.npy")))
    assert ran["config"] == 1 and ran["instructions"] > 0
    with torch.no_grad():
        ref = torch.export.load(mdir / "model.pt2").module()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-4, atol=1e-5)

    # int8: calibrated on the selection's calibration.npy; `run --config` dequantizes with that
    # configuration's own output scale, equal to the integer reference's output
    from tvmnas.dynamic.quantize import quantize_shared, quantize_subnetwork
    from tvmnas.dynamic.select import load_selection
    from tvmnas.quant.reference import ReferenceModel

    i8 = tmp_path / "i8"
    compiled = last_json(tvmnas("dynamic", "compile", str(sel), "--precision", "int8", "--out", str(i8)))
    assert compiled["precision"] == "int8" and compiled["inputs"][0]["dtype"] == "int8"
    assert compiled["weights_bytes"] < manifest["weights_bytes"]
    ran = last_json(tvmnas("run", str(i8), "--config", "1", "--input", str(tmp_path / "x.npy"),
                           "--output", str(tmp_path / "y8.npy")))
    assert ran["precision"] == "int8" and ran["config"] == 1
    loaded = load_selection(sel)
    qdq = quantize_subnetwork(loaded.subnets[1], loaded.shared, quantize_shared(loaded.shared), (1, 8, 8),
                              np.load(loaded.calibration))
    np.testing.assert_array_equal(np.load(tmp_path / "y8.npy"), ReferenceModel(qdq).run(x)[0])

