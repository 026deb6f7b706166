"""Timing-table cycle model: a deterministic cycle estimate from a block profile and a per-core table.

Each instruction's mnemonic (QEMU's disassembly) is mapped to a timing class (alu, load, fp_fma, ...);
the core's table (targets/timing/<core>.json, every figure with its TRM reference) gives the class's
cycles, plus cycles per listed register for load/store multiple. Within a block, in program order:
a single load right after a load/store whose result does not feed its address saves the table's
pipelining cycles; a load/store whose address register was written by the instruction just before
it pays the address-dependency stall; on dual-issue cores two adjacent dual-issuable, independent
instructions (not both memory accesses) cost as much as the slower one. Each taken block exit
(branch, call, return, branch-table jump) adds the pipeline-refill penalty.

Limits: no flash wait states or flash accelerators, no caches or TCM effects, no bus contention,
no interrupts; SDIV/UDIV and long multiplies use a representative value from the TRM's range;
FP result latencies and load-use stalls other than the address dependency are not modelled;
pipelining and stalls are judged inside a block only; dual issue is approximated by pairing.
The result is an estimate (expect tens of percent error against a board); rankings are what it
is for. Instruction counts, by contrast, are exact.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import tvmnas.targets
from tvmnas.errors import UnknownTargetError
from tvmnas.measure.blocks import PREAMBLE, Block, BlockProfile, Insn

TIMING_DIR = Path(tvmnas.targets.__file__).resolve().parent / "timing"

_CONDITIONS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al")

# Mnemonic (without width/type/condition/flag suffixes) -> timing class. New instruction: one line.
CLASS_OF: dict[str, str] = {}
_GROUPS: dict[str, tuple[str, ...]] = {
    "alu": (
        "mov", "mvn", "movw", "movt", "add", "addw", "adc", "sub", "subw", "sbc", "rsb", "neg", "adr",
        "and", "orr", "orn", "eor", "bic", "lsl", "lsr", "asr", "ror", "rrx", "cmp", "cmn", "tst", "teq",
        "sxtb", "sxth", "uxtb", "uxth", "sxtab", "sxtah", "uxtab", "uxtah", "sxtb16", "uxtb16",
        "sxtab16", "uxtab16", "ubfx", "sbfx", "bfi", "bfc", "clz", "rbit", "rev", "rev16", "revsh",
        "ssat", "usat", "ssat16", "usat16", "nop", "it", "cpy", "pkhbt", "pkhtb", "sel",
        "qadd", "qsub", "qdadd", "qdsub", "sadd16", "ssub16", "sadd8", "ssub8", "uadd16", "usub16",
        "uadd8", "usub8", "qadd16", "qsub16", "qadd8", "qsub8", "shadd16", "uhadd16", "usad8", "usada8",
        "sasx", "ssax", "uasx", "usax", "qasx", "qsax",
    ),
    "mul": ("mul",),
    "mac": ("mla", "mls"),
    "mul_long": ("smull", "umull"),
    "mac_long": ("smlal", "umlal", "umaal"),
    "dsp": (
        "smlad", "smladx", "smlsd", "smlsdx", "smuad", "smuadx", "smusd", "smusdx", "smlabb", "smlabt",
        "smlatb", "smlatt", "smulbb", "smulbt", "smultb", "smultt", "smlawb", "smlawt", "smulwb",
        "smulwt", "smmul", "smmulr", "smmla", "smmlar", "smmls", "smmlsr", "smlald", "smlaldx",
        "smlsld", "smlsldx", "smlalbb", "smlalbt", "smlaltb", "smlaltt",
    ),
    "div": ("sdiv", "udiv"),
    "load": ("ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "ldrex", "ldrexb", "ldrexh", "ldrt", "ldrbt", "ldrht", "ldrsbt", "ldrsht"),
    "store": ("str", "strb", "strh", "strex", "strexb", "strexh", "strt", "strbt", "strht"),
    "load_double": ("ldrd",),
    "store_double": ("strd",),
    "load_multiple": ("ldm", "ldmia", "ldmfd", "ldmdb", "ldmea", "pop"),
    "store_multiple": ("stm", "stmia", "stmea", "stmdb", "stmfd", "push"),
    "branch": ("b", "bx", "cbz", "cbnz"),
    "call": ("bl", "blx"),
    "table_branch": ("tbb", "tbh"),
    "barrier": ("dsb", "dmb", "isb"),
    "system": ("mrs", "msr", "cpsid", "cpsie", "svc", "bkpt", "wfi", "wfe", "sev", "yield", "udf", "pld", "pli", "clrex"),
    "fp_alu": (
        "vadd", "vsub", "vabs", "vneg", "vcmp", "vcmpe", "vcvt", "vcvtr", "vcvta", "vcvtn", "vcvtp",
        "vcvtm", "vcvtb", "vcvtt", "vmov", "vmrs", "vmsr", "vmaxnm", "vminnm", "vsel", "vseleq",
        "vselge", "vselgt", "vselvs", "vrinta", "vrintn", "vrintp", "vrintm", "vrintx", "vrintz", "vrintr",
    ),
    "fp_mul": ("vmul", "vnmul"),
    "fp_mac": ("vmla", "vmls", "vnmla", "vnmls"),
    "fp_fma": ("vfma", "vfms", "vfnma", "vfnms"),
    "fp_div": ("vdiv", "vsqrt"),
    "fp_load": ("vldr",),
    "fp_store": ("vstr",),
    "fp_load_multiple": ("vldm", "vldmia", "vldmdb", "vpop"),
    "fp_store_multiple": ("vstm", "vstmia", "vstmdb", "vpush"),
}
for _cls, _names in _GROUPS.items():
    for _name in _names:
        CLASS_OF[_name] = _cls

MEMORY_CLASSES = frozenset({
    "mve_memory", "load", "store", "load_double", "store_double", "load_multiple", "store_multiple",
    "fp_load", "fp_store", "fp_load_multiple", "fp_store_multiple",
})
DATA_PROCESSING_CLASSES = frozenset({"alu", "mul", "mac", "mul_long", "mac_long", "dsp", "div"})
_NO_DEST = frozenset({
    "cmp", "cmn", "tst", "teq", "vcmp", "vcmpe", "it", "nop", "b", "bx", "bl", "blx", "cbz", "cbnz",
    "tbb", "tbh", "vmsr", "msr",
})
_TWO_DEST = frozenset({"ldrd", "smull", "umull", "smlal", "umlal", "umaal", "smlald", "smlsld"})
_REG = re.compile(r"\b(r1[0-5]|r[0-9]|sb|sl|fp|ip|sp|lr|pc|s[0-9]{1,2}|d[0-9]{1,2}|q[0-7])\b")


def mnemonic_base(mnemonic: str) -> str:
    """Strip width (.w/.n), data type (.f32), condition and flag-setting suffixes from a mnemonic."""
    m = mnemonic.lower().split(".", 1)[0]
    if m in CLASS_OF:
        return m
    if m.startswith("it") and set(m[2:]) <= {"t", "e"}:
        return "it"
    if len(m) > 2 and m[-2:] in _CONDITIONS and m[:-2] in CLASS_OF:
        return m[:-2]
    if m.endswith("s") and m[:-1] in CLASS_OF:
        return m[:-1]
    if len(m) > 3 and m[-2:] in _CONDITIONS and m[-3] == "s" and m[:-3] in CLASS_OF:
        return m[:-3]
    return m


_MVE_MEMORY = re.compile(r"^v(ld|st)(r[bhwd]|[24][0-3])")
_QREG = re.compile(r"\bq[0-7]\b")


def classify(insn: Insn) -> str:
    """Timing class of one instruction ('unknown' when its mnemonic is not in CLASS_OF).

    Helium (MVE) instructions, recognised by a Q-register operand, are 'mve_memory' for vector
    loads/stores and 'mve' otherwise.
    """
    base = mnemonic_base(insn.mnemonic)
    if insn.mnemonic == ".byte":
        return _undecoded_class(insn)
    if _QREG.search(insn.operands):
        return "mve_memory" if _MVE_MEMORY.match(base) else "mve"
    cls = CLASS_OF.get(base, "unknown")
    if cls == "load" and re.match(r"pc\b", insn.operands):
        return "branch"  # LDR PC, [...] is a jump: load plus refill
    return cls


def _undecoded_class(insn: Insn) -> str:
    """Class of an instruction QEMU's disassembler shows as raw bytes (Armv8.1-M low-overhead loops)."""
    try:
        lo, hi = (int(b.strip(), 16) for b in insn.operands.split(",")[:2])
    except ValueError:
        return "unknown"
    halfword = lo | (hi << 8)
    if halfword & 0xFFDF == 0xF00F:
        return "loop_end"  # LE / LETP
    if halfword & 0xFFF0 == 0xF040:
        return "loop_start"  # DLS / WLS
    return "unknown"


