"""Board timing end to end: the firmware project builds with arm-none-eabi-gcc for board and
emulator with no edits, its emulator run prints one line per kernel with `tvmnas profile`'s
instruction counts; `tvmnas cost calibrate` on a simulated board writes a target whose refitted
surrogate prices held-out networks within +/-10%, and which `load_target`, `cost predict` and
reports use by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tvmnas.board.measurements import read_measurements

DATA = Path(__file__).parent / "data"


def tvmnas(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from tvmnas.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=3000, env={**os.environ, **(env or {})})


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("board") / "tiny.onnx"
    torch.onnx.export(small_net(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False)
    return path


def make(folder: Path, *goals: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(folder), *goals], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("target", ["cortex-m4"])
def test_profile_firmware_builds_and_its_emulator_run_matches_profile(onnx_model: Path, tmp_path: Path,
                                                                      target: str) -> None:
    out = tmp_path / "fw"
    proc = tvmnas("profile", str(onnx_model), "--target", target, "--board-firmware", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    built = make(out, "all", "emu")
    assert built.returncode == 0, built.stderr
    assert (out / "build" / "firmware.hex").is_file() and (out / "build-emu" / "firmware.elf").is_file()
    ran = make(out, "run-emu")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    capture = tmp_path / "capture.txt"
    capture.write_text(ran.stdout)
    rows = read_measurements(capture)
    assert all(r.unit == "instructions" and r.min == r.max for r in rows)
    prof = tvmnas("profile", str(onnx_model), "--target", target)
    assert prof.returncode == 0, prof.stderr
    expected = [k["instructions"] for k in json.loads(prof.stdout.strip().splitlines()[-1])["kernels"]]
    assert [r.min for r in rows] == expected
    assert [k["instructions"] for k in summary["kernels"]] == expected


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cortex-m0", "cortex-m55"])
def test_systick_firmware_matches_profile(tmp_path: Path, target: str) -> None:
    """Armv6-M (no DWT: SysTick on the board) and the AN547's SysTick emulator counter."""
    from tvmnas.board.firmware import FirmwareModel, Placement, write_firmware
    from tvmnas.measure.profiler import lower_network, profile_network_json
    from tvmnas.targets import load_target

    tgt = load_target(target)
    net = lower_network(small_net(), input_shape=(1, 3, 8, 8), simd=tgt.dsp)
    out = tmp_path / "fw"
    write_firmware([FirmwareModel("tiny", net)], tgt, out, placement=Placement(weights="ram"))
    assert "SYSTICK" in (out / "Makefile").read_text()
    assert "model_weights.o(.rodata" in (out / "board.ld").read_text()
    built = make(out, "all", "emu")
    assert built.returncode == 0, built.stderr
    ran = make(out, "run-emu")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    capture = tmp_path / "capture.txt"
    capture.write_text(ran.stdout)
    got = [r.min for r in read_measurements(capture)]
    expected = [k["instructions"] for k in profile_network_json(small_net(), tgt, input_shape=(1, 3, 8, 8))["kernels"]]
    assert got == expected


