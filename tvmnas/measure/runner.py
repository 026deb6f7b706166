"""Build a C bundle with the board support for a target, run it on QEMU and read results back.

Host <-> guest protocol (files in QEMU's working directory, through Arm semihosting; the host
build reads/writes the same files with stdio; all little-endian, see targets/board/README.md):
  tvmnas_job.bin     u32 magic "TVNJ", u32 version 1, u32 n_calls, u32 input floats,
                     then per call: i32 config (-1 = none), f32[input floats]
  tvmnas_result.bin  u32 magic "TVNR", u32 version 1, u32 n_calls, u32 output floats,
                     u32 window overhead, then per call: i32 config, i32 rc,
                     u32 instructions low, u32 instructions high, f32[output floats]
Instruction counts are exact (QEMU -icount); they cover model_run alone, window overhead removed.
"""

from __future__ import annotations

import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tvmnas.errors import BuildError, EmulatorError
from tvmnas.targets import BOARD_DIR, Target
from tvmnas.measure.toolchain import (
    ARM_GCC, ARM_NM, ARM_SIZE, HOST_GCC, QEMU, require_host_compiler, require_tools, run_tool, tool_path,
)

ICOUNT_SHIFT = 6
JOB_FILE = "tvmnas_job.bin"
RESULT_FILE = "tvmnas_result.bin"
JOB_MAGIC = 0x4A4E5654
RESULT_MAGIC = 0x524E5654
PROTOCOL_VERSION = 1
NO_CONFIG = -1
BOARD_SOURCES = ("main.c", "startup.c", "semihost.c", "counter.c")
COMMON_CFLAGS = ("-ffreestanding", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections")
HOST_CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-DTVMNAS_HOST")
COUNTER_DEFINES = {"cmsdk-timer0": "-DTVMNAS_COUNTER_CMSDK_TIMER", "systick": "-DTVMNAS_COUNTER_SYSTICK"}
FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".data")
ARENA_SYMBOL = "tvmnas_guarded_arena"  # the arena between two guard bands (targets/board/main.c)
ARENA_GUARD_BYTES = 32  # each side

# Exit statuses of the harness (targets/board/exit_codes.h).
EXIT_REASONS = {
    2: "the guest could not open its job file",
    3: "the guest rejected the job file (magic, version or input size does not match the bundle)",
    4: "the guest could not write its result file",
    5: "config index out of range for this bundle, or model_set_config failed",
    6: "model_run returned non-zero",
    7: "model_arena_size(config) exceeds MODEL_ARENA_SIZE",
    8: "model_run wrote outside its arena of MODEL_ARENA_SIZE bytes (a guard band changed)",
    100: "NMI",
    101: "HardFault",
    102: "MemManage fault",
    103: "BusFault",
    104: "UsageFault",
    105: "SecureFault",
    106: "unexpected interrupt",
    107: "stack overflow (SP went below the linker script's fixed stack)",
}
EXIT_MODEL_ERROR = 6


@dataclass(frozen=True)
class RunResult:
    """What one emulator run returned: one flat float32 output and one exact count per call."""

    outputs: list[np.ndarray]
    instructions: list[int]
    exit_code: int
    configs: list[int] = field(default_factory=list)
    emulator_stderr: str = ""


@dataclass(frozen=True)
class MemoryUsage:
    """Bytes an ELF needs: flash = code + rodata + .data init; sram = .data + .bss + stack."""

    flash_bytes: int
    sram_bytes: int
    arena_bytes: int
    stack_bytes: int
    static_bytes: int


LINKER_OVERFLOW = re.compile(r"region `([^']+)' overflowed by (\d+) bytes")
LINKER_NO_FIT = re.compile(r"section `([^']+)' will not fit in region `([^']+)'")