def _split_operands(operands: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in operands:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def register_count(insn: Insn) -> int:
    """Words moved by a load/store multiple: listed registers, a D register counting two."""
    m = re.search(r"\{([^}]*)\}", insn.operands)
    if not m:
        return 1
    words = 0
    for item in m.group(1).split(","):
        item = item.strip()
        if "-" in item:
            lo, hi = (x.strip() for x in item.split("-", 1))
            span = int(hi[1:]) - int(lo[1:]) + 1
        else:
            lo, span = item, 1
        words += span * (2 if lo.startswith("d") else 1)
    return max(words, 1)


def _dests(insn: Insn, cls: str) -> frozenset[str]:
    base = mnemonic_base(insn.mnemonic)
    if base in _NO_DEST or cls in ("store", "store_double", "store_multiple", "fp_store", "fp_store_multiple"):
        return frozenset()
    ops = _split_operands(insn.operands)
    if cls in ("load_multiple", "fp_load_multiple"):
        return frozenset(_REG.findall(insn.operands.split("{", 1)[-1]))
    n = 2 if base in _TWO_DEST else 1
    return frozenset(r for op in ops[:n] for r in _REG.findall(op) if "[" not in op)


def _address_regs(insn: Insn, cls: str) -> frozenset[str]:
    m = re.search(r"\[([^\]]*)\]", insn.operands)
    if m:
        return frozenset(_REG.findall(m.group(1)))
    if cls in ("load_multiple", "store_multiple", "fp_load_multiple", "fp_store_multiple"):
        base = mnemonic_base(insn.mnemonic)
        if base in ("push", "pop", "vpush", "vpop"):
            return frozenset({"sp"})
        ops = _split_operands(insn.operands)
        return frozenset(_REG.findall(ops[0])) if ops else frozenset()
    return frozenset()


_WRITE_ONLY = frozenset({
    "mov", "mvn", "movw", "adr", "neg", "sxtb", "sxth", "uxtb", "uxth", "clz", "rbit", "rev", "rev16",
    "revsh", "cpy", "vmov", "vneg", "vabs", "vcvt", "vsqrt", "ldr", "ldrb", "ldrh", "ldrsb", "ldrsh",
})


def _reads(insn: Insn, cls: str) -> frozenset[str]:
    """Registers an instruction reads: all operands but its destinations, except for accumulating
    and two-operand forms (ADDS r0, #1), which also read their destination."""
    ops = _split_operands(insn.operands)
    dests = _dests(insn, cls)
    regs = frozenset(_REG.findall(insn.operands))
    if cls in ("mac", "mac_long", "dsp", "fp_mac", "fp_fma"):
        return regs
    base = mnemonic_base(insn.mnemonic)
    if len(ops) <= 2 and base not in _WRITE_ONLY and cls not in MEMORY_CLASSES:
        return regs
    return regs - dests


@dataclass(frozen=True)
class TimingTable:
    """One core's timing figures (see targets/timing/<core>.json for each figure's TRM reference)."""

    core: str
    classes: dict[str, float]
    per_register: dict[str, float]
    branch_penalty: float
    pipelined_after: frozenset[str] = frozenset()
    pipelined_classes: frozenset[str] = frozenset()
    pipelined_saving: float = 0.0
    address_stall: float = 0.0
    dual_issue: frozenset[str] = frozenset()
    unknown_cycles: float = 1.0
    loop_end_penalty: float | None = None
    references: dict[str, str] = field(default_factory=dict)
    flash_read_cycles: float = 0.0  # per data read from flash (a table calibrated on a board)

    def cost(self, insn: Insn, cls: str) -> float:
        base = self.classes.get(cls, self.unknown_cycles)
        return base + self.per_register.get(cls, 0.0) * (register_count(insn) if cls in self.per_register else 0)


def timing_table_from_dict(data: dict) -> TimingTable:
    """Build a TimingTable from the JSON layout of targets/timing/<core>.json."""
    classes = {name: float(v["cycles"]) for name, v in data["classes"].items()}
    per_register = {name: float(v["per_register"]) for name, v in data["classes"].items() if "per_register" in v}
    refs = {name: v["ref"] for name, v in data["classes"].items()}
    pipe = data.get("load_pipelining") or {}
    stall = data.get("address_dependency_stall") or {}
    dual = data.get("dual_issue") or {}
    return TimingTable(
        core=data["core"],
        classes=classes,
        per_register=per_register,
        branch_penalty=float(data["branch_taken_penalty"]["cycles"]),
        pipelined_after=frozenset(pipe.get("after", ())),
        pipelined_classes=frozenset(pipe.get("classes", ())),
        pipelined_saving=float(pipe.get("cycles_saved", 0.0)),
        address_stall=float(stall.get("cycles", 0.0)),
        dual_issue=frozenset(dual.get("classes", ())),
        unknown_cycles=float(data.get("unknown_cycles", 1.0)),
        loop_end_penalty=float(data["loop_end_taken_penalty"]["cycles"]) if "loop_end_taken_penalty" in data else None,
        references=refs,
        flash_read_cycles=float(((data.get("memory_regions") or {}).get("flash_read") or {}).get("cycles", 0.0)),
    )


def available_cores() -> list[str]:
    """Cores that have a timing table."""
    return sorted(p.stem for p in TIMING_DIR.glob("*.json"))


@lru_cache(maxsize=None)
def load_timing_table(core: str) -> TimingTable:
    """The timing table of a core such as 'cortex-m4' (or of a user target calibrated from a
    board, tvmnas.board.user_targets); UnknownTargetError if there is none."""
    path = TIMING_DIR / f"{core}.json"
    if not path.is_file():
        from tvmnas.board.user_targets import TIMING, user_file

        path = user_file(core, TIMING) or path
    if not path.is_file():
        raise UnknownTargetError(f"no timing table for core '{core}' (have: {', '.join(available_cores())})")
    return timing_table_from_dict(json.loads(path.read_text()))


def block_cycles(block: Block, table: TimingTable) -> float:
    """Cycles of one execution of a block, taken-exit penalty excluded."""
    infos = []
    for insn in block.insns:
        cls = classify(insn)
        infos.append((insn, cls, table.cost(insn, cls), _dests(insn, cls)))
    costs = [c for _, _, c, _ in infos]
    for i in range(1, len(infos)):
        insn, cls, _, _ = infos[i]
        prev, pcls, _, pdest = infos[i - 1]
        if cls not in MEMORY_CLASSES:
            continue
        addr = _address_regs(insn, cls)
        if pcls in table.pipelined_after and cls in table.pipelined_classes and not (pdest & addr):
            costs[i] = max(costs[i] - table.pipelined_saving, 1.0)
        if pcls in DATA_PROCESSING_CLASSES and pdest & addr:
            costs[i] += table.address_stall
    if not table.dual_issue:
        return sum(costs)
    total, i = 0.0, 0
    while i < len(infos):
        if i + 1 < len(infos):
            a_insn, a_cls, _, a_dest = infos[i]
            b_insn, b_cls, _, _ = infos[i + 1]
            pairable = (
                a_cls in table.dual_issue
                and b_cls in table.dual_issue
                and not (a_cls in MEMORY_CLASSES and b_cls in MEMORY_CLASSES)
                and not (a_dest & _reads(b_insn, b_cls))
            )
            if pairable:
                total += max(costs[i], costs[i + 1])
                i += 2
                continue
        total += costs[i]
        i += 1
    return total


def taken_penalty(block: Block, table: TimingTable) -> float:
    """Cycles a taken exit from this block adds (a low-overhead loop's LE may have its own)."""
    if table.loop_end_penalty is not None and block.insns and classify(block.insns[-1]) == "loop_end":
        return table.loop_end_penalty
    return table.branch_penalty


def _segment_cycles(profile: BlockProfile, table: TimingTable) -> dict[int, float]:
    per_block = {bid: block_cycles(b, table) for bid, b in profile.blocks.items()}
    out: dict[int, float] = {seg: 0.0 for seg in profile.segments()}
    penalty = {bid: taken_penalty(b, table) for bid, b in profile.blocks.items()}
    for c in profile.counts:
        out[c.segment] = (out.get(c.segment, 0.0) + c.executions * per_block[c.block] + c.taken * penalty[c.block]
                          + c.region_reads * table.flash_read_cycles)
    return out


def estimate_cycles(profile: BlockProfile, table: TimingTable) -> int:
    """Estimated cycles of the whole measured window: the sum of estimate_segment_cycles."""
    return sum(estimate_segment_cycles(profile, table).values())


def estimate_segment_cycles(profile: BlockProfile, table: TimingTable) -> dict[int, int]:
    """Estimated cycles per segment: -1 is the preamble, 0.. are the kernels in call order."""
    return {seg: round(v) for seg, v in _segment_cycles(profile, table).items()}


def unclassified_mnemonics(profile: BlockProfile, table: TimingTable) -> set[str]:
    """Mnemonics in the profile that the table has no class for (they cost table.unknown_cycles)."""
    return {
        insn.mnemonic
        for b in profile.blocks.values()
        for insn in b.insns
        if classify(insn) not in table.classes
    }


__all__ = [
    "PREAMBLE", "TimingTable", "available_cores", "block_cycles", "classify", "estimate_cycles", "taken_penalty",
    "estimate_segment_cycles", "load_timing_table", "mnemonic_base", "timing_table_from_dict",
    "unclassified_mnemonics",
]