@pytest.mark.slow
def test_calibrate_on_a_simulated_board(tmp_path: Path, onnx_model: Path) -> None:
    """Measurements from a perturbed timing table (+ flash wait states + 2% noise) -> `cost calibrate`
    -> the new target's surrogate predicts the perturbed cycles of held-out networks within 10%."""
    from tvmnas.board.features import FLASH_READS, LinearTiming, linear_from_table
    from tvmnas.board.calibrate import EMPTY_MARK
    from tvmnas.board.mix import load_mix
    from tvmnas.board.refit import network_cycles
    from tvmnas.cost.surrogate import DATA_DIR, CostSurrogate, profiles_name
    from tvmnas.measure.store import open_profiles
    from tvmnas.measure.cycles import load_timing_table

    set_doc = json.loads((DATA / "calibration-set-cortex-m4.json").read_text())
    set_dir = tmp_path / "set"
    set_dir.mkdir()
    (set_dir / "kernels.json").write_text(json.dumps(set_doc))
    base = linear_from_table(load_timing_table("cortex-m4"))
    rng = np.random.default_rng(7)
    weights = {k: v * rng.uniform(0.7, 1.5) for k, v in base.weights.items()}
    weights[FLASH_READS] = 2.0
    board = LinearTiming(base.core, weights, base.default)
    lines = []
    for k in set_doc["kernels"]:
        feats = dict(k["features"])
        for n, v in EMPTY_MARK.items():
            feats[n] = feats.get(n, 0.0) - v
        c = int(round(board.cycles(feats) * (1 + 0.02 * rng.standard_normal())))
        lines.append(f"tvmnas-kernel {k['id']} {k['name']} cycles {c} {c + 2} 5")
    capture = tmp_path / "capture.txt"
    capture.write_text("\n".join(lines) + "\n")
    env = {"TVMNAS_TARGETS_DIR": str(tmp_path / "targets")}
    proc = tvmnas("cost", "calibrate", str(capture), "--target", "cortex-m4", "--set", str(set_dir),
                  "--out", "sim-board", "--board", "simulated L4R5", "--rounds", "300", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["note"] == f"{len(set_doc['kernels'])} kernels measured on simulated L4R5"
    folder = tmp_path / "targets" / "sim-board"
    assert {p.name for p in folder.iterdir()} == {"descriptor.json", "timing.json", "surrogate.json.gz",
                                                  "distilled.pt", "calibration.json"}
    # held-out networks (the stored profile data's eval split), priced by the refitted surrogate
    mix = load_mix(DATA_DIR / "mix-cortex-m4.json.gz")["kernels"]
    truth = network_cycles(board, "cortex-m4", mix, split="eval")
    assert len(truth) >= 15
    with open_profiles(DATA_DIR / profiles_name()) as db:
        features = {h: json.loads(f.features) for h, f in db.features("float32").items()}
        held = {n.name: [features[h] for _, h, _, _ in n.call_list] for n in db.networks("cortex-m4", "float32")
                if n.name in truth}
    surrogate = CostSurrogate.load(folder / "surrogate.json.gz", "sim-board")
    errors = [float(surrogate.predict(feats).sum()) / truth[name] - 1 for name, feats in held.items()]
    within = float(np.mean(np.abs(errors) <= 0.10))
    assert within >= 0.95, (within, sorted(np.abs(errors))[-5:])
    # the shipped surrogate (shipped table, no flash wait states) misses the board by far more
    shipped = CostSurrogate.load(DATA_DIR / "surrogate-cortex-m4.json.gz")
    shipped_err = [float(shipped.predict(feats).sum()) / truth[name] - 1 for name, feats in held.items()]
    assert np.median(np.abs(shipped_err)) > 3 * np.median(np.abs(errors))
    # the new target is used by name, and says how its cycles were obtained
    pred = tvmnas("cost", "predict", str(onnx_model), "--target", "sim-board", env=env)
    assert pred.returncode == 0, pred.stderr
    report = json.loads(pred.stdout.strip().splitlines()[-1])
    assert report["target"] == "sim-board"
    assert report["cycles_are"] == f"calibrated from {summary['note']}"
    again = tvmnas("cost", "calibrate", str(capture), "--target", "cortex-m4", "--set", str(set_dir),
                   "--out", "sim-board", env=env)
    assert again.returncode != 0 and "already exists" in again.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_calibration_set_firmware_times_every_kernel(tmp_path: Path) -> None:
    """`cost calibration-set` writes one firmware for all kernels; it builds for board and emulator,
    and its emulator run prints each kernel's instruction count as recorded with its mix (and as
    in the shipped test data)."""
    out = tmp_path / "calset"
    proc = tvmnas("cost", "calibration-set", "--target", "cortex-m4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "kernels.json").read_text())
    assert len(manifest["kernels"]) >= 30
    built = make(out, "all", "emu")
    assert built.returncode == 0, built.stderr
    ran = make(out, "run-emu")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    capture = tmp_path / "capture.txt"
    capture.write_text(ran.stdout)
    rows = read_measurements(capture)
    assert [(r.id, r.name, r.min) for r in rows] == [(k["id"], k["name"], k["instructions"]) for k in manifest["kernels"]]
    shipped = json.loads((DATA / "calibration-set-cortex-m4.json").read_text())
    assert [k["features"] for k in manifest["kernels"]] == [k["features"] for k in shipped["kernels"]]


@pytest.mark.slow
def test_arena_section_and_weights_placement_reach_the_board_image(tmp_path: Path) -> None:
    from tvmnas.board.firmware import FirmwareModel, Placement, write_firmware
    from tvmnas.measure.profiler import lower_network
    from tvmnas.targets import load_target

    tgt = load_target("cortex-m4")
    net = lower_network(small_net(), input_shape=(1, 3, 8, 8), simd=tgt.dsp)
    out = tmp_path / "fw"
    write_firmware([FirmwareModel("tiny", net)], tgt, out, placement=Placement(
        weights="ram", arena_section=".sram2", arena_memory=(0x10000000, 64 << 10)))
    built = make(out, "all")
    assert built.returncode == 0, built.stderr
    nm = subprocess.run(["arm-none-eabi-nm", str(out / "build" / "firmware.elf")], capture_output=True, text=True).stdout
    symbols = {parts[2]: int(parts[0], 16) for parts in (line.split() for line in nm.splitlines()) if len(parts) == 3}
    assert 0x10000000 <= symbols["arena"] < 0x10000000 + (64 << 10)
    weights = [a for name, a in symbols.items() if name.startswith("tvmnas_m00_") and name != "tvmnas_m00_run"
               and not name.endswith(("_input", "_input_init", "_output", "_names"))]
    assert weights and all(0x20000000 <= a < 0x20000000 + tgt.sram_bytes for a in weights)
    assert 0x08000000 <= symbols["tvmnas_m00_run"] < 0x08000000 + tgt.flash_bytes