def linker_reason(stderr: str) -> str | None:
    """The linker's own reason a firmware does not fit (which sections, which region, by how many
    bytes), or None when the failure is not a memory overflow."""
    overflows = dict(LINKER_OVERFLOW.findall(stderr))
    if not overflows:
        return None
    sections: dict[str, list[str]] = {}
    for section, region in LINKER_NO_FIT.findall(stderr):
        sections.setdefault(region, []).append(section)
    parts = []
    for region, excess in overflows.items():
        what = f" ({', '.join(sections[region])} will not fit)" if region in sections else ""
        parts.append(f"region {region} overflowed by {int(excess):,} bytes{what}")
    return "; ".join(parts)


def _first_error(stderr: str) -> str:
    reason = linker_reason(stderr)
    if reason:
        return reason
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[0] if lines else "no compiler output"


def _bundle_sources(bundle_dir: Path) -> list[Path]:
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / "model.h").is_file():
        raise BuildError(f"bundle {bundle_dir} has no model.h")
    sources = sorted(bundle_dir.glob("*.c"))
    if not sources:
        raise BuildError(f"bundle {bundle_dir} has no .c files")
    return sources


def _compile(cmd: list[str], what: str) -> None:
    proc = run_tool(cmd)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {_first_error(proc.stderr)}")


def build(
    bundle_dir: Path,
    target: Target,
    build_dir: Path,
    *,
    profile: bool = False,
    extra_cflags: Sequence[str] = (),
) -> Path:
    """Compile a bundle plus the board support for `target` into an ELF for its emulator."""
    require_tools(emulator=False)
    sources = _bundle_sources(bundle_dir)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    elf = build_dir / "model.elf"
    all_sources = [p.resolve() for p in sources] + [BOARD_DIR / name for name in BOARD_SOURCES]
    names = [p.stem for p in all_sources]
    if len(set(names)) != len(names):
        raise BuildError(f"bundle {bundle_dir} has a source named like a board source ({', '.join(BOARD_SOURCES)})")
    compile_cmd = [
        str(tool_path(ARM_GCC)),
        *target.cflags,
        *target.opt_flags,
        *COMMON_CFLAGS,
        COUNTER_DEFINES[target.counter],
        f"-DTVMNAS_COUNTER_HZ={target.counter_hz}",
        f"-DTVMNAS_ICOUNT_SHIFT={ICOUNT_SHIFT}",
        *(["-DTVMNAS_PROFILE"] if profile else []),
        *extra_cflags,
        f"-I{Path(bundle_dir).resolve()}",
        f"-I{BOARD_DIR}",
        "-c",
        *[str(p) for p in all_sources],
    ]
    what = f"build of {bundle_dir} for {target.name}"
    proc = run_tool(compile_cmd, cwd=build_dir)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {_first_error(proc.stderr)}")
    link_cmd = [
        str(tool_path(ARM_GCC)),
        *target.cflags,
        *extra_cflags,
        *[str(build_dir.resolve() / f"{name}.o") for name in names],
        "-nostartfiles",
        "--specs=nano.specs",
        f"-L{BOARD_DIR}",
        "-Wl,--gc-sections",
        f"-Wl,-Map={build_dir / 'model.map'}",
        "-o",
        str(elf),
        "-lm",
    ]
    # The usual memory map first; a firmware that overflows it (a model compiled with
    # --ignore-budget) is relinked with the emulated machine's larger memory, so the board's budget
    # check, not the linker, is what refuses a model. Instruction counts do not depend on addresses.
    scripts = [target.linker_script] + ([target.large_linker_script] if target.large_linker_script else [])
    for script in scripts:
        proc = run_tool([*link_cmd, f"-T{script}"])
        if proc.returncode == 0:
            return elf
        if linker_reason(proc.stderr) is None:
            break
    raise BuildError(f"{what} failed: {_first_error(proc.stderr)}")


def build_host(bundle_dir: Path, build_dir: Path, *, extra_cflags: Sequence[str] = ()) -> Path:
    """Compile a bundle plus the harness as a host program (stdio files, no instruction counts)."""
    require_host_compiler()
    sources = _bundle_sources(bundle_dir)
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    exe = build_dir / "model_host"
    cmd = [
        str(tool_path(HOST_GCC)),
        *HOST_CFLAGS,
        *extra_cflags,
        f"-I{Path(bundle_dir).resolve()}",
        f"-I{BOARD_DIR}",
        *[str(p.resolve()) for p in sources],
        str(BOARD_DIR / "main.c"),
        "-o",
        str(exe),
        "-lm",
    ]
    _compile(cmd, f"host build of {bundle_dir}")
    return exe


