"""The end-to-end job at int8 on a reduced setting: QAT, the int8 bundle verified on QEMU against the
integer reference and the int8 PyTorch network, budgets on the int8 build, the float32 build beside
it in the report, stage records and resuming with the new stages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tvmnas.errors import BudgetExceededError, TvmnasError
from tvmnas.pipeline import BUNDLE_DIR, INT8_STAGES, PipelineSettings, StageLog, _stage_compile, run_pipeline
from tvmnas.stage_results import QuantizeResult, TrainResult
from tvmnas.targets import load_target

REDUCED_INT8 = PipelineSettings(
    limit_train=400, search_epochs=1, train_epochs=2, chain_layers=((8, 1), (8, 2)), verify_images=24,
    cost_model="mac", precision="int8", qat_epochs=1,
)


def _require_tools() -> None:
    missing = [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run scripts/setup.sh or "
                    "'apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm'")


@pytest.fixture(scope="module")
def run8(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One reduced int8 run shared by the tests below."""
    _require_tools()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pipeline_int8") / "demo"
    return out, run_pipeline(out, REDUCED_INT8).summary


@pytest.mark.slow
@pytest.mark.ci
def test_int8_run_deploys_a_verified_int8_bundle(run8: tuple[Path, dict]) -> None:
    out, summary = run8
    assert summary["precision"] == "int8" and json.loads((out / "summary.json").read_text())["precision"] == "int8"
    manifest = json.loads((out / BUNDLE_DIR / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    for name in ("model_int8.onnx", "metrics_int8.json", "model.onnx", "report.md"):
        assert (out / name).is_file(), name
    q = summary["quantize"]["metrics"]
    assert summary["test_accuracy"] == q["test_accuracy"] and 0.0 <= q["ptq_test_accuracy"] <= 1.0
    verify = summary["verify"]
    assert verify["passed"] and verify["classes_agree"] == verify["images"] == 24
    assert verify["max_lsb_diff_reference"] == 0 and verify["max_lsb_diff_pytorch"] <= 1
    # the stage records of every int8 stage, each with the digests of what it wrote
    for stage in INT8_STAGES[:-1]:
        record = json.loads((out / "work" / "stages" / f"{stage}.json").read_text())
        assert "result" in record and isinstance(record["outputs"], dict), stage
    assert any(k.endswith("model_int8.onnx") for k in
               json.loads((out / "work" / "stages" / "quantize.json").read_text())["outputs"])


@pytest.mark.slow
def test_report_puts_int8_and_float32_side_by_side(run8: tuple[Path, dict]) -> None:
    out, summary = run8
    f32 = summary["float32"]
    assert f32["manifest"]["precision"] == "float32" and f32["cycles"] > 0
    assert f32["memory"]["arena_bytes"] > summary["build"]["memory"]["arena_bytes"]  # 4-byte vs 1-byte tensors
    md = (out / "report.md").read_text()
    table = md[md.index("## int8 and float32 side by side"):]
    for figure in (f"{summary['test_accuracy']:.2%}", f"{f32['test_accuracy']:.2%}",
                   f"~{summary['profile']['cycles']:,}", f"~{f32['cycles']:,}",
                   f"{summary['build']['memory']['sram_bytes']:,} B", f"{f32['memory']['sram_bytes']:,} B",
                   f"{summary['build']['memory']['flash_bytes']:,} B", f"{f32['memory']['flash_bytes']:,} B"):
        assert figure in table, figure
    assert "**int8**" in md and "cycles per inference (estimate)" in table


@pytest.mark.slow
def test_budgets_are_checked_against_the_int8_build(run8: tuple[Path, dict], tmp_path: Path) -> None:
    """An SRAM budget between the int8 and the float32 arena: the int8 model compiles, the float
    model is refused naming both sizes."""
    out, summary = run8
    int8_arena = summary["compile"]["manifest"]["arena_bytes"]
    f32_arena = summary["float32"]["manifest"]["arena_bytes"]
    target = replace(load_target("cortex-m4"), sram_bytes=(int8_arena + f32_arena) // 2)
    log = StageLog(False)
    trained, quantized = TrainResult.from_json(summary["train"]), QuantizeResult.from_json(summary["quantize"])
    compiled = _stage_compile(REDUCED_INT8, target, trained, tmp_path, log, quantized, bundle=tmp_path / "int8")
    assert compiled.manifest["arena_bytes"] == int8_arena
    with pytest.raises(BudgetExceededError, match=f"activation arena needs {f32_arena:,} bytes"):
        _stage_compile(REDUCED_INT8, target, trained, tmp_path, log, bundle=tmp_path / "f32")


@pytest.mark.slow
def test_rerun_resumes_and_a_precision_change_is_refused(run8: tuple[Path, dict]) -> None:
    out, summary = run8
    again = run_pipeline(out, REDUCED_INT8)
    assert again.stage_seconds["quantize"] == 0.0 and again.stage_seconds["float32"] == 0.0
    assert again.summary["verify"] == summary["verify"]
    with pytest.raises(TvmnasError, match=r'precision "int8" -> "float32"'):
        run_pipeline(out, replace(REDUCED_INT8, precision="float32"))
    with pytest.raises(TvmnasError, match=r"qat_epochs 1 -> 2"):
        run_pipeline(out, replace(REDUCED_INT8, qat_epochs=2))


@pytest.mark.slow
def test_a_changed_int8_model_reruns_quantize_and_what_follows(run8: tuple[Path, dict]) -> None:
    out, summary = run8
    model = out / "work" / "qat" / "model_int8.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    again = run_pipeline(out, REDUCED_INT8)
    assert again.stage_seconds["search"] == 0.0 and again.stage_seconds["train"] == 0.0
    assert again.stage_seconds["quantize"] > 0.0 and again.stage_seconds["compile"] > 0.0
    assert again.summary["verify"]["passed"]
    np.testing.assert_array_equal(np.load(out / "work" / "verify_emulated_logits.npy"),
                                  np.load(out / "work" / "verify_reference_logits.npy"))


@pytest.mark.slow
def test_darts_space_runs_int8_end_to_end(tmp_path: Path) -> None:
    """The darts space at int8: FactorizedReduce (ceil_mode pool), pools with padding, separable and
    dilated convolutions, cell adds and concats, QAT, then the bundle on QEMU equal to the int8
    PyTorch network and the integer reference for every verified image."""
    _require_tools()
    torch.set_num_threads(1)
    settings = replace(REDUCED_INT8, space="darts", channels=4, cells=2)
    summary = run_pipeline(tmp_path / "darts", settings).summary
    verify = summary["verify"]
    assert summary["precision"] == "int8" and verify["passed"]
    assert verify["max_lsb_diff_pytorch"] <= 1 and verify["max_lsb_diff_reference"] == 0
    assert verify["classes_agree"] == verify["images"]


def test_unknown_precision_is_one_line() -> None:
    with pytest.raises(TvmnasError, match="unknown precision 'int4' \\(expected one of float32, int8\\)"):
        PipelineSettings(precision="int4")


def test_cli_takes_the_precision(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tvmnas.cli import app

    result = CliRunner().invoke(app, ["run-all", "--help"])
    assert result.exit_code == 0 and "--precision" in result.output and "--qat-epochs" in result.output
    script = Path(__file__).resolve().parents[1] / "scripts" / "search_and_compile.py"
    proc = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "o"), "--precision", "int4",
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: unknown precision 'int4' (expected one of float32, int8)"
    assert not (tmp_path / "o").exists()


def test_a_folder_recorded_before_int8_settings_resumes_as_float32(tmp_path: Path) -> None:
    """settings.json of a run made before precision existed reads as float32: a float32 rerun
    resumes it, an int8 one is refused naming precision."""
    from tvmnas.pipeline import SETTINGS_FILE, _check_settings

    work = tmp_path / "work"
    work.mkdir()
    recorded = {k: v for k, v in PipelineSettings().to_dict().items()
                if k not in ("precision", "qat_epochs", "int8_tolerance")}
    (work / SETTINGS_FILE).write_text(json.dumps({**recorded, "search_cost_model": "note"}))
    _check_settings(work, PipelineSettings(), False, "note")
    (work / SETTINGS_FILE).write_text(json.dumps({**recorded, "search_cost_model": "note"}))
    with pytest.raises(TvmnasError, match=r'precision "float32" -> "int8"'):
        _check_settings(work, PipelineSettings(precision="int8"), False, "note")
