"""Running an ELF on QEMU under the block-profiling plugin, and the resulting per-kernel profile.

Instructions are exact (counted by the plugin inside the measured window); cycles are an estimate
from the core's timing table (see tvmnas.profiling.cycles for what the model leaves out).
Exception handlers inside the window are not counted. Limit: a device-register (MMIO) access
inside the window makes QEMU's -icount re-run part of a block, which the plugin then counts
twice; measured code must touch only memory (the harness reads its counter outside the window).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tvmnas.errors import EmulatorError, ToolchainMissingError
from tvmnas.profiling.blocks import PREAMBLE, BlockProfile, parse_block_profile
from tvmnas.profiling.cycles import TimingTable, estimate_segment_cycles, load_timing_table
from tvmnas.profiling.plugin import build_plugin, qemu_plugin_args
from tvmnas.runner import run
from tvmnas.targets import Target
from tvmnas.toolchain import run_tool

ICOUNT_SHIFT = 6
DEFAULT_PLUGIN_CACHE = Path(tempfile.gettempdir()) / "tvmnas-plugin"


@dataclass(frozen=True)
class KernelProfile:
    """One kernel segment: exact instructions and estimated cycles (mark call included)."""

    index: int
    instructions: int
    cycles: int


@dataclass(frozen=True)
class Profile:
    """One measured window: exact instructions, estimated cycles, and the per-kernel split.

    instructions == preamble_instructions + sum(k.instructions for k in kernels), and likewise
    for cycles; the preamble holds tvmnas_window_begin and the code before the first kernel mark.
    """

    instructions: int
    cycles: int
    kernels: list[KernelProfile]
    preamble_instructions: int
    preamble_cycles: int
    core: str
    taken_branches: int
    blocks: BlockProfile = field(repr=False, compare=False)

    @property
    def cpi(self) -> float:
        """Estimated cycles per instruction over the window."""
        return self.cycles / self.instructions if self.instructions else 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form; says which figures are exact and which are estimated."""
        return {
            "core": self.core,
            "instructions": self.instructions,
            "cycles": self.cycles,
            "cycles_are": "estimate from a per-core timing table",
            "instructions_are": "exact (emulated)",
            "preamble_instructions": self.preamble_instructions,
            "kernels": [
                {"index": k.index, "instructions": k.instructions, "cycles": k.cycles} for k in self.kernels
            ],
        }


def profile_from_blocks(blocks: BlockProfile, table: TimingTable, *, window: int = -1) -> Profile:
    """Apply the timing model to one window (default: the last) of a block profile."""
    one = blocks.window(window)
    cycles = estimate_segment_cycles(one, table)
    kernels = [
        KernelProfile(index=k, instructions=one.instructions(k), cycles=cycles[k]) for k in range(one.kernels())
    ]
    return Profile(
        instructions=one.instructions(),
        cycles=sum(cycles.values()),
        kernels=kernels,
        preamble_instructions=one.instructions(PREAMBLE),
        preamble_cycles=cycles[PREAMBLE],
        core=table.core,
        taken_branches=one.taken_branches(),
        blocks=one,
    )


def qemu_command(machine: str, elf: Path, *, icount_shift: int = ICOUNT_SHIFT) -> list[str]:
    """The project's standard deterministic QEMU command line for a bare-metal ELF."""
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise ToolchainMissingError("qemu-system-arm not found: install it with 'apt-get install qemu-system-arm'")
    return [
        qemu, "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
        "-semihosting-config", "enable=on,target=native",
        "-icount", f"shift={icount_shift},align=off,sleep=off",
        "-kernel", str(elf),
    ]


def run_block_profile(
    elf: Path,
    machine: str,
    *,
    timeout_s: float,
    cache_dir: Path = DEFAULT_PLUGIN_CACHE,
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
) -> BlockProfile:
    """Run an ELF on QEMU `machine` under the plugin and return its block profile (all windows).

    Raises EmulatorError when QEMU times out, exits non-zero or no window completed.
    """
    plugin_so = build_plugin(cache_dir)
    with tempfile.TemporaryDirectory(prefix="tvmnas-profile-") as tmp:
        out = Path(tmp) / "profile.txt"
        cmd = [*qemu_command(machine, elf), *qemu_plugin_args(plugin_so, elf, out), *extra_args]
        try:
            proc = run_tool(cmd, timeout_s=timeout_s, cwd=cwd)
        except subprocess.TimeoutExpired as exc:
            raise EmulatorError(f"{Path(elf).name} on {machine} did not finish within {timeout_s} s") from exc
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EmulatorError(f"{Path(elf).name} on {machine} exited with status {proc.returncode}: {last}")
        return parse_block_profile(out)


def profile_elf_on(
    elf: Path,
    machine: str,
    core: str,
    *,
    timeout_s: float,
    cache_dir: Path = DEFAULT_PLUGIN_CACHE,
    window: int = -1,
) -> Profile:
    """Profile a self-contained ELF (no host inputs) on `machine` with `core`'s timing table."""
    blocks = run_block_profile(elf, machine, timeout_s=timeout_s, cache_dir=cache_dir)
    return profile_from_blocks(blocks, load_timing_table(core), window=window)


def timing_table_for(target: Target) -> TimingTable:
    """The timing table a target descriptor names."""
    return load_timing_table(Path(target.timing_table).stem)


def flash_region_for(elf: Path, target: Target) -> tuple[int, int] | None:
    """The ELF's flash region where the target's table prices flash reads (a calibrated table), else None."""
    if not timing_table_for(target).flash_read_cycles:
        return None
    from tvmnas.profiling.regions import flash_region

    return flash_region(elf)


def profile_elf(
    elf: Path,
    target: Target,
    inputs: list[np.ndarray],
    *,
    timeout_s: float = 60,
    cache_dir: Path = DEFAULT_PLUGIN_CACHE,
    call: int = -1,
    configs: list[int] | None = None,
) -> Profile:
    """Run a harness ELF (tvmnas.runner) on its inputs under the plugin; profile one model call.

    The harness opens one window per input (its calibration call uses twin markers the plugin
    does not see), so window i is the model call on inputs[i]; `call` picks i (default: the last).
    Its instructions equal the harness's exact count for that call plus a fixed window overhead
    (the marker calls). Bundles built with profile=True call tvmnas_kernel_mark before each kernel.
    `configs` selects the configuration of a dynamic bundle per call, as in tvmnas.runner.run.
    """
    if not inputs:
        raise EmulatorError(f"{Path(elf).name}: profiling needs at least one input")
    plugin_so = build_plugin(cache_dir)
    with tempfile.TemporaryDirectory(prefix="tvmnas-profile-") as tmp:
        out = Path(tmp) / "profile.txt"
        run(elf, target, inputs, configs=configs, timeout_s=timeout_s,
            qemu_extra_args=qemu_plugin_args(plugin_so, elf, out, region=flash_region_for(elf, target)))
        blocks = parse_block_profile(out)
    if blocks.windows != len(inputs):
        raise EmulatorError(
            f"{Path(elf).name}: expected {len(inputs)} measured windows (one per input), got {blocks.windows}"
        )
    return profile_from_blocks(blocks, timing_table_for(target), window=call % len(inputs))
