"""The QEMU block-profiling plugin: building it with the host compiler and the QEMU options that load it.

The plugin's C source lives in targets/plugin/ and is compiled once per source hash into a cache
directory, because Debian's QEMU ships no plugin SDK and a prebuilt binary would tie the package to
one host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import tvmnas.targets
from tvmnas.errors import BuildError, ToolchainMissingError

PLUGIN_DIR = Path(tvmnas.targets.__file__).resolve().parent / "plugin"
PLUGIN_SOURCES = ("tvmnas_profile.c", "qemu_plugin_api.h")
CFLAGS = ("-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-std=gnu11", "-Wall", "-Wextra")

WINDOW_BEGIN = "tvmnas_window_begin"
WINDOW_END = "tvmnas_window_end"
KERNEL_MARK = "tvmnas_kernel_mark"
MAX_SKIP_RANGES = 16  # the plugin's limit


def _host_compiler() -> str:
    for name in ("gcc", "cc"):
        path = shutil.which(name)
        if path:
            return path
    raise ToolchainMissingError(
        "host C compiler 'gcc' not found (needed to build the QEMU profiling plugin): "
        "install it with 'apt-get install gcc'"
    )


def plugin_source_hash() -> str:
    """Hash of the plugin sources and compile flags; names the cached shared object."""
    h = hashlib.sha256()
    for name in PLUGIN_SOURCES:
        h.update(name.encode())
        h.update((PLUGIN_DIR / name).read_bytes())
    h.update(" ".join(CFLAGS).encode())
    return h.hexdigest()[:16]


def build_plugin(cache_dir: Path) -> Path:
    """Compile the profiling plugin into cache_dir (once per source hash) and return the .so path."""
    cache_dir = Path(cache_dir)
    so = cache_dir / f"tvmnas_profile-{plugin_source_hash()}.so"
    if so.is_file():
        return so
    cc = _host_compiler()
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
    os.close(fd)
    cmd = [cc, *CFLAGS, "-o", tmp, str(PLUGIN_DIR / "tvmnas_profile.c")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        first = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise BuildError(f"building the QEMU profiling plugin failed: {first}")
    os.replace(tmp, so)
    return so


def _nm_lines(elf: Path) -> list[list[str]]:
    nm = shutil.which("arm-none-eabi-nm")
    if nm is None:
        raise ToolchainMissingError(
            "arm-none-eabi-nm not found: install it with 'apt-get install binutils-arm-none-eabi'"
        )
    proc = subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise BuildError(f"cannot read symbols of {elf}: {first}")
    return [line.split() for line in proc.stdout.splitlines()]


def elf_symbols(elf: Path) -> dict[str, int]:
    """Addresses of the ELF's text symbols (Thumb bit cleared), read with arm-none-eabi-nm."""
    symbols: dict[str, int] = {}
    for parts in _nm_lines(elf):
        if len(parts) >= 3 and parts[-2] in ("T", "t"):
            symbols[parts[-1]] = int(parts[0], 16) & ~1
    return symbols


def handler_ranges(elf: Path) -> list[tuple[int, int]]:
    """[start, end) of every sized *_Handler function: exception handlers are not measured work
    (the harness subtracts its SysTick handler's instructions the same way)."""
    ranges = set()
    for parts in _nm_lines(elf):
        if len(parts) == 4 and parts[2] in ("T", "t", "W") and parts[3].endswith("_Handler") and parts[3] != "Reset_Handler":
            start, size = int(parts[0], 16) & ~1, int(parts[1], 16)
            if size:
                ranges.add((start, start + size))
    return sorted(ranges)


def _qemu_opt_value(value: str) -> str:
    """Escape a value for a QEMU option list (a comma is written twice)."""
    return value.replace(",", ",,")


def qemu_plugin_args(plugin_so: Path, elf: Path, out_file: Path,
                     region: tuple[int, int] | None = None) -> list[str]:
    """QEMU arguments that load the plugin for this ELF's window and kernel-mark functions.

    The ELF must define tvmnas_window_begin and tvmnas_window_end; tvmnas_kernel_mark is optional
    (without it the whole window is one preamble segment and no kernels are reported). Exception
    handlers (*_Handler symbols) are skipped, so an interrupt inside the window adds nothing.
    region=(lo, hi) also counts data reads from [lo, hi) (tvmnas.board.regions.flash_region).
    """
    symbols = elf_symbols(elf)
    missing = [name for name in (WINDOW_BEGIN, WINDOW_END) if name not in symbols]
    if missing:
        raise BuildError(f"{elf} has no function {missing[0]}: link it with the tvmnas board support")
    opts = [
        _qemu_opt_value(str(Path(plugin_so).resolve())),
        f"begin={symbols[WINDOW_BEGIN]:#x}",
        f"end={symbols[WINDOW_END]:#x}",
    ]
    if KERNEL_MARK in symbols:
        opts.append(f"mark={symbols[KERNEL_MARK]:#x}")
    opts += [f"skip={lo:#x}:{hi:#x}" for lo, hi in handler_ranges(elf)[:MAX_SKIP_RANGES]]
    if region is not None:
        opts.append(f"region={region[0]:#x}:{region[1]:#x}")
    opts.append("out=" + _qemu_opt_value(str(Path(out_file).resolve())))
    return ["-plugin", ",".join(opts)]
