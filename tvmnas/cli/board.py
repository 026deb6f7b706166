"""Board timing: `tvmnas cost calibration-set` (one firmware timing a few dozen kernels),
`tvmnas cost calibrate` (fit a target to a board's measurements) and the firmware that
`tvmnas profile --board-firmware` writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli import options
from tvmnas.cli.cost import cost_app


def placement_from(weights: str, arena_section: str, arena_memory: Optional[str], flash: Optional[str],
                   ram: Optional[str]):
    """The firmware placement the CLI options describe."""
    from tvmnas.board.firmware import Placement, parse_memory

    placement = Placement(
        weights=weights, arena_section=arena_section,
        arena_memory=parse_memory(arena_memory, "arena memory") if arena_memory else None,
        flash=parse_memory(flash, "flash memory") if flash else None,
        ram=parse_memory(ram, "RAM memory") if ram else None)
    placement.check()
    return placement


WEIGHTS_HELP = "Board firmware: weights in 'flash' (read through its wait states) or 'ram' (copied at reset)."
ARENA_SECTION_HELP = "Board firmware: the section the activation arena goes in."
ARENA_MEMORY_HELP = "Board firmware: ORIGIN:LENGTH of a memory of its own for the arena (e.g. 0x10000000:64K)."
FLASH_HELP = "Board firmware: ORIGIN:LENGTH of the board's flash (default from the target's board)."
RAM_HELP = "Board firmware: ORIGIN:LENGTH of the board's RAM (default from the target's board)."


def write_profile_firmware(model: Path, target_name: str, out_dir: Path, placement, optimize: str,
                           precision: str | None = None) -> dict:
    """`tvmnas profile MODEL --board-firmware DIR`: the model's timing firmware with each kernel's
    emulated instruction mix in kernels.json (so its board lines can calibrate a target too)."""
    import tempfile

    from tvmnas.board.calibration_set import model_features
    from tvmnas.board.firmware import FirmwareModel, write_firmware
    from tvmnas.measure.profiler import lower_network
    from tvmnas.targets import load_target

    tgt = load_target(target_name)
    network = lower_network(model, optimize=optimize, simd=tgt.dsp, precision=precision)
    with tempfile.TemporaryDirectory(prefix="tvmnas-fw-") as tmp:
        features = model_features(network, tgt, Path(tmp))
    manifest_path = write_firmware([FirmwareModel(Path(model).stem, network)], tgt, out_dir, placement=placement)
    manifest = json.loads(manifest_path.read_text())
    for k, f in zip(manifest["kernels"], features, strict=True):
        k["features"] = f
        k["instructions"] = int(sum(v for n, v in f.items() if n.startswith("n:")))
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return {"firmware": str(out_dir), "target": tgt.name, "board": tgt.board_name,
            "kernels": [{"id": k["id"], "name": k["name"], "instructions": k["instructions"]} for k in manifest["kernels"]],
            "build": f"make -C {out_dir}", "emulator": f"make -C {out_dir} run-emu"}


@cost_app.command("calibration-set")
def calibration_set_command(
    target: str = options.target(),
    out: Path = options.out("New folder for the firmware project."),
    arena_section: str = typer.Option(".bss.tvmnas_arena", "--arena-section", help=ARENA_SECTION_HELP),
    arena_memory: Optional[str] = typer.Option(None, "--arena-memory", help=ARENA_MEMORY_HELP),
    flash: Optional[str] = typer.Option(None, "--flash", help=FLASH_HELP),
    ram: Optional[str] = typer.Option(None, "--ram", help=RAM_HELP),
) -> None:
    """Write one firmware that times a few dozen float32 and int8 kernels on a board (`make`, flash, capture)."""
    from tvmnas.board.calibration_set import write_calibration_set
    from tvmnas.targets import load_target

    tgt = load_target(target)
    placement = placement_from("flash", arena_section, arena_memory, flash, ram)
    print(f"building the calibration set for {tgt.name} (each kernel's instruction mix on {tgt.emulator_machine}) ...",
          file=sys.stderr)
    manifest = write_calibration_set(tgt, out, placement=placement, progress=lambda m: print(m, file=sys.stderr))
    print(json.dumps({"firmware": str(out), "target": tgt.name, "board": tgt.board_name,
                      "kernels": len(manifest["kernels"]), "build": f"make -C {out}",
                      "emulator": f"make -C {out} run-emu"}))


@cost_app.command("calibrate")
def calibrate_command(
    measurements: Path = typer.Argument(..., help="Captured firmware output (tvmnas-kernel lines) or a CSV of them."),
    target: str = options.target("Target the firmware was built for."),
    calibration_set: Path = typer.Option(..., "--set", help="The firmware folder (tvmnas cost calibration-set --out)."),
    out: str = options.out("Name of the new target (written to $TVMNAS_TARGETS_DIR or ~/.tvmnas/targets)."),
    board: Optional[str] = typer.Option(None, "--board", help="Board name for reports (default: the target's board)."),
    rounds: int = typer.Option(600, "--rounds", min=10, help="Boosting rounds of the refitted surrogate."),
) -> None:
    """Fit the target's timing table to a board's measurements, refit the cost models, write a new target."""
    from tvmnas.board.refit import calibrate_target

    summary = calibrate_target(measurements, calibration_set, target, out, board=board, rounds=rounds,
                               progress=lambda m: print(m, file=sys.stderr))
    print(json.dumps({k: summary[k] for k in ("target", "base", "board", "unit", "kernels", "note", "fit",
                                               "refit_kernels", "folder")}))
