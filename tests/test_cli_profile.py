"""`tvmnas profile` (per-kernel JSON of a network) and `tvmnas profile-ops` (database fill, kill and resume)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvmnas.cli import app
from tvmnas.cli.options import error_line
from tvmnas.errors import TvmnasError, UnknownTargetError
from tvmnas.search.cost import count_module
from tvmnas.measure.store import ProfileDB
from tvmnas.model_file import export_onnx
from zoo import get_entry

CLI = [sys.executable, "-c", "from tvmnas.cli import main; main()"]
CHEAP_OPS = "pointwise,max_pool,add,linear,depthwise,avg_pool,global_avg_pool"


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_profile_prints_every_kernel_and_totals_that_add_up(tmp_path: Path) -> None:
    entry = get_entry("m0_cnn")
    model = entry.build()
    onnx_path = export_onnx(model, entry.input_shape, tmp_path / "m0_cnn.onnx")
    result = CliRunner().invoke(app, ["profile", str(onnx_path), "--target", "cortex-m0"])
    assert result.exit_code == 0, result.output
    report = last_json(result.stdout)
    assert report["cycles_note"] == "estimated from a per-core timing table"
    kernels = report["kernels"]
    assert len(kernels) >= 4
    assert all(set(k) >= {"name", "macs", "instructions", "cycles"} for k in kernels)
    assert all(k["instructions"] > 0 and k["cycles"] >= k["instructions"] for k in kernels)
    assert report["instructions"] == report["preamble_instructions"] + sum(k["instructions"] for k in kernels)
    assert report["cycles"] > sum(k["cycles"] for k in kernels) - 1
    assert sum(k["macs"] for k in kernels) == count_module(model, entry.input_shape[1:]).macs


def test_profile_optimize_size_times_the_size_build(tmp_path: Path) -> None:
    entry = get_entry("m0_cnn")
    onnx_path = export_onnx(entry.build(), entry.input_shape, tmp_path / "m0_cnn.onnx")
    reports = {}
    for goal in ("speed", "size"):
        result = CliRunner().invoke(app, ["profile", str(onnx_path), "--target", "cortex-m4", "--optimize", goal])
        assert result.exit_code == 0, result.output
        reports[goal] = last_json(result.stdout)
    speed, size = reports["speed"], reports["size"]
    assert [k["macs"] for k in speed["kernels"]] == [k["macs"] for k in size["kernels"]]
    # rolled windows are other kernels: other hashes and other counts, for the same work
    assert {k["kernel_hash"] for k in speed["kernels"]} != {k["kernel_hash"] for k in size["kernels"]}
    assert speed["instructions"] != size["instructions"]


def test_profile_of_a_missing_model_or_unknown_target_is_one_clear_error(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["profile", str(tmp_path / "nope.onnx"), "--target", "cortex-m4"])
    assert missing.exit_code != 0 and isinstance(missing.exception, TvmnasError)
    assert "nope.onnx" in str(missing.exception) and "\n" not in str(missing.exception)
    unknown = CliRunner().invoke(app, ["profile", str(tmp_path / "nope.onnx"), "--target", "cortex-m99"])
    assert isinstance(unknown.exception, UnknownTargetError)
    assert "cortex-m99" in str(unknown.exception)


def test_profile_ops_fills_the_database_and_a_rerun_measures_nothing(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    args = ["profile-ops", "--target", "cortex-m4", "--count", "2", "--db", str(db), "--seed", "3", "--ops", CHEAP_OPS]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = last_json(first.stdout)
    assert (summary["measured"], summary["cached"], summary["failed"], summary["candidates_in_db"]) == (2, 0, 0, 2)
    second = last_json(CliRunner().invoke(app, args).stdout)
    assert (second["measured"], second["cached"], second["kernels_in_db"]) == (0, 2, summary["kernels_in_db"])


def test_profile_ops_rejects_an_unknown_op_type(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["profile-ops", "--db", str(tmp_path / "p.db"), "--ops", "conv,warp"])
    assert isinstance(result.exception, TvmnasError) and "'warp'" in str(result.exception)


def _candidate_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def _snapshot(db: Path) -> tuple[list, list]:
    with ProfileDB(db) as opened:
        return opened.kernels(), opened.candidates()


@pytest.mark.slow
@pytest.mark.ci
def test_profile_ops_killed_and_resumed_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    count = 6
    common = ["profile-ops", "--target", "cortex-m4", "--count", str(count), "--seed", "11", "--ops", CHEAP_OPS]
    killed_db, clean_db = tmp_path / "killed.db", tmp_path / "clean.db"

    proc = subprocess.Popen([*CLI, *common, "--jobs", "2", "--db", str(killed_db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while _candidate_count(killed_db) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its workers, mid-run
    proc.communicate()
    landed = _candidate_count(killed_db)
    assert 2 <= landed < count, f"the run was not interrupted mid-way ({landed} of {count} landed)"

    resumed = subprocess.run([*CLI, *common, "--jobs", "2", "--db", str(killed_db)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = last_json(resumed.stdout)
    assert summary["cached"] == landed and summary["measured"] == count - landed

    clean = subprocess.run([*CLI, *common, "--jobs", "1", "--db", str(clean_db)], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    assert _snapshot(killed_db) == _snapshot(clean_db)
    kernels, candidates = _snapshot(clean_db)
    assert len(candidates) == count and len({k.key for k in kernels}) == len(kernels)


def test_profile_precision_int8_prices_a_float_model_as_its_int8_build(tmp_path: Path) -> None:
    entry = get_entry("m0_cnn")
    onnx_path = export_onnx(entry.build(), entry.input_shape, tmp_path / "m0_cnn.onnx")
    reports = {}
    for precision in ("float32", "int8"):
        result = CliRunner().invoke(app, ["profile", str(onnx_path), "--target", "cortex-m4", "--precision", precision])
        assert result.exit_code == 0, result.output
        reports[precision] = last_json(result.stdout)
    f32, i8 = reports["float32"], reports["int8"]
    assert (f32["precision"], i8["precision"]) == ("float32", "int8")
    assert all("int8" in k["name"] for k in i8["kernels"] if k["macs"] > 0)
    assert sum(k["macs"] for k in i8["kernels"]) == sum(k["macs"] for k in f32["kernels"])
    assert i8["cycles"] != f32["cycles"]
    # the quantized model itself is int8 as it is, and refused as float32
    from tvmnas.quant.quantize import quantize_model
    import numpy as np
    import onnx

    qdq = tmp_path / "m0_cnn-int8.onnx"
    onnx.save(quantize_model(onnx_path, np.zeros((1, *entry.input_shape[1:]), np.float32)), str(qdq))
    again = CliRunner().invoke(app, ["profile", str(qdq), "--target", "cortex-m4", "--precision", "int8"])
    assert again.exit_code == 0, again.output
    assert [k["kernel_hash"] for k in last_json(again.stdout)["kernels"]] != []
    refused = CliRunner().invoke(app, ["profile", str(qdq), "--target", "cortex-m4", "--precision", "float32"])
    assert isinstance(refused.exception, TvmnasError)
    assert "quantized (int8)" in error_line(refused.exception)
    bad = CliRunner().invoke(app, ["profile", str(onnx_path), "--target", "cortex-m4", "--precision", "int4"])
    assert isinstance(bad.exception, TvmnasError) and "--precision 'int4'" in error_line(bad.exception)
