"""Running an ELF on QEMU under the block-profiling plugin, and the resulting per-kernel profile.

Instructions are exact (counted by the plugin inside the measured window); cycles are an estimate
from the core's timing table (see tvmnas.measure.cycles for what the model leaves out).
Exception handlers inside the window are not counted. Limit: a device-register (MMIO) access
inside the window makes QEMU's -icount re-run part of a block, which the plugin then counts
twice; measured code must touch only memory (the harness reads its counter outside the window).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tvmnas.errors import EmulatorError
from tvmnas.measure.blocks import PREAMBLE, BlockProfile, parse_block_profile
from tvmnas.measure.cycles import TimingTable, estimate_segment_cycles, load_timing_table
from tvmnas.measure.plugin import build_plugin, qemu_plugin_args
from tvmnas.measure.runner import JOB_FILE, RESULT_FILE, check_exit, qemu_command, read_result, write_job
from tvmnas.measure.toolchain import kill_group, run_tool, tool_process
from tvmnas.targets import Target

TERM_GRACE_S = 10.0
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
        cmd = qemu_command(elf, machine, [*qemu_plugin_args(plugin_so, elf, out), *extra_args])
        try:
            proc = run_tool(cmd, timeout_s=timeout_s, cwd=cwd)
        except subprocess.TimeoutExpired as exc:
            raise EmulatorError(f"{Path(elf).name} on {machine} did not finish within {timeout_s} s") from exc
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EmulatorError(f"{Path(elf).name} on {machine} exited with status {proc.returncode}: {last}")
        return parse_block_profile(out)


def timing_table_for(target: Target) -> TimingTable:
    """The timing table a target descriptor names."""
    return load_timing_table(Path(target.timing_table).stem)


def flash_region_for(elf: Path, target: Target) -> tuple[int, int] | None:
    """The ELF's flash region where the target's table prices flash reads (a calibrated table), else None."""
    if not timing_table_for(target).flash_read_cycles:
        return None
    from tvmnas.measure.regions import flash_region

    return flash_region(elf)


def _open_segment(profile_path: Path) -> int | None:
    """Kernel index running when QEMU stopped (last segment of the open window), None if unknown."""
    if not profile_path.is_file():
        return None
    windows, is_open, last = 0, False, None
    for line in profile_path.read_text(errors="replace").splitlines():
        parts = line.split()
        if parts[:1] == ["windows"] and len(parts) >= 4:
            windows, is_open = int(parts[1]), parts[3] != "0"
        elif parts[:1] == ["segment"] and len(parts) == 4 and is_open and int(parts[2]) == windows:
            last = int(parts[3])
    return last


def _kernel_label(index: int | None, names: Sequence[str]) -> str:
    if index is None:
        return "(which kernel is unknown: the emulator wrote no profile)"
    if index < 0:
        return "before the first kernel"
    if index < len(names):
        return f"in kernel {index} '{names[index]}'"
    return f"in kernel {index}"


def profile_elf(
    elf: Path,
    target: Target,
    inputs: list[np.ndarray],
    *,
    kernel_names: Sequence[str] = (),
    timeout_s: float = 60,
    cache_dir: Path = DEFAULT_PLUGIN_CACHE,
    call: int = -1,
    configs: list[int] | None = None,
) -> Profile:
    """Run a harness ELF (tvmnas.measure.runner) on its inputs under the plugin; profile one model call.

    The harness opens one window per input (its calibration call uses twin markers the plugin
    does not see), so window i is the model call on inputs[i]; `call` picks i (default: the last).
    Its instructions equal the harness's exact count for that call plus a fixed window overhead
    (the marker calls). Bundles built with profile=True call tvmnas_kernel_mark before each kernel.
    `configs` selects the configuration of a dynamic bundle per call, as in tvmnas.measure.runner.run.
    A guest that does not exit within `timeout_s` gets SIGTERM (QEMU then writes the plugin's
    profile) and the error names the kernel whose segment was open (by `kernel_names` where
    given); a fault likewise.
    """
    if not inputs:
        raise EmulatorError(f"{Path(elf).name}: profiling needs at least one input")
    plugin_so = build_plugin(cache_dir)
    what = f"{Path(elf).name} on {target.name}"
    with tempfile.TemporaryDirectory(prefix="tvmnas-profile-") as tmp:
        work = Path(tmp)
        out = work / "profile.txt"
        write_job(work / JOB_FILE, inputs, configs)
        plugin_args = qemu_plugin_args(plugin_so, elf, out, region=flash_region_for(elf, target))
        with tool_process(qemu_command(elf, target.emulator_machine, plugin_args),
                          cwd=work) as proc:
            try:
                _, stderr = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.communicate(timeout=TERM_GRACE_S)
                except subprocess.TimeoutExpired:
                    kill_group(proc)
                where = _kernel_label(_open_segment(out), kernel_names)
                raise EmulatorError(f"{what}: guest hung {where} (no exit within {timeout_s:g} s)") from None
        if proc.returncode != 0:
            where = _kernel_label(_open_segment(out), kernel_names)
            rcs = read_result(work / RESULT_FILE, what)[1] if (work / RESULT_FILE).exists() else []
            try:
                check_exit(proc.returncode, what, stderr, rcs)
            except EmulatorError as err:
                raise EmulatorError(f"{err} {where}") from None
        blocks = parse_block_profile(out)
    if blocks.windows != len(inputs):
        raise EmulatorError(f"{what}: expected {len(inputs)} measured windows (one per input), got {blocks.windows}")
    return profile_from_blocks(blocks, timing_table_for(target), window=call % len(inputs))
