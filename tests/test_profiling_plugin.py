"""The QEMU block-profiling plugin on small bare-metal programs built here (M4 on mps2-an386, M0 on microbit).

Window markers and measured bodies are written in assembly, so the exact instruction count of
each window is known: the window holds tvmnas_window_begin's `bx lr`, the body and the
`bl tvmnas_window_end` that closes it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tvmnas.errors import BuildError, EmulatorError
from tvmnas.measure.plugin import build_plugin, qemu_plugin_args
from tvmnas.measure.cycles import estimate_cycles, load_timing_table
from tvmnas.measure.profile import profile_from_blocks, run_block_profile
from tvmnas.measure.runner import qemu_command

M4 = {"machine": "mps2-an386", "core": "cortex-m4",
      "cflags": ["-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"],
      "flash": "4M", "ram": "4M"}
M0 = {"machine": "microbit", "core": "cortex-m0", "cflags": ["-mcpu=cortex-m0", "-mthumb"],
      "flash": "256K", "ram": "16K"}

# Overhead of a window around an assembly body: begin's `bx lr` plus the closing `bl`.
WINDOW_OVERHEAD = 2

GUEST_C = r"""
#include <stdint.h>
extern uint32_t __stack_top;
void Reset_Handler(void);
void Fault_Handler(void);
void SysTick_Handler(void);
__attribute__((section(".vectors"), used)) const void *vectors[16] = {
    &__stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    [15] = SysTick_Handler};
volatile uint32_t wraps;
void SysTick_Handler(void) { wraps++; }

static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
static void sh_exit(int code)
{
    static uint32_t block[2];
    block[0] = 0x20026; block[1] = (uint32_t)code;
    semihost(0x20, block);
    for (;;) {}
}
void Fault_Handler(void) { sh_exit(70); }

static void put_hex(uint32_t v)
{
    static char buf[12];
    buf[0] = 'T'; buf[1] = '=';
    for (int i = 0; i < 8; i++) buf[2 + i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 0xF];
    buf[10] = '\n'; buf[11] = 0;
    semihost(0x04, buf);
}

volatile float fa[64], fb[64], fc[64];
volatile int ia[256];
void body(void);

#define TIMER0 ((volatile uint32_t *)0x40000000u)
void Reset_Handler(void)
{
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb");
#endif
    for (int i = 0; i < 64; i++) { fa[i] = (float)i; fb[i] = 0.5f; }
#if USE_TIMER
    TIMER0[2] = 0xFFFFFFFFu; TIMER0[1] = 0xFFFFFFFFu; TIMER0[0] = 1u;
    uint32_t t0 = TIMER0[1];
#endif
#if USE_SYSTICK
    *(volatile uint32_t *)0xE000E014u = 499u; /* reload: an interrupt every 500 ticks */
    *(volatile uint32_t *)0xE000E018u = 0u;
    *(volatile uint32_t *)0xE000E010u = 7u;   /* enable, interrupt, core clock */
#endif
    for (int r = 0; r < REPEAT; r++) body();
#if USE_SYSTICK
    *(volatile uint32_t *)0xE000E010u = 0u;
    put_hex(wraps);
#endif
#if USE_TIMER
    uint32_t t1 = TIMER0[1];
    put_hex(t0 - t1);
#endif
    sh_exit(0);
}
"""

MARKERS_S = """
    .syntax unified
    .thumb
    .text
    .macro FUNC name
    .global \\name
    .thumb_func
    .type \\name, %function
\\name:
    .endm
    FUNC tvmnas_window_begin
    bx lr
    FUNC tvmnas_window_end
    bx lr
    FUNC tvmnas_kernel_mark
    bx lr
    FUNC body
    push {r4, lr}
    bl tvmnas_window_begin
BODY
    bl tvmnas_window_end
    pop {r4, pc}
