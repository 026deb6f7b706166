"""Timing-table model and profile parsing, on hand-made blocks (no emulator)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tvmnas.errors import EmulatorError, ToolchainMissingError, UnknownTargetError
from tvmnas.measure import plugin as plugin_mod
from tvmnas.measure.blocks import Block, BlockCount, BlockProfile, Insn, parse_block_profile
from tvmnas.measure.cycles import (
    available_cores,
    block_cycles,
    classify,
    estimate_cycles,
    estimate_segment_cycles,
    load_timing_table,
    mnemonic_base,
)


def block(*texts: str, pc: int = 0x100) -> Block:
    insns = tuple(Insn(vaddr=pc + 4 * i, size=4, text=t) for i, t in enumerate(texts))
    return Block(pc=pc, end=pc + 4 * len(texts), insns=insns)


@pytest.mark.parametrize(
    "mnemonic, base",
    [("adds", "add"), ("add.w", "add"), ("bne", "b"), ("bls", "b"), ("lsls", "lsl"), ("movs", "mov"),
     ("vfma.f32", "vfma"), ("ldr.w", "ldr"), ("itte", "it"), ("addseq", "add"), ("bl", "bl")],
)
def test_mnemonic_base_strips_suffixes(mnemonic: str, base: str) -> None:
    assert mnemonic_base(mnemonic) == base


@pytest.mark.parametrize(
    "text, cls",
    [("ldr r0, [r1, #4]", "load"), ("str.w r0, [r1, #0x80c]", "store"), ("vfma.f32 s0, s14, s15", "fp_fma"),
     ("push {r4, r5, lr}", "store_multiple"), ("pop {r4, pc}", "load_multiple"), ("sdiv r0, r1, r2", "div"),
     ("smlad r0, r1, r2, r3", "dsp"), ("bl #0x3c", "call"), ("ldr pc, [sp], #4", "branch"),
     ("vldrw.u32 q0, [r0]", "mve_memory"), ("vmla.s8 q0, q1, r2", "mve"), ("frobnicate r0", "unknown"),
     (".byte 0x0f, 0xf0", "loop_end"), (".byte 0x4e, 0xf0", "loop_start")],
)
def test_classify(text: str, cls: str) -> None:
    assert classify(Insn(0, 4, text)) == cls


def test_every_core_has_a_table_with_references() -> None:
    assert {"cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55"} <= set(available_cores())
    for core in available_cores():
        table = load_timing_table(core)
        assert table.classes and all(table.references[c] for c in table.classes)


def test_unknown_core_is_a_clear_error() -> None:
    with pytest.raises(UnknownTargetError, match="no timing table for core 'cortex-m99'"):
        load_timing_table("cortex-m99")


def test_m4_load_after_load_is_pipelined() -> None:
    m4 = load_timing_table("cortex-m4")
    assert block_cycles(block("ldr r0, [r1]"), m4) == 2
    assert block_cycles(block("ldr r0, [r1]", "ldr r2, [r3]"), m4) == 3  # TRM example: 3 cycles total
    # The second load's address is the first load's result: no pipelining.
    assert block_cycles(block("ldr r0, [r1]", "ldr r2, [r0]"), m4) == 4


def test_m4_address_dependency_stalls() -> None:
    m4 = load_timing_table("cortex-m4")
    assert block_cycles(block("adds r1, #4", "ldr r0, [r1]"), m4) == 4
    assert block_cycles(block("adds r2, #4", "ldr r0, [r1]"), m4) == 3


def test_multiple_transfers_cost_per_register() -> None:
    m4 = load_timing_table("cortex-m4")
    assert block_cycles(block("push {r4, r5, r6, lr}"), m4) == 5
    assert block_cycles(block("vpush {d8, d9}"), m4) == 5  # two D registers = four words


def test_m0_and_m3_differ_where_their_trms_do() -> None:
    mla = block("mla r0, r1, r2, r3")
    assert block_cycles(mla, load_timing_table("cortex-m4")) == 1
    assert block_cycles(mla, load_timing_table("cortex-m3")) == 2
    ldr2 = block("ldr r0, [r1]", "ldr r2, [r3]")
    assert block_cycles(ldr2, load_timing_table("cortex-m0")) == 4  # no pipelining on M0


def test_m33_differs_from_the_m4_where_its_pipeline_does() -> None:
    """M33: branches resolve in stage 2 (refill 1, M4 2); addresses are formed in the ALU's stage
    (no address-dependency stall); the M4's per-instruction costs otherwise."""
    m4, m33 = load_timing_table("cortex-m4"), load_timing_table("cortex-m33")
    assert (m33.branch_penalty, m4.branch_penalty) == (1, 2)
    dependent = block("adds r1, #4", "ldr r0, [r1]")
    assert (block_cycles(dependent, m33), block_cycles(dependent, m4)) == (3, 4)
    assert block_cycles(block("ldr r0, [r1]", "ldr r2, [r3]"), m33) == 3  # the M4's pipelining rule
    mac = block("smlad r0, r1, r2, r3", "vfma.f32 s0, s1, s2", "sdiv r0, r1, r2")
    assert block_cycles(mac, m33) == block_cycles(mac, m4) == 1 + 3 + 7
    assert all(m33.references[c].startswith("approx: DDI 0439B") for c in m33.classes)


