"""The timing firmware project: compiled bundles plus a main that times every kernel on a real board.

`write_firmware` writes a self-contained folder that builds with `make` (arm-none-eabi-gcc, no
edits) for the board and with `make emu` for the target's QEMU machine:

    Makefile  README.md  kernels.json  board.ld  emulator.ld
    src/      timing_main.c timing_counter.[ch] timing_io.[ch] timing_startup.c timing_models.[ch]
    models/mNN/  one bundle per model (model.c, model_weights.[ch], model.h, rename.h)

Each model's bundle is compiled with -DTVMNAS_PROFILE (model_run calls tvmnas_kernel_mark(k)
before kernel k) and a forced-include rename.h, so several bundles link into one firmware. The
board build reads the DWT cycle counter (SysTick on Armv6-M, which has no DWT); the emulator
build reads QEMU's -icount timers and prints instructions. Both print the same lines
(tvmnas.board.measurements parses them).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tvmnas.errors import TvmnasError
from tvmnas.targets import Target

FIRMWARE_SOURCES = Path(__file__).resolve().parent / "firmware"
C_SOURCES = ("timing_main.c", "timing_counter.c", "timing_counter.h", "timing_io.c", "timing_io.h", "timing_startup.c")
ICOUNT_SHIFT = 6
NO_DWT_CORES = ("cortex-m0", "cortex-m0plus", "cortex-m23")
DEFAULT_ARENA_SECTION = ".bss.tvmnas_arena"
DEFAULT_STACK_BYTES = 8192
# The emulated machines' memory (targets/board/*.ld): (vectors, code, ram) as (origin, length);
# vectors None = at the start of code.
EMULATOR_MEMORY = {
    "mps2": (None, (0x00000000, 4 << 20), (0x20000000, 4 << 20)),
    "mps2_an505": (None, (0x10000000, 4 << 20), (0x38000000, 4 << 20)),
    "mps3_an547": ((0x00000000, 512 << 10), (0x01000000, 2 << 20), (0x21000000, 4 << 20)),
    "microbit": (None, (0x00000000, 256 << 10), (0x20000000, 16 << 10)),
}


class FirmwareError(TvmnasError):
    """A timing firmware cannot be written as asked (bad placement option, occupied folder)."""


@dataclass(frozen=True)
class Placement:
    """Where the firmware puts things on the board.

    weights: "flash" (const data stays in flash, read through its wait states) or "ram" (copied
    to RAM at reset). arena_section: the section the activation arena is placed in;
    arena_memory: (origin, length) of a memory region of its own for it (None: the RAM region).
    flash / ram: (origin, length) of the board's memories (None: from the target descriptor).
    """

    weights: str = "flash"
    arena_section: str = DEFAULT_ARENA_SECTION
    arena_memory: tuple[int, int] | None = None
    flash: tuple[int, int] | None = None
    ram: tuple[int, int] | None = None
    stack_bytes: int = DEFAULT_STACK_BYTES

    def check(self) -> None:
        if self.weights not in ("flash", "ram"):
            raise FirmwareError(f"weights placement '{self.weights}' is not 'flash' or 'ram'")
        name = self.arena_section
        if not name.startswith(".") or not all(c.isalnum() or c in "._" for c in name[1:]) or len(name) < 2:
            raise FirmwareError(f"arena section '{name}' is not a section name like .bss.arena")


@dataclass(frozen=True)
class FirmwareModel:
    """One model the firmware times: its lowered network (tvmnas.measure.profiler.LoweredNetwork) and label."""

    label: str
    network: object  # tvmnas.measure.profiler.LoweredNetwork


def parse_memory(text: str, what: str) -> tuple[int, int]:
    """'ORIGIN:LENGTH' (hex or decimal, LENGTH may end in K or M) as (origin, length)."""
    try:
        origin, length = text.split(":")
        mult = 1
        if length[-1:].upper() in ("K", "M"):
            mult = 1024 if length[-1].upper() == "K" else 1 << 20
            length = length[:-1]
        value = (int(origin, 0), int(length, 0) * mult)
    except ValueError:
        raise FirmwareError(f"{what} '{text}' is not ORIGIN:LENGTH (e.g. 0x20000000:320K)") from None
    if value[1] <= 0:
        raise FirmwareError(f"{what} '{text}' has no length")
    return value


def board_memory(target: Target) -> tuple[tuple[int, int], tuple[int, int]]:
    """Default (flash, ram) of the target's real board: STM32 parts run from 0x08000000."""
    flash_origin = 0x08000000 if "STM32" in target.board_name else 0x00000000
    return (flash_origin, target.flash_bytes), (0x20000000, target.sram_bytes)


