"""Instruction-mix features of profiled segments, and the linear timing model fitted to a board.

A segment's features are counts the timing table prices one by one: instructions per timing
class (`n:<class>`), words moved by load/store multiples (`w:<class>`), taken block exits
(`taken`, and `taken_loop_end` for Armv8.1-M low-overhead loops), single loads that pipeline
after a load/store (`pipelined`, counted negative: the table's figure is a saving), loads/stores
that wait on the address computed just before (`stall`) and data reads from the firmware's flash
(`flash_reads`: literal pools and `.rodata` weights; counted only when the plugin was given the
flash region). A `LinearTiming` is one weight per feature; estimated cycles are the dot product.

For a core without dual issue, the weights read from its timing table give exactly
tvmnas.measure.cycles' estimate (flash reads weigh 0 there). Dual issue is a pairing rule, not
a sum, so a table fitted from a board drops it: the board's cycles carry its effect instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping

from tvmnas.measure.blocks import Block, BlockProfile
from tvmnas.measure.cycles import (
    DATA_PROCESSING_CLASSES, MEMORY_CLASSES, TimingTable, _address_regs, _dests, classify, register_count,
)

FLASH_READS = "flash_reads"
TAKEN = "taken"
TAKEN_LOOP_END = "taken_loop_end"
PIPELINED = "pipelined"
STALL = "stall"
MULTIPLE_CLASSES = frozenset({"load_multiple", "store_multiple", "fp_load_multiple", "fp_store_multiple"})

Features = dict[str, float]


def block_features(block: Block, table: TimingTable) -> Counter:
    """Features of one execution of a block (taken exit excluded), judged with `table`'s pipelining sets."""
    out: Counter = Counter()
    infos = []
    for insn in block.insns:
        cls = classify(insn)
        out[f"n:{cls}"] += 1
        if cls in MULTIPLE_CLASSES or cls in table.per_register:
            out[f"w:{cls}"] += register_count(insn)
        infos.append((insn, cls, _dests(insn, cls)))
    for i in range(1, len(infos)):
        insn, cls, _ = infos[i]
        _, pcls, pdest = infos[i - 1]
        if cls not in MEMORY_CLASSES:
            continue
        addr = _address_regs(insn, cls)
        if pcls in table.pipelined_after and cls in table.pipelined_classes and not (pdest & addr):
            out[PIPELINED] -= 1
        if pcls in DATA_PROCESSING_CLASSES and pdest & addr:
            out[STALL] += 1
    return out


def segment_features(profile: BlockProfile, table: TimingTable, window: int | None = None) -> dict[int, Features]:
    """Features per segment (-1 preamble, 0.. kernels) of one window (None: all windows summed)."""
    per_block = {bid: block_features(b, table) for bid, b in profile.blocks.items()}
    loop_end = {bid: bool(b.insns) and classify(b.insns[-1]) == "loop_end" for bid, b in profile.blocks.items()}
    out: dict[int, Counter] = {seg: Counter() for seg in profile.segments()}
    for c in profile.counts:
        if window is not None and c.window != window:
            continue
        seg = out.setdefault(c.segment, Counter())
        for name, value in per_block[c.block].items():
            seg[name] += value * c.executions
        seg[TAKEN_LOOP_END if loop_end[c.block] else TAKEN] += c.taken
        seg[FLASH_READS] += c.region_reads
    return {seg: {k: float(v) for k, v in sorted(f.items()) if v} for seg, f in out.items()}


@dataclass(frozen=True)
class LinearTiming:
    """Cycles = sum of weight x feature; a feature without a weight costs `default` per count
    for instruction counts (`n:` features) and nothing otherwise."""

    core: str
    weights: dict[str, float]
    default: float = 1.0

    def cycles(self, features: Mapping[str, float]) -> float:
        """Estimated cycles of one segment's features."""
        total = 0.0
        for name, value in features.items():
            if name in self.weights:
                total += self.weights[name] * value
            elif name.startswith("n:"):
                total += self.default * value
        return total

    def many(self, rows: Iterable[Mapping[str, float]]) -> list[float]:
        return [self.cycles(r) for r in rows]


def linear_from_table(table: TimingTable) -> LinearTiming:
    """The weights a timing table gives each feature (exact for cores without dual issue)."""
    weights: dict[str, float] = {f"n:{cls}": float(c) for cls, c in table.classes.items()}
    weights["n:unknown"] = float(table.unknown_cycles)
    for cls, per in table.per_register.items():
        weights[f"w:{cls}"] = float(per)
    weights[TAKEN] = float(table.branch_penalty)
    weights[TAKEN_LOOP_END] = float(table.loop_end_penalty if table.loop_end_penalty is not None else table.branch_penalty)
    weights[PIPELINED] = float(table.pipelined_saving)
    weights[STALL] = float(table.address_stall)
    weights[FLASH_READS] = float(getattr(table, "flash_read_cycles", 0.0))
    return LinearTiming(table.core, weights, float(table.unknown_cycles))


__all__ = ["FLASH_READS", "Features", "LinearTiming", "PIPELINED", "STALL", "TAKEN", "TAKEN_LOOP_END",
           "block_features", "linear_from_table", "segment_features"]
