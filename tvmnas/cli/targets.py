"""`tvmnas targets`: the known targets with their core, emulator, board and budgets."""

from __future__ import annotations

import dataclasses
import json

import typer
from rich.console import Console
from rich.table import Table

from tvmnas.cli.app import app
from tvmnas.targets import list_targets


@app.command("targets")
def targets_command(
    as_json: bool = typer.Option(False, "--json", help="Print the descriptors as JSON instead of a table."),
) -> None:
    """List targets: core, emulator machine, real board, clock, flash and SRAM budgets (calibrated
    user targets from ~/.tvmnas/targets or $TVMNAS_TARGETS_DIR last)."""
    from tvmnas.board.user_targets import user_target_names
    from tvmnas.targets import load_target

    targets = list_targets() + [load_target(n) for n in user_target_names()]
    if as_json:
        print(json.dumps([dataclasses.asdict(t) for t in targets], indent=2))
        return
    table = Table(title="tvmnas targets (budgets are the real board's; QEMU does not enforce them)")
    for column in ("name", "core", "emulator", "board", "clock", "flash", "SRAM"):
        table.add_column(column, justify="right" if column in ("clock", "flash", "SRAM") else "left")
    for t in targets:
        table.add_row(
            t.name,
            t.core + (" +FPU" if t.has_fpu else "") + (" +DSP" if t.dsp else ""),
            t.emulator_machine,
            t.board_name,
            f"{t.clock_hz / 1e6:g} MHz",
            f"{t.flash_bytes // 1024:,} KiB",
            f"{t.sram_bytes // 1024:,} KiB",
        )
    Console(width=160).print(table)