def _region(name: str, attrs: str, mem: tuple[int, int]) -> str:
    return f"    {name} ({attrs}) : ORIGIN = {mem[0]:#010x}, LENGTH = {mem[1]:#x}"


def linker_script(vectors: tuple[int, int] | None, flash: tuple[int, int], ram: tuple[int, int],
                  placement: Placement, what: str) -> str:
    """A complete linker script: vectors, code and constants in FLASH, stack/.data/.bss in RAM,
    weights in .data when placed in RAM, the arena's section in its own region or RAM."""
    regions = [_region("FLASH", "rx", flash), _region("RAM", "rwx", ram)]
    if vectors is not None:
        regions.insert(0, _region("VECTORS", "rx", vectors))
    if placement.arena_memory is not None:
        regions.append(_region("ARENA", "rw", placement.arena_memory))
    in_ram = placement.weights == "ram"
    rodata = "EXCLUDE_FILE(*model_weights.o) *(.rodata .rodata.*)" if in_ram else "*(.rodata .rodata.*)"
    weights_data = "        *model_weights.o(.rodata .rodata.*)\n" if in_ram else ""
    arena_region = "ARENA" if placement.arena_memory is not None else "RAM"
    return f"""\
/* tvmnas timing firmware, {what}. Weights in {placement.weights.upper()}; arena in section
 * {placement.arena_section} ({arena_region}). Edit MEMORY for another part of the same core. */
MEMORY
{{
{chr(10).join(regions)}
}}
ENTRY(Reset_Handler)
__stack_size = DEFINED(__stack_size) ? __stack_size : {placement.stack_bytes:#x};

SECTIONS
{{
    .vectors : ALIGN(128)
    {{
        KEEP(*(.vectors))
    }} > {"VECTORS" if vectors is not None else "FLASH"}

    .text : ALIGN(4)
    {{
        *(.text .text.*)
    }} > FLASH

    .rodata : ALIGN(4)
    {{
        {rodata}
    }} > FLASH

    .ARM.exidx : {{ *(.ARM.exidx* .gnu.linkonce.armexidx.*) }} > FLASH

    .stack (NOLOAD) : ALIGN(8)
    {{
        __stack_bottom = .;
        . += __stack_size;
        . = ALIGN(8);
        __stack_top = .;
    }} > RAM

    .data : ALIGN(16)
    {{
        __data_start = .;
        *(.data .data.*)
{weights_data}        . = ALIGN(4);
        __data_end = .;
    }} > RAM AT > FLASH
    __data_load = LOADADDR(.data);

    .tvmnas_arena (NOLOAD) : ALIGN(16)
    {{
        *({placement.arena_section})
    }} > {arena_region}

    .bss (NOLOAD) : ALIGN(16)
    {{
        __bss_start = .;
        *(.bss .bss.* COMMON)
        . = ALIGN(4);
        __bss_end = .;
    }} > RAM

    /DISCARD/ : {{ *(.init .fini .init_array .fini_array .preinit_array .ctors .dtors .ARM.attributes) }}
}}
"""


def _rename_header(index: int, graph) -> str:
    prefix = f"tvmnas_m{index:02d}"
    lines = [f"/* Symbols of model {index}, renamed so several bundles link into one firmware. */",
             f"#define model_run {prefix}_run"]
    lines += [f"#define model_{n} {prefix}_{n}" for n in sorted(graph.constants)]
    return "\n".join(lines) + "\n"


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _input_values(network, seed: int = 0) -> tuple[str, np.ndarray]:
    """The profiler's fixed input (tvmnas.measure.profiler.profile_input), in the model's input type as the
    harness converts it, so data-dependent paths run as in `tvmnas profile`."""
    from tvmnas.codegen.c_printer import c_type
    from tvmnas.measure.profiler import profile_input

    info = network.graph.inputs[0]
    x = profile_input(info.elems, seed)
    if info.dtype == "float32":
        return "float", x
    return c_type(info.dtype), x.astype(np.int32).astype(info.dtype)