"""

LINK_LD = """
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = {flash}  RAM (rwx) : ORIGIN = 0x20000000, LENGTH = {ram} }
SECTIONS {
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) } > FLASH
  .bss (NOLOAD) : { *(.bss*) *(COMMON) } > RAM
  .data : { *(.data*) } > RAM
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}
"""


def nop_sled(k: int) -> str:
    """Exactly k instructions (16-bit NOPs)."""
    return f"    .rept {k}\n    nop\n    .endr\n" if k else ""


def build_guest(tmp: Path, board: dict, body: str, *, repeat: int = 1, use_timer: bool = False,
                use_systick: bool = False) -> Path:
    """Link a tiny bare-metal program whose body() runs `body` (assembly) inside one window."""
    gcc = shutil.which("arm-none-eabi-gcc")
    assert gcc, "arm-none-eabi-gcc not found: install it with 'apt-get install gcc-arm-none-eabi'"
    (tmp / "guest.c").write_text(GUEST_C)
    (tmp / "body.S").write_text(MARKERS_S.replace("BODY", body))
    (tmp / "link.ld").write_text(LINK_LD.replace("{flash}", board["flash"]).replace("{ram}", board["ram"]))
    elf = tmp / "guest.elf"
    cmd = [gcc, *board["cflags"], "-O2", "-nostdlib", "-ffreestanding", f"-DREPEAT={repeat}",
           f"-DUSE_TIMER={int(use_timer)}", f"-DUSE_SYSTICK={int(use_systick)}", "-T", str(tmp / "link.ld"), str(tmp / "guest.c"),
           str(tmp / "body.S"), "-o", str(elf), "-lgcc"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return elf


def timer_instructions(elf: Path, tmp: Path) -> int:
    """Instructions between the guest's two TIMER0 reads, from the CMSDK timer under -icount shift=6."""
    proc = subprocess.run(qemu_command(elf, "mps2-an386"), capture_output=True, text=True, timeout=30, check=True)
    ticks = int(re.search(r"T=([0-9a-f]{8})", proc.stdout + proc.stderr).group(1), 16)
    return ticks * 40 // 64  # 25 MHz ticks (40 ns) -> 64 ns instructions


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "plugin-cache"


def test_sled_count_is_exact(tmp_path: Path, cache: Path) -> None:
    for k in (0, 1000):
        d = tmp_path / f"k{k}"
        d.mkdir()
        blocks = run_block_profile(build_guest(d, M4, nop_sled(k)), M4["machine"], timeout_s=30, cache_dir=cache)
        assert blocks.windows == 1
        assert blocks.instructions() == k + WINDOW_OVERHEAD


def test_sled_count_is_exact_on_cortex_m0(tmp_path: Path, cache: Path) -> None:
    blocks = run_block_profile(build_guest(tmp_path, M0, nop_sled(777)), M0["machine"], timeout_s=30, cache_dir=cache)
    assert blocks.instructions() == 777 + WINDOW_OVERHEAD


def test_same_program_twice_gives_identical_profile(tmp_path: Path, cache: Path) -> None:
    body = "    movs r1, #200\n1:\n    ldr r2, [sp]\n    subs r1, #1\n    bne 1b\n"
    elf = build_guest(tmp_path, M4, body)
    table = load_timing_table("cortex-m4")
    runs = [profile_from_blocks(run_block_profile(elf, M4["machine"], timeout_s=30, cache_dir=cache), table)
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0].instructions == 1 + 200 * 3 + WINDOW_OVERHEAD


def test_each_window_is_kept_apart(tmp_path: Path, cache: Path) -> None:
    blocks = run_block_profile(build_guest(tmp_path, M4, nop_sled(50), repeat=3), M4["machine"],
                               timeout_s=30, cache_dir=cache)
    assert blocks.windows == 3
    assert [blocks.instructions(window=w) for w in range(3)] == [52, 52, 52]


def test_kernel_segments_sum_to_window_minus_preamble(tmp_path: Path, cache: Path) -> None:
    # preamble: begin's bx lr, movs, bl mark = 3; kernel 0: mark's bx lr + 100 + movs + bl = 103;
    # kernel 1 (last): mark's bx lr + 40 + bl tvmnas_window_end = 42.
    body = ("    movs r0, #0\n    bl tvmnas_kernel_mark\n" + nop_sled(100)
            + "    movs r0, #1\n    bl tvmnas_kernel_mark\n" + nop_sled(40))
    elf = build_guest(tmp_path, M4, body)
    profile = profile_from_blocks(run_block_profile(elf, M4["machine"], timeout_s=30, cache_dir=cache),
                                  load_timing_table("cortex-m4"))
    assert profile.preamble_instructions == 3
    assert [k.instructions for k in profile.kernels] == [103, 42]
    assert profile.instructions == profile.preamble_instructions + sum(k.instructions for k in profile.kernels)
    assert profile.cycles == profile.preamble_cycles + sum(k.cycles for k in profile.kernels)