def write_job(path: Path, inputs: Sequence[np.ndarray], configs: Sequence[int] | None) -> None:
    """Write the job file the harness reads through semihosting: one (config, input) per call."""
    if not inputs:
        raise EmulatorError("no inputs given: a run needs at least one input tensor")
    flat = [np.ascontiguousarray(x, dtype="<f4").reshape(-1) for x in inputs]
    sizes = {x.size for x in flat}
    if len(sizes) != 1:
        raise EmulatorError(f"inputs differ in size {sorted(sizes)}: every call takes MODEL_INPUT_SIZE floats")
    if configs is None:
        configs = [NO_CONFIG] * len(flat)
    if len(configs) != len(flat):
        raise EmulatorError(f"{len(configs)} configs for {len(flat)} inputs: give one config per input")
    with open(path, "wb") as job:
        job.write(struct.pack("<4I", JOB_MAGIC, PROTOCOL_VERSION, len(flat), flat[0].size))
        for config, x in zip(configs, flat):
            job.write(struct.pack("<i", int(config)))
            job.write(x.tobytes())


def read_result(path: Path, what: str) -> tuple[list[int], list[int], list[np.ndarray], list[int]]:
    """Parse a result file into (configs, return codes, instruction counts, outputs)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise EmulatorError(f"{what}: no result file was written ({err.strerror})") from err
    if len(data) < 20:
        raise EmulatorError(f"{what}: result file truncated ({len(data)} bytes)")
    magic, version, n_calls, out_size, _overhead = struct.unpack_from("<5I", data, 0)
    if magic != RESULT_MAGIC or version != PROTOCOL_VERSION:
        raise EmulatorError(f"{what}: result file has a bad header")
    configs, rcs, counts, outputs = [], [], [], []
    offset = 20
    record = 16 + 4 * out_size
    while offset + record <= len(data) and len(outputs) < n_calls:
        config, rc, low, high = struct.unpack_from("<iiII", data, offset)
        configs.append(config)
        rcs.append(rc)
        counts.append(low | (high << 32))
        outputs.append(np.frombuffer(data, dtype="<f4", count=out_size, offset=offset + 16).astype(np.float32))
        offset += record
    return configs, rcs, counts, outputs


def check_exit(code: int, what: str, stderr: str, rcs: Sequence[int]) -> None:
    """Turn a non-zero emulator exit (fault handler code, hang, model error) into one EmulatorError."""
    if code == 0:
        return
    if code == EXIT_MODEL_ERROR and rcs:
        raise EmulatorError(f"{what}: model_run returned {rcs[-1]} on call {len(rcs) - 1}")
    guest_lines = [line[len("tvmnas: "):] for line in stderr.splitlines() if line.startswith("tvmnas: ")]
    reason = guest_lines[-1] if guest_lines else EXIT_REASONS.get(code)
    if reason is None:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        reason = f"bad exit status {code}: {tail}"
    raise EmulatorError(f"{what}: {reason} (exit status {code})")


def qemu_command(elf: Path, machine: str, qemu_extra_args: Sequence[str] = ()) -> list[str]:
    """The QEMU command line that runs `elf` on `machine` deterministically (-icount) with semihosting."""
    return [
        str(tool_path(QEMU)),
        "-M",
        machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        f"shift={ICOUNT_SHIFT},align=off,sleep=off",
        "-kernel",
        str(Path(elf).resolve()),
        *qemu_extra_args,
    ]


def run(
    elf: Path,
    target: Target,
    inputs: list[np.ndarray],
    *,
    configs: list[int] | None = None,
    timeout_s: float = 60,
    qemu_extra_args: Sequence[str] = (),
) -> RunResult:
    """Run the harness ELF on the target's emulator: one model call per input, in order.

    configs (one per input) selects a dynamic bundle's configuration before each call.
    """
    require_tools()
    elf = Path(elf)
    what = f"{elf} on {target.emulator_machine}"
    if not elf.is_file():
        raise EmulatorError(f"{what}: no such ELF")
    with tempfile.TemporaryDirectory(prefix="tvmnas-run-") as tmp:
        work = Path(tmp)
        write_job(work / JOB_FILE, inputs, configs)
        cmd = qemu_command(elf, target.emulator_machine, qemu_extra_args)
        try:
            proc = run_tool(cmd, cwd=work, timeout_s=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise EmulatorError(f"{what}: guest hung (no exit within {timeout_s:g} s)") from err
        got_configs, rcs, counts, outputs = (
            read_result(work / RESULT_FILE, what) if (work / RESULT_FILE).exists() else ([], [], [], [])
        )
        check_exit(proc.returncode, what, proc.stderr, rcs)
        if len(outputs) != len(inputs):
            raise EmulatorError(f"{what}: result file holds {len(outputs)} of {len(inputs)} calls")
    return RunResult(
        outputs=outputs,
        instructions=counts,
        exit_code=proc.returncode,
        configs=got_configs,
        emulator_stderr=proc.stderr,
    )


def run_host(
    exe: Path, inputs: list[np.ndarray], *, configs: list[int] | None = None, timeout_s: float = 60
) -> list[np.ndarray]:
    """Run a host build of a bundle (build_host) on the inputs; returns one flat output per call."""
    exe = Path(exe)
    what = f"{exe} (host)"
    with tempfile.TemporaryDirectory(prefix="tvmnas-host-") as tmp:
        work = Path(tmp)
        write_job(work / JOB_FILE, inputs, configs)
        try:
            proc = run_tool([str(exe.resolve()), JOB_FILE, RESULT_FILE], cwd=work, timeout_s=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise EmulatorError(f"{what}: hung (no exit within {timeout_s:g} s)") from err
        _, rcs, _, outputs = (
            read_result(work / RESULT_FILE, what) if (work / RESULT_FILE).exists() else ([], [], [], [])
        )
        if proc.returncode < 0:
            raise EmulatorError(f"{what}: killed by signal {-proc.returncode}")
        check_exit(proc.returncode, what, proc.stderr, rcs)
    return outputs


def _tool_rows(tool: str, flag: str, elf: Path, what: str) -> list[list[str]]:
    """The whitespace-split output lines of `tool flag elf` (arm-none-eabi-size / -nm)."""
    proc = subprocess.run([str(tool_path(tool)), flag, str(elf)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"cannot read {what} of {elf}: {_first_error(proc.stderr)}")
    return [line.split() for line in proc.stdout.splitlines()]


def _section_sizes(elf: Path) -> dict[str, int]:
    rows = _tool_rows(ARM_SIZE, "-A", elf, "sections")
    return {r[0]: int(r[1]) for r in rows if len(r) == 3 and r[0].startswith(".") and r[1].isdigit()}


def _symbol_sizes(elf: Path) -> dict[str, int]:
    return {r[3]: int(r[1], 16) for r in _tool_rows(ARM_NM, "-S", elf, "symbols") if len(r) == 4}


def memory_usage(elf: Path, target: Target) -> MemoryUsage:
    """Flash and SRAM the ELF needs on `target`'s board (from its section and symbol tables).

    Sizes come from the ELF alone; compare them with target.flash_bytes / target.sram_bytes.
    """
    del target
    require_tools(emulator=False)
    sections = _section_sizes(Path(elf))
    flash = sum(sections.get(name, 0) for name in FLASH_SECTIONS)
    stack = sections.get(".stack", 0)
    ram = sections.get(".data", 0) + sections.get(".bss", 0)
    guarded = _symbol_sizes(Path(elf)).get(ARENA_SYMBOL, 0)
    arena = max(guarded - 2 * ARENA_GUARD_BYTES, 0)
    return MemoryUsage(
        flash_bytes=flash,
        sram_bytes=ram + stack,
        arena_bytes=arena,
        stack_bytes=stack,
        static_bytes=ram - arena,
    )