def _models_source(models: Sequence[FirmwareModel]) -> tuple[str, str, int, int]:
    from tvmnas.codegen.c_printer import c_type, float_literal
    from tvmnas.compiler import arena_buffers
    from tvmnas.passes import plan_arena

    decls, tables, entries = [], [], []
    max_kernels, max_arena = 1, 16
    for i, m in enumerate(models):
        graph = m.network.graph
        ctype, values = _input_values(m.network)
        out = graph.outputs[0]
        plan = plan_arena(arena_buffers(graph, m.network.kernels))
        max_arena = max(max_arena, plan.arena_bytes)
        max_kernels = max(max_kernels, len(graph.calls))
        p = f"tvmnas_m{i:02d}"
        lits = [float_literal(float(v)) for v in values] if ctype == "float" else [str(int(v)) for v in values]
        body = ",\n  ".join(", ".join(lits[j:j + 8]) for j in range(0, len(lits), 8))
        decls.append(f"int {p}_run(const {ctype} *input, {c_type(out.dtype)} *output, uint8_t *arena);")
        tables.append(
            f"static const {ctype} {p}_input_init[{len(lits)}] = {{\n  {body}\n}};\n"
            f"static {ctype} {p}_input[{len(lits)}] __attribute__((aligned(16)));\n"
            f"static {c_type(out.dtype)} {p}_output[{out.elems}] __attribute__((aligned(16)));\n"
            f"static const char *const {p}_names[{len(graph.calls)}] = {{"
            + ", ".join(_c_string(f"{m.label}/{c.kernel}") for c in graph.calls) + "};\n")
        entries.append(f"    {{{_c_string(m.label)}, (uintptr_t)&{p}_run, {p}_input_init, {p}_input, "
                       f"sizeof {p}_input, {p}_output, {len(graph.calls)}u, {p}_names}},")
    header = f"""\
/* The models this timing firmware runs (generated by tvmnas). */
#ifndef TIMING_MODELS_H
#define TIMING_MODELS_H

#include <stdint.h>

#define TIMING_MODELS {len(models)}u
#define TIMING_MAX_KERNELS {max_kernels}u
#define TIMING_ARENA_BYTES {max_arena}u
#ifndef TVMNAS_ARENA_SECTION
#define TVMNAS_ARENA_SECTION "{DEFAULT_ARENA_SECTION}"
#endif

typedef struct {{
    const char *label;
    uintptr_t run; /* model_run of the model's bundle (called from assembly) */
    const void *input_init;
    void *input;
    uint32_t input_bytes;
    void *output;
    uint32_t kernels;
    const char *const *names;
}} timing_model;

extern const timing_model timing_models[TIMING_MODELS];

#endif
"""
    source = ("/* The models this timing firmware runs, their fixed inputs and kernel names (generated). */\n"
              "#include <stdint.h>\n\n#include \"timing_models.h\"\n\n" + "\n".join(decls) + "\n\n"
              + "\n".join(tables) + "\nconst timing_model timing_models[TIMING_MODELS] = {\n"
              + "\n".join(entries) + "\n};\n")
    return header, source, max_kernels, max_arena


