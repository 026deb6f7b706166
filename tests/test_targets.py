"""Target descriptors and the `tvmnas targets` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvmnas.cli import app
from tvmnas.errors import TargetDescriptorError, UnknownTargetError
from tvmnas.targets import DEFAULT_TARGET, DESCRIPTOR_DIR, list_targets, load_target, parse_descriptor

EXPECTED = {
    "cortex-m0": ("microbit", False),
    "cortex-m3": ("mps2-an385", False),
    "cortex-m4": ("mps2-an386", True),
    "cortex-m7": ("mps2-an500", True),
    "cortex-m33": ("mps2-an505", True),
    "cortex-m55": ("mps3-an547", True),
}


def test_every_target_is_listed_with_its_machine_and_fpu() -> None:
    found = {t.name: (t.emulator_machine, t.has_fpu) for t in list_targets()}
    assert found == EXPECTED
    assert [t.name for t in list_targets()] == list(EXPECTED)  # natural order


def test_default_target_is_the_cortex_m4() -> None:
    target = load_target(DEFAULT_TARGET)
    assert target.name == "cortex-m4"
    assert "-mfpu=fpv4-sp-d16" in target.cflags and "-mfloat-abi=hard" in target.cflags


@pytest.mark.parametrize("name", list(EXPECTED))
def test_descriptor_is_consistent(name: str) -> None:
    target = load_target(name)
    assert f"-mcpu={target.core}" in target.cflags and "-mthumb" in target.cflags
    assert ("-mfloat-abi=hard" in target.cflags) == target.has_fpu
    assert target.linker_script.is_file()
    # -O3, and separate multiply/add (VMUL+VADD: 2 cycles on FPv4, against 3 for a fused VFMA)
    assert target.opt_flags[:2] == ("-O3", "-ffp-contract=off")
    assert target.clock_hz > 0 and target.flash_bytes > target.sram_bytes > 0
    assert target.timing_table == f"{name}.json"


def test_micro_bit_budgets_are_the_real_parts() -> None:
    target = load_target("cortex-m0")
    assert (target.clock_hz, target.flash_bytes, target.sram_bytes) == (16_000_000, 256 * 1024, 16 * 1024)


def test_cortex_m33_is_an_stm32u575_with_dsp_and_fpv5() -> None:
    target = load_target("cortex-m33")
    assert (target.clock_hz, target.flash_bytes, target.sram_bytes) == (160_000_000, 2048 * 1024, 768 * 1024)
    assert "STM32U575" in target.board_name
    assert "-mfpu=fpv5-sp-d16" in target.cflags and not any("nodsp" in f for f in target.cflags)
    # AN505 timers run on its 20 MHz main clock; the oversized-firmware map uses its PSRAM
    assert (target.counter, target.counter_hz) == ("cmsdk-timer0", 20_000_000)
    assert target.large_linker_script is not None and target.large_linker_script.is_file()
    assert "0x80000000" in target.large_linker_script.read_text()


def test_unknown_target_lists_known_names() -> None:
    with pytest.raises(UnknownTargetError, match=r"unknown target 'cortex-m99' \(known: cortex-m0, .*cortex-m55\)"):
        load_target("cortex-m99")


def _descriptor(tmp_path: Path, **changes: object) -> Path:
    data = json.loads((DESCRIPTOR_DIR / "cortex-m4.json").read_text())
    data.update(changes)
    path = tmp_path / "cortex-m4.json"
    path.write_text(json.dumps(data))
    return path


def test_unknown_descriptor_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TargetDescriptorError, match=r"unknown keys \['fpu_flags'\]"):
        parse_descriptor(_descriptor(tmp_path, fpu_flags="x"))


def test_mistyped_descriptor_value_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TargetDescriptorError, match="'clock_hz' must be int"):
        parse_descriptor(_descriptor(tmp_path, clock_hz="120 MHz"))


def test_missing_descriptor_key_is_an_error(tmp_path: Path) -> None:
    path = _descriptor(tmp_path)
    data = json.loads(path.read_text())
    del data["sram_bytes"]
    path.write_text(json.dumps(data))
    with pytest.raises(TargetDescriptorError, match=r"missing keys \['sram_bytes'\]"):
        parse_descriptor(path)


def test_opt_flags_default_to_o3(tmp_path: Path) -> None:
    path = _descriptor(tmp_path)
    data = json.loads(path.read_text())
    del data["opt_flags"]
    path.write_text(json.dumps(data))
    assert parse_descriptor(path).opt_flags == ("-O3",)


def test_targets_command_prints_a_table() -> None:
    result = CliRunner().invoke(app, ["targets"])
    assert result.exit_code == 0, result.output
    for name, (machine, _) in EXPECTED.items():
        assert name in result.output and machine in result.output
    assert "NUCLEO-L4R5ZI" in result.output and "120 MHz" in result.output


def test_targets_command_json() -> None:
    result = CliRunner().invoke(app, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(EXPECTED)
    assert rows[0]["sram_bytes"] == 16 * 1024 and rows[0]["emulator_machine"] == "microbit"