def test_load_heavy_loop_costs_more_cycles_than_instructions_on_m4(tmp_path: Path, cache: Path) -> None:
    body = ("    ldr r0, =ia\n    movs r1, #128\n    movs r3, #0\n1:\n    ldr r2, [r0], #4\n"
            "    add r3, r2\n    subs r1, #1\n    bne 1b\n")
    blocks = run_block_profile(build_guest(tmp_path, M4, body), M4["machine"], timeout_s=30, cache_dir=cache)
    profile = profile_from_blocks(blocks, load_timing_table("cortex-m4"))
    assert profile.instructions == 3 + 128 * 4 + WINDOW_OVERHEAD
    # Per iteration: ldr 2 + add 1 + subs 1 + bne 1, taken 127 times (+2 each).
    assert profile.cycles > profile.instructions
    assert profile.blocks.taken_branches() >= 127
    assert estimate_cycles(profile.blocks, load_timing_table("cortex-m4")) == profile.cycles


def test_plugin_agrees_with_cmsdk_timer_icount(tmp_path: Path, cache: Path) -> None:
    bodies = {
        "sled": nop_sled(3000),
        "loop": "    movs r1, #250\n1:\n    ldr r2, [sp]\n    adds r2, #3\n    subs r1, #1\n    bne 1b\n",
    }
    gaps = []
    for name, body in bodies.items():
        d = tmp_path / name
        d.mkdir()
        elf = build_guest(d, M4, body, use_timer=True)
        plugin = run_block_profile(elf, M4["machine"], timeout_s=30, cache_dir=cache).instructions()
        gaps.append(timer_instructions(elf, d) - plugin)
    # The timer also sees the fixed code between its two reads and the window (a few instructions);
    # the 40 ns timer tick quantises the timer figure by at most one instruction.
    print("timer minus plugin instructions:", gaps)
    assert abs(gaps[0] - gaps[1]) <= 1, gaps
    assert 0 <= gaps[0] <= 12, gaps


def test_interrupt_handlers_inside_the_window_are_not_counted(tmp_path: Path, cache: Path) -> None:
    elf = build_guest(tmp_path, M0, nop_sled(20000), use_systick=True)
    proc = subprocess.run(qemu_command(elf, M0["machine"]), capture_output=True, text=True, timeout=30, check=True)
    wraps = int(re.search(r"T=([0-9a-f]{8})", proc.stdout + proc.stderr).group(1), 16)
    assert wraps > 0, "SysTick never interrupted the window: the test does not exercise the handler"
    blocks = run_block_profile(elf, M0["machine"], timeout_s=30, cache_dir=cache)
    assert blocks.instructions() == 20000 + WINDOW_OVERHEAD
    # Only begin's return and the call of tvmnas_window_end are taken: an interrupted block resumes
    # at its fall-through once the (skipped) handler returns.
    assert blocks.taken_branches() == 2


def test_elf_without_window_markers_is_a_build_error(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "f.c").write_text("int f(void) { return 0; }\n")
    obj = tmp_path / "f.o"
    subprocess.run(["arm-none-eabi-gcc", "-mthumb", "-c", str(tmp_path / "f.c"), "-o", str(obj)], check=True)
    with pytest.raises(BuildError, match="has no function tvmnas_window_begin"):
        qemu_plugin_args(build_plugin(cache), obj, tmp_path / "out.txt")


def test_program_that_never_closes_its_window_is_an_emulator_error(tmp_path: Path, cache: Path) -> None:
    # The body exits through semihosting inside the window.
    body = "    movs r0, #0x18\n    ldr r1, =0x20026\n    bkpt 0xab\n    .ltorg\n"
    elf = build_guest(tmp_path, M4, body)
    with pytest.raises(EmulatorError, match="did not reach tvmnas_window_end"):
        run_block_profile(elf, M4["machine"], timeout_s=30, cache_dir=cache)