def _makefile(target: Target, n_models: int, placement: Placement) -> str:
    flags = " ".join([*target.cflags, *target.opt_flags])
    board_counter = "TVMNAS_TIMING_SYSTICK" if target.core in NO_DWT_CORES else "TVMNAS_TIMING_DWT"
    emu_counter = "TVMNAS_TIMING_EMU_CMSDK" if target.counter == "cmsdk-timer0" else "TVMNAS_TIMING_EMU_SYSTICK"
    builds = {"build": f"-D{board_counter}",
              "build-emu": f"-D{emu_counter} -DTIMING_EMULATOR_EXIT -DTVMNAS_COUNTER_HZ={target.counter_hz} "
                           f"-DTVMNAS_ICOUNT_SHIFT={ICOUNT_SHIFT}"}
    mains = ("timing_main", "timing_counter", "timing_io", "timing_startup", "timing_models")
    rules, objs = [], {}
    for bdir, cfg in builds.items():
        objs[bdir] = []
        for name in mains:
            obj = f"{bdir}/{name}.o"
            objs[bdir].append(obj)
            rules.append(f"{obj}: src/{name}.c $(HEADERS)\n\t@mkdir -p {bdir}\n\t$(CC) $(MAIN_FLAGS) {cfg} -c $< -o $@")
        for i in range(n_models):
            m = f"m{i:02d}"
            for name in ("model", "model_weights"):
                obj = f"{bdir}/{m}/{name}.o"
                objs[bdir].append(obj)
                rules.append(f"{obj}: models/{m}/{name}.c models/{m}/model.h models/{m}/model_weights.h "
                             f"models/{m}/rename.h\n\t@mkdir -p {bdir}/{m}\n"
                             f"\t$(CC) $(MODEL_FLAGS) -Imodels/{m} -include models/{m}/rename.h -c $< -o $@")
    rule_text = "\n\n".join(rules)
    return f"""\
# tvmnas timing firmware for {target.name} ({target.core}; board: {target.board_name}).
#   make                 board build: build/firmware.elf, .hex and .bin (DWT/SysTick cycles)
#   make emu             emulator build: build-emu/firmware.elf (QEMU {target.emulator_machine}, instructions)
#   make run-emu         run the emulator build on QEMU and print its lines
# Options: RUNS=5 WARMUP=1 (timed and untimed runs per model), USER_SRC=uart.c (your
# tvmnas_putchar / tvmnas_board_init), CC/OBJCOPY/QEMU. Changing RUNS or WARMUP: `make clean` first.
# The arena's section ({placement.arena_section}) is fixed here and in board.ld.
ifeq ($(origin CC),default)
CC = arm-none-eabi-gcc
endif
OBJCOPY ?= arm-none-eabi-objcopy
QEMU ?= qemu-system-arm
RUNS ?= 5
WARMUP ?= 1
USER_SRC ?=
CPU_FLAGS = {" ".join(target.cflags)}
MODEL_FLAGS = {flags} -ffreestanding -ffunction-sections -fdata-sections -Wall -Wextra -Werror -DTVMNAS_PROFILE
MAIN_FLAGS = $(CPU_FLAGS) -O2 -ffreestanding -ffunction-sections -fdata-sections -Wall -Wextra -Werror \\
\t-DTVMNAS_TIMING_RUNS=$(RUNS) -DTVMNAS_TIMING_WARMUP=$(WARMUP) -DTVMNAS_ARENA_SECTION='"{placement.arena_section}"' -Isrc
LDFLAGS = $(CPU_FLAGS) -nostartfiles --specs=nano.specs -Wl,--gc-sections
HEADERS = src/timing_counter.h src/timing_io.h src/timing_models.h
BOARD_OBJS = {" ".join(objs["build"])}
EMU_OBJS = {" ".join(objs["build-emu"])}

all: build/firmware.elf build/firmware.hex build/firmware.bin
emu: build-emu/firmware.elf

build/firmware.elf: $(BOARD_OBJS) $(USER_SRC) board.ld
\t$(CC) $(LDFLAGS) -Isrc $(USER_SRC) $(BOARD_OBJS) -Tboard.ld -Wl,-Map=build/firmware.map -o $@ -lm
build-emu/firmware.elf: $(EMU_OBJS) emulator.ld
\t$(CC) $(LDFLAGS) $(EMU_OBJS) -Temulator.ld -Wl,-Map=build-emu/firmware.map -o $@ -lm

build/firmware.hex: build/firmware.elf
\t$(OBJCOPY) -O ihex $< $@
build/firmware.bin: build/firmware.elf
\t$(OBJCOPY) -O binary $< $@

run-emu: build-emu/firmware.elf
\t$(QEMU) -M {target.emulator_machine} -nographic -monitor none -serial none \\
\t\t-semihosting-config enable=on,target=native -icount shift={ICOUNT_SHIFT},align=off,sleep=off \\
\t\t-kernel $< 2>&1

{rule_text}

clean:
\trm -rf build build-emu

.PHONY: all emu run-emu clean
"""


