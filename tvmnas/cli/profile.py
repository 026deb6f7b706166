"""`tvmnas profile MODEL --target NAME` (per-kernel figures of one network) and
`tvmnas profile-ops` (fill the profile database with sampled candidate kernels)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer

from tvmnas.cli import options
from tvmnas.cli.app import app
from tvmnas.errors import TvmnasError

# Sampled candidates must fit the real board: activations in half its SRAM, weights in an eighth of
# its flash, and time quickly on the emulator.
SAMPLE_MAX_MACS = 2_000_000
SAMPLE_MAX_ACTIVATION_BYTES = 256 * 1024
SAMPLE_MAX_WEIGHTS = 64 * 1024


@app.command("profile")
def profile_command(
    model: Path = typer.Argument(..., help="Model file: .onnx or a saved torch.export program (.pt2)."),
    target: str = options.target(),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds before the guest counts as hung."),
    optimize: str = typer.Option("speed", "--optimize",
                                 help="Kernels as `tvmnas compile --optimize` builds them: speed or size."),
    precision: Optional[str] = options.price_precision(),
    board_firmware: Optional[Path] = typer.Option(
        None, "--board-firmware", help="Write a firmware project timing each kernel on a real board (new folder) "
        "instead of profiling on the emulator."),
    weights_in: str = typer.Option("flash", "--weights-in", help="Board firmware: weights in 'flash' or 'ram'."),
    arena_section: str = typer.Option(".bss.tvmnas_arena", "--arena-section", help="Board firmware: the arena's section."),
    arena_memory: Optional[str] = typer.Option(None, "--arena-memory",
                                               help="Board firmware: ORIGIN:LENGTH of a memory of its own for the arena."),
    flash: Optional[str] = typer.Option(None, "--flash", help="Board firmware: ORIGIN:LENGTH of the board's flash."),
    ram: Optional[str] = typer.Option(None, "--ram", help="Board firmware: ORIGIN:LENGTH of the board's RAM."),
) -> None:
    """Time every fused kernel of a network in one emulator run: instructions (exact) and cycles (estimated)."""
    from tvmnas.model_file import check_model_file
    from tvmnas.targets import load_target

    tgt = load_target(target)
    check_model_file(model)
    if board_firmware is not None:
        from tvmnas.cli.board import placement_from, write_profile_firmware

        placement = placement_from(weights_in, arena_section, arena_memory, flash, ram)
        print(f"writing the timing firmware of {model} for {tgt.name} boards to {board_firmware} ...", file=sys.stderr)
        print(json.dumps(write_profile_firmware(model, tgt.name, board_firmware, placement, optimize, precision)))
        return
    from tvmnas.measure.profiler import profile_network_json

    print(f"profiling {model} on {tgt.name} ({tgt.emulator_machine}) ...", file=sys.stderr)
    report = profile_network_json(model, tgt, timeout_s=timeout_s, optimize=optimize, precision=precision)
    if tgt.calibrated_from:
        report["cycles_note"] = f"timing table calibrated from {tgt.calibrated_from}"
    print(json.dumps(report))


@app.command("profile-ops")
def profile_ops_command(
    target: str = options.target(),
    count: int = typer.Option(100, "--count", "-n", min=1, help="Number of sampled candidates."),
    jobs: Optional[int] = options.jobs(),
    executor: str = options.executor(),
    ray_address: Optional[str] = options.ray_address(),
    db_path: Path = typer.Option(..., "--db", help="SQLite profile database (created if absent or empty, resumed if "
                                 "present; a file that is not one is refused)."),
    seed: int = options.seed(help="Sampler seed: the same seed samples the same candidates."),
    ops: Optional[str] = typer.Option(None, "--ops", help="Comma-separated op types (default: all; see tvmnas.cost.sampler.OP_TYPES)."),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Seconds before a candidate's guest counts as hung."),
) -> None:
    """Profile sampled candidate kernels into the database; rerun to resume (finished ones are skipped)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tvmnas.cost.candidates import profile_candidates
    from tvmnas.measure.store import ProfileDB
    from tvmnas.cost.sampler import OP_TYPES, sample_ops
    from tvmnas.targets import load_target

    tgt = load_target(target)
    op_list = [o.strip() for o in ops.split(",") if o.strip()] if ops else list(OP_TYPES)
    unknown = [o for o in op_list if o not in OP_TYPES]
    if unknown:
        raise TvmnasError(f"unknown op type '{unknown[0]}' for --ops (known: {', '.join(OP_TYPES)})")
    specs = sample_ops(
        count,
        seed,
        ops=op_list,
        max_macs=SAMPLE_MAX_MACS,
        max_activation_bytes=min(SAMPLE_MAX_ACTIVATION_BYTES, tgt.sram_bytes // 2),
        max_weight_count=min(SAMPLE_MAX_WEIGHTS, tgt.flash_bytes // 32),
    )
    console = Console(stderr=True)
    start = time.monotonic()
    pool = options.make_fanout_executor(executor, jobs, ray_address)  # before the database: no file if it fails
    with pool, ProfileDB(db_path) as db, tempfile.TemporaryDirectory(prefix="tvmnas-profile-ops-") as work:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"), console=console, transient=False,
        ) as progress:
            task = progress.add_task(f"profiling on {tgt.name}", total=len(specs), last="")

            def on_done(item, status: str) -> None:
                progress.update(task, advance=1, last=f"{status}: {item.key}")

            stats = profile_candidates(specs, tgt, db, Path(work), executor=pool, timeout_s=timeout_s,
                                       on_done=on_done)
        kernels_in_db, candidates_in_db = db.counts()
    for failure in stats.failures:
        console.print(f"failed: {failure}", markup=False, highlight=False)
    summary = {
        "target": tgt.name,
        "db": str(db_path),
        "seed": seed,
        "requested": len(specs),
        "measured": stats.measured,
        "cached": stats.cached,
        "failed": len(stats.failures),
        "kernels_added": stats.kernels_added,
        "kernels_in_db": kernels_in_db,
        "candidates_in_db": candidates_in_db,
        "executor": executor,
        "jobs": pool.workers,
        "seconds": round(time.monotonic() - start, 1),
    }
    print(json.dumps(summary))
    if stats.failures:
        raise TvmnasError(f"{len(stats.failures)} of {len(specs)} candidates failed; first: {stats.failures[0]}")