def test_m7_dual_issue_pairs_independent_instructions() -> None:
    m7 = load_timing_table("cortex-m7")
    assert block_cycles(block("adds r0, #1", "adds r1, #1"), m7) == 1
    assert block_cycles(block("adds r0, #1", "adds r0, #1"), m7) == 2  # dependent: no pair
    assert block_cycles(block("ldr r0, [r4]", "ldr r1, [r5]"), m7) == 2  # two memory accesses: no pair


def synthetic_profile() -> BlockProfile:
    loop = block("ldr r2, [r0], #4", "add r3, r2", "subs r1, #1", "bne #0x100")
    tail = block("bx lr", pc=0x200)
    return BlockProfile(
        windows=1,
        blocks={0: loop, 1: tail},
        counts=[BlockCount(0, 0, -1, 1, 0), BlockCount(0, 0, 0, 10, 9), BlockCount(1, 0, 0, 1, 1)],
        segment_keys=[(0, -1), (0, 0)],
    )


def test_taken_exits_add_the_refill_penalty_and_segments_sum() -> None:
    m4 = load_timing_table("cortex-m4")
    prof = synthetic_profile()
    per_seg = estimate_segment_cycles(prof, m4)
    # Loop body: ldr 2 + add 1 + subs 1 + bne 1 = 5; taken exits cost 2 more each.
    assert per_seg == {-1: 5, 0: 10 * 5 + 9 * 2 + 1 + 2}
    assert estimate_cycles(prof, m4) == sum(per_seg.values())
    assert prof.instructions() == 4 + 40 + 1
    assert prof.instructions() == prof.instructions(-1) + prof.instructions(0)


def test_parse_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text(
        "tvmnas-profile 1\nwindows 1 open 0\nsegment 0 0 -1\nsegment 1 0 0\n"
        "block 3 0x100 0x104 2\ninsn 0x100 2 movs r0, #0\ninsn 0x102 2 bx lr\n"
        "count 3 0 1 1\ncount 3 1 5 5\n"
    )
    prof = parse_block_profile(path)
    assert prof.kernels() == 1
    assert prof.instructions(-1) == 2 and prof.instructions(0) == 10
    assert prof.blocks[3].insns[0].mnemonic == "movs"


def test_window_that_never_closed_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("tvmnas-profile 1\nwindows 0 open 1\n")
    with pytest.raises(EmulatorError, match="did not reach tvmnas_window_end"):
        parse_block_profile(path)
    with pytest.raises(EmulatorError, match="no profile written"):
        parse_block_profile(tmp_path / "missing.txt")


def test_missing_host_compiler_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin_mod.shutil, "which", lambda name: None)
    with pytest.raises(ToolchainMissingError, match="apt-get install gcc"):
        plugin_mod.build_plugin(tmp_path)


def test_plugin_builds_once_per_source_hash(tmp_path: Path) -> None:
    assert shutil.which("gcc"), "host gcc not found: install it with 'apt-get install gcc'"
    first = plugin_mod.build_plugin(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert plugin_mod.build_plugin(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert plugin_mod.plugin_source_hash() in first.name


def test_m55_low_overhead_loop_end_has_no_refill() -> None:
    m55 = load_timing_table("cortex-m55")
    loop = block("vldr s14, [r3]", ".byte 0x0f, 0xf0")
    prof = BlockProfile(windows=1, blocks={0: loop}, counts=[BlockCount(0, 0, -1, 10, 9)], segment_keys=[(0, -1)])
    assert estimate_cycles(prof, m55) == 10 * (2 + 1)
