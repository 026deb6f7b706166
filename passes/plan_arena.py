"""PlanArena: one static arena with fixed offsets for every intermediate tensor and kernel scratch."""

from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 16


def _align(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class ArenaBuffer:
    """A buffer live from step `first` to step `last` inclusive (steps are kernel calls)."""

    name: str
    nbytes: int
    first: int
    last: int

    def overlaps(self, other: "ArenaBuffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    """Byte offsets of every buffer in one arena, with the figures to judge the plan by."""

    offsets: dict[str, int]
    arena_bytes: int
    lower_bound_bytes: int   # the most bytes live at any one step: no plan can go below it
    unshared_bytes: int      # every buffer laid end to end


def lower_bound(buffers: list[ArenaBuffer]) -> int:
    """Largest total size of buffers live at the same step (aligned as the plan aligns them)."""
    if not buffers:
        return 0
    steps = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    return max(sum(_align(b.nbytes) for b in buffers if b.first <= s <= b.last) for s in steps)


def plan_arena(buffers: list[ArenaBuffer], alignment: int = ALIGNMENT) -> ArenaPlan:
    """Greedy-by-size placement: each buffer (largest first) goes to the lowest aligned offset
    where it does not overlap, in address and lifetime, any buffer already placed.

    Deterministic: ties broken by first use, then name.
    """
    order = sorted(buffers, key=lambda b: (-b.nbytes, b.first, b.name))
    placed: list[tuple[int, int, ArenaBuffer]] = []  # (offset, end, buffer)
    offsets: dict[str, int] = {}
    for buf in order:
        size = _align(buf.nbytes, alignment)
        conflicts = sorted((o, e) for o, e, other in placed if other.overlaps(buf))
        offset = 0
        for start, end in conflicts:
            if offset + size <= start:
                break
            offset = max(offset, _align(end, alignment))
        placed.append((offset, offset + size, buf))
        offsets[buf.name] = offset
    arena = max((e for _, e, _ in placed), default=0)
    unshared = sum(_align(b.nbytes, alignment) for b in buffers)
    return ArenaPlan(dict(sorted(offsets.items())), arena, lower_bound(buffers), unshared)


def stock_storage_bytes(mod) -> int:
    """Bytes TVM's own planner reserves for the intermediate tensors of `main` (for comparison).

    Runs ToNonDataflow, RemovePurityChecking, CallTIRRewrite and StaticPlanBlockMemory on a fused
    module (as MCULowering leaves it) and sums its `alloc_storage` sizes. Kernel scratch is not
    included: stock TVM allocates it at run time through the workspace API.
    """
    import tvm
    from tvm import relax

    planned = tvm.transform.Sequential(
        [
            relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(),
            relax.transform.CallTIRRewrite(),
            relax.transform.StaticPlanBlockMemory(),
        ]
    )(mod)
    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")
    total = 0
    for block in planned["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.same_as(alloc_storage):
                total += int(value.args[0].values[0])
    return total
