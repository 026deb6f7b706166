"""Target descriptors: core, compiler flags, emulator machine and a real board's budgets.

One JSON file per target lives in `descriptors/`; the board support C (startup, linker scripts,
semihosting, the harness) lives in `board/`, and per-core timing tables in `timing/`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from tvmnas.errors import TargetDescriptorError, UnknownTargetError

DEFAULT_TARGET = "cortex-m4"
DESCRIPTOR_DIR = Path(__file__).resolve().parent / "descriptors"
BOARD_DIR = Path(__file__).resolve().parent / "board"
TIMING_DIR = Path(__file__).resolve().parent / "timing"
COUNTERS = ("cmsdk-timer0", "systick")
# Emulated machines with more memory than the real part: the linker script a firmware that
# overflows the usual memory map is relinked with (emulator only; budgets are checked elsewhere).
LARGE_LINKER_SCRIPTS = {
    "mps2-an385": "mps2_an385_an386_large.ld",
    "mps2-an386": "mps2_an385_an386_large.ld",
    "mps2-an500": "mps2_an500_large.ld",
    "mps2-an505": "mps2_an505_large.ld",
    "mps3-an547": "mps3_an547_large.ld",
}


@dataclass(frozen=True)
class Target:
    """One compilation and emulation target, plus the budgets of a real board with that core.

    flash_bytes / sram_bytes / clock_hz describe the real board; QEMU does not enforce them.
    counter names the timer the harness counts instructions with, ticking at counter_hz.
    """

    name: str
    core: str
    description: str
    cflags: tuple[str, ...]
    has_fpu: bool
    emulator_machine: str
    memory_map: str
    counter: str
    counter_hz: int
    board_name: str
    clock_hz: int
    flash_bytes: int
    sram_bytes: int
    timing_table: str
    opt_flags: tuple[str, ...] = field(default=("-O3",))
    dsp: bool = False  # the DSP extension (SMLAD, SXTB16): int8 conv/dense use SIMD micro-kernels
    calibrated_from: str = ""  # "N kernels measured on BOARD" for a target calibrated from a board
    c_language: str = "c99"  # the C tables kernels are printed with (codegen.c_printer.LANGUAGES)

    @property
    def linker_script(self) -> Path:
        """The linker script for this target's memory map."""
        return BOARD_DIR / f"{self.memory_map}.ld"

    @property
    def large_linker_script(self) -> Path | None:
        """The emulator's larger memory layout for a firmware that overflows `linker_script`
        (code and weights in the machine's big RAM), or None where the machine has none."""
        name = LARGE_LINKER_SCRIPTS.get(self.emulator_machine)
        return BOARD_DIR / name if name else None

    @property
    def timing_table_path(self) -> Path:
        """Where this core's timing table lives (the file may not exist yet)."""
        return TIMING_DIR / self.timing_table


_TYPES: dict[str, type] = {
    "name": str,
    "core": str,
    "description": str,
    "cflags": list,
    "opt_flags": list,
    "has_fpu": bool,
    "emulator_machine": str,
    "memory_map": str,
    "counter": str,
    "counter_hz": int,
    "board_name": str,
    "clock_hz": int,
    "flash_bytes": int,
    "sram_bytes": int,
    "timing_table": str,
    "dsp": bool,
    "calibrated_from": str,
    "c_language": str,
}


def parse_descriptor(path: Path, expected_name: str | None = None) -> Target:
    """Validate one descriptor file strictly and build its Target."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TargetDescriptorError(f"target descriptor {path}: unreadable: {err}") from err
    if not isinstance(raw, dict):
        raise TargetDescriptorError(f"target descriptor {path}: expected a JSON object")
    known = {f.name for f in fields(Target)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TargetDescriptorError(f"target descriptor {path}: unknown keys {unknown}")
    missing = sorted(k for k in known - set(raw) if k not in ("opt_flags", "dsp", "calibrated_from", "c_language"))
    if missing:
        raise TargetDescriptorError(f"target descriptor {path}: missing keys {missing}")
    for key, value in raw.items():
        expected = _TYPES[key]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is list:
            ok = ok and all(isinstance(v, str) for v in value)
        if not ok:
            raise TargetDescriptorError(
                f"target descriptor {path}: '{key}' must be {expected.__name__}, got {value!r}"
            )
    if raw["counter"] not in COUNTERS:
        raise TargetDescriptorError(
            f"target descriptor {path}: counter '{raw['counter']}' is not one of {list(COUNTERS)}"
        )
    if raw["name"] != (expected_name or path.stem):
        raise TargetDescriptorError(f"target descriptor {path}: name '{raw['name']}' differs from the file name")
    values = dict(raw)
    values["cflags"] = tuple(raw["cflags"])
    values["opt_flags"] = tuple(raw.get("opt_flags", ["-O3"]))
    return Target(**values)


@lru_cache(maxsize=None)
def _all_targets(directory: Path = DESCRIPTOR_DIR) -> dict[str, Target]:
    paths = sorted(directory.glob("*.json"), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.stem)])
    return {p.stem: parse_descriptor(p) for p in paths}


def list_targets() -> list[Target]:
    """Every known target, in natural name order (cortex-m0, m3, m4, m7, m33, m55)."""
    return list(_all_targets().values())


def load_target(name: str) -> Target:
    """The target called `name`: a shipped one, else a user target (tvmnas.board.user_targets,
    e.g. one calibrated from a board); UnknownTargetError lists the known names otherwise."""
    targets = _all_targets()
    if name not in targets:
        from tvmnas.board.user_targets import DESCRIPTOR, user_file, user_target_names

        path = user_file(name, DESCRIPTOR)
        if path is not None:
            target = parse_descriptor(path, expected_name=name)
            return target
        targets = {**targets, **{n: None for n in user_target_names()}}
        raise UnknownTargetError(f"unknown target '{name}' (known: {', '.join(targets)})")
    return targets[name]


__all__ = ["BOARD_DIR", "DEFAULT_TARGET", "Target", "list_targets", "load_target", "parse_descriptor"]
