"""Memory regions of a firmware ELF: where its flash (code and read-only data) lies, so the
profiling plugin can count the data reads that go to flash (wait states on a real board)."""

from __future__ import annotations

from pathlib import Path

from tvmnas.errors import BuildError
from tvmnas.measure.toolchain import run_tool, tool_path

ARM_OBJDUMP = "arm-none-eabi-objdump"
FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.extab", ".ARM.exidx")


def section_table(elf: Path) -> dict[str, tuple[int, int]]:
    """Name -> (VMA, size) of an ELF's sections, read with arm-none-eabi-objdump -h."""
    proc = run_tool([str(tool_path(ARM_OBJDUMP)), "-h", str(elf)])
    if proc.returncode != 0:
        raise BuildError(f"cannot read the sections of {elf}: {proc.stderr.strip()[:200]}")
    out: dict[str, tuple[int, int]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[0].isdigit():
            out[parts[1]] = (int(parts[3], 16), int(parts[2], 16))
    return out


def flash_region(elf: Path) -> tuple[int, int]:
    """[lo, hi) spanning the ELF's code and read-only data: what sits in a board's flash."""
    sections = section_table(elf)
    spans = [(vma, vma + size) for name, (vma, size) in sections.items() if name in FLASH_SECTIONS and size]
    if not spans:
        raise BuildError(f"{elf} has none of the sections {', '.join(FLASH_SECTIONS)}")
    return min(lo for lo, _ in spans), max(hi for _, hi in spans)


__all__ = ["flash_region", "section_table"]
