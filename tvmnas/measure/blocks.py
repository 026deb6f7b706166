"""The plugin's block profile: blocks (pc, instructions, disassembly) and their counts per segment.

A window runs from the entry of tvmnas_window_begin to the entry of tvmnas_window_end (excluded);
windows are numbered 0, 1, ... in run order. Inside a window, segment -1 is the preamble (window
start up to the first kernel mark) and segment k >= 0 is kernel k (the k-th entry of
tvmnas_kernel_mark up to the next mark or the window end; the mark call's own instructions
belong to it). So, exactly, per window:
    instructions() == instructions(-1) + sum(instructions(k) for k in range(kernels()))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tvmnas.errors import EmulatorError

PREAMBLE = -1
FORMAT_HEADER = "tvmnas-profile 1"


@dataclass(frozen=True)
class Insn:
    """One guest instruction: address, size in bytes and QEMU's disassembly text."""

    vaddr: int
    size: int
    text: str

    @property
    def mnemonic(self) -> str:
        return self.text.split(None, 1)[0].lower() if self.text.strip() else ""

    @property
    def operands(self) -> str:
        parts = self.text.split(None, 1)
        return parts[1].strip() if len(parts) > 1 else ""


@dataclass(frozen=True)
class Block:
    """A straight-line block, keyed by (pc, number of instructions); end is its fall-through address."""

    pc: int
    end: int
    insns: tuple[Insn, ...]

    @property
    def n_insns(self) -> int:
        return len(self.insns)


@dataclass(frozen=True)
class BlockCount:
    """How often a block ran in one segment of one window, and how often it left through a taken branch."""

    block: int
    window: int
    segment: int
    executions: int
    taken: int
    region_reads: int = 0  # data reads from the plugin's region= range (flash), when it was given


@dataclass
class BlockProfile:
    """Everything the plugin recorded in the measured windows of one run (windows numbered from 0)."""

    windows: int
    blocks: dict[int, Block] = field(default_factory=dict)
    counts: list[BlockCount] = field(default_factory=list)
    segment_keys: list[tuple[int, int]] = field(default_factory=list)

    def kernels(self, window: int | None = None) -> int:
        """Number of kernel segments (kernel marks) in a window, or the most in any window."""
        per = [sum(1 for w, s in self.segment_keys if s >= 0 and w == win) for win in range(self.windows)]
        if window is not None:
            return per[window]
        return max(per, default=0)

    def segments(self) -> list[int]:
        """The preamble (-1) followed by kernel indices 0..kernels()-1."""
        return [PREAMBLE, *range(self.kernels())]

    def window(self, index: int) -> BlockProfile:
        """The profile of one window alone (as window 0); negative indices count from the end."""
        if not -self.windows <= index < self.windows:
            raise IndexError(f"window {index} of {self.windows}")
        index %= self.windows
        return BlockProfile(
            windows=1,
            blocks=self.blocks,
            counts=[replace(c, window=0) for c in self.counts if c.window == index],
            segment_keys=[(0, s) for w, s in self.segment_keys if w == index],
        )

    def _select(self, segment: int | None, window: int | None) -> list[BlockCount]:
        return [
            c for c in self.counts
            if (segment is None or c.segment == segment) and (window is None or c.window == window)
        ]

    def instructions(self, segment: int | None = None, window: int | None = None) -> int:
        """Exact instructions executed in a segment (None: all) of a window (None: all windows)."""
        return sum(c.executions * self.blocks[c.block].n_insns for c in self._select(segment, window))

    def region_reads(self, segment: int | None = None, window: int | None = None) -> int:
        """Data reads from the plugin's region (the firmware's flash); 0 when it was not counted."""
        return sum(c.region_reads for c in self._select(segment, window))

    def taken_branches(self, segment: int | None = None, window: int | None = None) -> int:
        """Number of block exits through a taken branch (calls and returns included)."""
        return sum(c.taken for c in self._select(segment, window))


def parse_block_profile(path: Path) -> BlockProfile:
    """Read the plugin's output file; raise EmulatorError when it is absent or no window closed."""
    path = Path(path)
    if not path.is_file():
        raise EmulatorError(f"no profile written to {path}: the program never reached tvmnas_window_end")
    lines = path.read_text(errors="replace").splitlines()
    if not lines or lines[0].strip() != FORMAT_HEADER:
        raise EmulatorError(f"{path} is not a tvmnas block profile (first line {lines[:1]!r})")
    profile: BlockProfile | None = None
    keys: dict[int, tuple[int, int]] = {}
    count_at: dict[tuple[int, int], int] = {}
    current: list[Insn] = []
    pending: tuple[int, int, int, int] | None = None

    def close_block() -> None:
        nonlocal pending, current
        if pending is not None:
            bid, pc, end, n = pending
            if len(current) != n:
                raise EmulatorError(f"{path}: block {bid} lists {len(current)} of {n} instructions")
            assert profile is not None
            profile.blocks[bid] = Block(pc=pc, end=end, insns=tuple(current))
        pending, current = None, []

    for lineno, line in enumerate(lines[1:], start=2):
        kind, _, rest = line.partition(" ")
        try:
            if kind == "windows":
                f = rest.split()
                profile = BlockProfile(windows=int(f[0]))
                if int(f[2]) and profile.windows == 0:
                    raise EmulatorError(f"{path}: the program did not reach tvmnas_window_end")
            elif kind == "segment":
                key, win, idx = (int(x) for x in rest.split())
                keys[key] = (win, idx)
            elif kind == "block":
                close_block()
                bid, pc, end, n = rest.split()
                pending = (int(bid), int(pc, 16), int(end, 16), int(n))
            elif kind == "insn":
                vaddr, size, text = (rest.split(None, 2) + [""])[:3]
                if pending is None:
                    raise ValueError("instruction outside a block")
                current.append(Insn(vaddr=int(vaddr, 16), size=int(size), text=text.strip()))
            elif kind == "count":
                close_block()
                bid, key, execs, taken = (int(x) for x in rest.split())
                assert profile is not None
                win, idx = keys[key]
                profile.counts.append(BlockCount(bid, win, idx, execs, taken))
                count_at[(bid, key)] = len(profile.counts) - 1
            elif kind == "reads":
                bid, key, reads = (int(x) for x in rest.split())
                assert profile is not None
                at = count_at[(bid, key)]
                profile.counts[at] = replace(profile.counts[at], region_reads=reads)
            elif line.strip():
                raise ValueError(f"unknown record {kind!r}")
        except (ValueError, IndexError, KeyError) as exc:
            raise EmulatorError(f"{path}:{lineno}: malformed profile line ({exc})") from exc
    close_block()
    if profile is None:
        raise EmulatorError(f"{path}: profile has no header record")
    if profile.windows == 0:
        raise EmulatorError(f"{path}: the program never completed a tvmnas_window_begin/end window")
    # Segments of a window still open at exit are dropped: only closed windows count.
    profile.segment_keys = [keys[k] for k in sorted(keys) if keys[k][0] < profile.windows]
    profile.counts = [c for c in profile.counts if c.window < profile.windows]
    return profile