def _readme(target: Target, labels: Sequence[str], placement: Placement) -> str:
    return f"""\
# tvmnas timing firmware ({target.name})

Times {len(labels)} model(s) kernel by kernel on a {target.core} board ({target.board_name} by default).
See docs/board.md in tvmnas for the whole procedure.

1. `make` (arm-none-eabi-gcc) builds `build/firmware.elf/.hex/.bin` for the board. `board.ld` holds
   the memory map (flash and RAM origin and size): edit it for another part of the same core.
2. Output goes through semihosting by default (needs a debugger with semihosting on). For a UART
   or RTT, write `void tvmnas_putchar(int c)` and `void tvmnas_board_init(void)` (set the clock and
   flash wait states as your application does) in a file and build with `make USER_SRC=uart.c`.
3. Flash it with your vendor's tool and capture the lines starting with `tvmnas-`.
4. `tvmnas cost calibrate --target {target.name} --set <this folder> capture.txt --out my-board`.

`make run-emu` runs the same firmware on QEMU ({target.emulator_machine}) and prints instructions in
place of cycles. Weights: {placement.weights}; arena section: {placement.arena_section}.
"""


def write_firmware(models: Sequence[FirmwareModel], target: Target, out_dir: Path, *,
                   placement: Placement = Placement(), extra_manifest: dict | None = None) -> Path:
    """Write the timing firmware project for `models` into `out_dir` (a new or empty folder).

    Returns the path of kernels.json: per kernel line id "<model>.<index>", its name, kernel hash
    (the profile data's kernel hash), MACs and precision.
    """
    from tvmnas.codegen.bundle import write_bundle
    from tvmnas.compiler import arena_buffers
    from tvmnas.passes import plan_arena

    placement.check()
    if not models:
        raise FirmwareError("a timing firmware needs at least one model")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FirmwareError(f"firmware folder '{out_dir}' exists and is not empty: choose a new folder")
    if target.memory_map not in EMULATOR_MEMORY:
        raise FirmwareError(f"target {target.name}: no emulator memory map '{target.memory_map}' for the firmware")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "src").mkdir(parents=True)
    try:
        kernels = []
        for i, m in enumerate(models):
            net = m.network
            plan = plan_arena(arena_buffers(net.graph, net.kernels))
            mdir = tmp / "models" / f"m{i:02d}"
            mdir.mkdir(parents=True)
            write_bundle(mdir, net.graph, net.kernels, plan, target.name, [*target.cflags, *target.opt_flags])
            shutil.rmtree(mdir / "examples")
            (mdir / "Makefile").unlink()
            (mdir / "rename.h").write_text(_rename_header(i, net.graph))
            for k, (call, macs) in enumerate(zip(net.graph.calls, net.macs, strict=True)):
                kernels.append({"id": f"{i}.{k}", "name": f"{m.label}/{call.kernel}", "model": m.label,
                                "kernel": call.kernel, "kernel_hash": net.hashes[call.kernel],
                                "macs": int(macs), "precision": net.precision})
        header, source, _, _ = _models_source(models)
        (tmp / "src" / "timing_models.h").write_text(header)
        (tmp / "src" / "timing_models.c").write_text(source)
        for name in C_SOURCES:
            shutil.copyfile(FIRMWARE_SOURCES / name, tmp / "src" / name)
        flash, ram = board_memory(target)
        flash, ram = placement.flash or flash, placement.ram or ram
        (tmp / "board.ld").write_text(linker_script(None, flash, ram, placement, f"board build ({target.board_name})"))
        vec, code, eram = EMULATOR_MEMORY[target.memory_map]
        emu_placement = Placement(weights=placement.weights, arena_section=placement.arena_section,
                                  stack_bytes=min(placement.stack_bytes, eram[1] // 8))
        (tmp / "emulator.ld").write_text(linker_script(vec, code, eram, emu_placement,
                                                       f"emulator build (QEMU {target.emulator_machine})"))
        (tmp / "Makefile").write_text(_makefile(target, len(models), placement))
        (tmp / "README.md").write_text(_readme(target, [m.label for m in models], placement))
        manifest = {"format": "tvmnas-timing-firmware", "version": 1, "target": target.name, "core": target.core,
                    "board": target.board_name, "weights": placement.weights,
                    "arena_section": placement.arena_section, "kernels": kernels, **(extra_manifest or {})}
        (tmp / "kernels.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "kernels.json"


__all__ = ["FirmwareError", "FirmwareModel", "Placement", "board_memory", "linker_script", "parse_memory",
           "write_firmware"]
