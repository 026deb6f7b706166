"""PlanArena: one static arena with fixed offsets for every intermediate tensor and kernel scratch."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    is_scratch: bool = False  # a kernel's private workspace rather than a tensor of the graph

    def overlaps(self, other: "ArenaBuffer") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    """Byte offsets of every buffer in one arena, with the figures to judge the plan by."""

    offsets: dict[str, int]
    arena_bytes: int
    lower_bound_bytes: int   # the most bytes live at any one step: no plan can go below it
    unshared_bytes: int      # every buffer laid end to end
    # tensor written in place over another -> that tensor (same offset); see in_place_aliases
    aliases: dict[str, str] = field(default_factory=dict)


def _last_use(graph) -> dict[str, int]:
    last_use: dict[str, int] = {}
    for call in graph.calls:
        for a in call.args:
            last_use[a] = call.index
    return last_use


def in_place_aliases(graph, in_place: dict[str, list[tuple[int, int]]]) -> dict[str, str]:
    """Which outputs to write over which inputs: output tensor -> the input tensor whose bytes it takes.

    `in_place[kernel]` lists the (input parameter, output parameter) positions that kernel may run
    in place on (`passes.in_place.in_place_pairs`; outputs are numbered after the call's args). A
    call uses a pair only when the input is an intermediate tensor (not the model's input or
    output, not a constant) whose last reader is this call and which it passes once, the output is
    not the model's output, and both have the same dtype and size. Chains follow: an element-wise
    kernel after an in-place add writes over the same bytes again.
    """
    io = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    last_use = _last_use(graph)
    aliases: dict[str, str] = {}
    for call in graph.calls:
        taken: set[str] = set()
        for p, o in in_place.get(call.kernel, []):
            if not (0 <= p < len(call.args) and 0 <= o - len(call.args) < len(call.outputs)):
                continue
            src, out = call.args[p], call.outputs[o - len(call.args)]
            if src not in graph.tensors or src in io or out in io or src in taken or out in aliases:
                continue
            if last_use.get(src) != call.index or call.args.count(src) != 1:
                continue
            a, b = graph.tensors[src], graph.tensors[out]
            if a.dtype != b.dtype or a.nbytes != b.nbytes:
                continue
            aliases[out] = src
            taken.add(src)
    return aliases


def _root(name: str, aliases: dict[str, str]) -> str:
    while name in aliases:
        name = aliases[name]
    return name


def graph_buffers(graph, scratch: dict[str, list[tuple[str, int]]],
                  aliases: dict[str, str] | None = None) -> list[ArenaBuffer]:
    """Arena buffers of a CallGraph: every intermediate tensor from its producer to its last reader,
    and each call's kernel scratch (`scratch[kernel]` = [(name, bytes)]) for that call only.
    The model's inputs and outputs are the caller's buffers and are left out.
    aliases (from `in_place_aliases`): a tensor written in place over another shares its buffer,
    which then lives from the first tensor's producer to the last reader of any of them."""
    io = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    aliases = aliases or {}
    last_use = _last_use(graph)
    spans: dict[str, list[int]] = {}  # root tensor -> [bytes, first, last]
    for call in graph.calls:
        for out in call.outputs:
            if out not in io:
                span = spans.setdefault(_root(out, aliases), [0, call.index, call.index])
                span[0] = max(span[0], graph.tensors[out].nbytes)
                span[2] = max(span[2], last_use.get(out, call.index))
    buffers = [ArenaBuffer(name, nbytes, first, last) for name, (nbytes, first, last) in spans.items()]
    for call in graph.calls:
        for name, nbytes in scratch.get(call.kernel, []):
            buffers.append(ArenaBuffer(f"{call.index}:{name}", nbytes, call.index, call.index, is_scratch=True))
    return buffers


def lower_bound(buffers: list[ArenaBuffer]) -> int:
    """Largest total size of buffers live at the same step (aligned as the plan aligns them)."""
    if not buffers:
        return 0
    steps = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    return max(sum(_align(b.nbytes) for b in buffers if b.first <= s <= b.last) for s in steps)


_ORDERS = {
    "size": lambda b: (-b.nbytes, b.first, b.name),
    "first_use": lambda b: (b.first, -b.nbytes, b.name),
    "lifetime": lambda b: (-(b.last - b.first), -b.nbytes, b.name),
    "area": lambda b: (-b.nbytes * (b.last - b.first + 1), b.first, b.name),
}


def _place(order: list[ArenaBuffer], alignment: int) -> tuple[dict[str, int], int]:
    """Each buffer in turn goes to the lowest aligned offset clear of every placed buffer it overlaps in time."""
    placed: list[tuple[int, int, ArenaBuffer]] = []
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
    return offsets, max((e for _, e, _ in placed), default=0)


SEARCH_STEPS = 20000  # placements tried by `_place_within` before it gives up


def _free_offsets(size: int, conflicts: list[tuple[int, int]], limit: int, alignment: int) -> list[int]:
    """The lowest and the highest aligned offset where `size` bytes fit below `limit` clear of `conflicts`."""
    fits = []
    edges = sorted({0, *(_align(e, alignment) for _, e in conflicts)})
    ends = sorted({limit, *(s for s, _ in conflicts)}, reverse=True)
    for start in edges:
        if start + size <= limit and all(start + size <= s or start >= e for s, e in conflicts):
            fits.append(start)
            break
    for end in ends:
        start = (end - size) // alignment * alignment
        if start >= 0 and start + size <= limit and all(start + size <= s or start >= e for s, e in conflicts):
            if start not in fits:
                fits.append(start)
            break
    return fits


def _place_within(buffers: list[ArenaBuffer], limit: int, alignment: int) -> dict[str, int] | None:
    """Offsets for every buffer inside `limit` bytes, or None: buffers in order of first use, each at
    the lowest or the highest place it fits, depth first with backtracking (at most SEARCH_STEPS
    placements). Packs what first fit leaves fragmented, e.g. a chain whose tensors alternate in
    size (pad 48 KB, conv 32 KB, conv 32 KB, pad ...), which needs the ends of the arena in turn."""
    order = sorted(buffers, key=lambda b: (b.first, -b.nbytes, b.name))
    placed: list[tuple[int, int]] = []
    steps = 0

    def go(i: int) -> bool:
        nonlocal steps
        if i == len(order):
            return True
        buf = order[i]
        size = _align(buf.nbytes, alignment)
        conflicts = [(o, o + _align(order[j].nbytes, alignment)) for j, o in enumerate(placed) if order[j].overlaps(buf)]
        for offset in _free_offsets(size, conflicts, limit, alignment):
            steps += 1
            if steps > SEARCH_STEPS:
                return False
            placed.append(offset)
            if go(i + 1):
                return True
            placed.pop()
        return False

    if not go(0):
        return None
    return {b.name: o for b, o in zip(order, placed)}


def plan_arena(buffers: list[ArenaBuffer], alignment: int = ALIGNMENT,
               aliases: dict[str, str] | None = None) -> ArenaPlan:
    """Greedy first-fit placement tried in several orders (largest first, first use, longest
    lifetime, largest size x lifetime); the smallest arena wins, ties to the earlier order. Where
    that is above the live-bytes bound, a bounded search (`_place_within`) tries to fit the bound.
    aliases: the `in_place_aliases` the buffers were built with; each aliased tensor gets the
    offset of the tensor it is written over.

    Deterministic: every order breaks ties by name.
    """
    best: tuple[dict[str, int], int] | None = None
    for key in _ORDERS.values():
        offsets, arena = _place(sorted(buffers, key=key), alignment)
        if best is None or arena < best[1]:
            best = (offsets, arena)
    offsets, arena = best
    bound = lower_bound(buffers)
    if arena > bound:
        tight = _place_within(buffers, bound, alignment)
        if tight is not None:
            offsets, arena = tight, max((o + _align(b.nbytes, alignment) for b in buffers
                                         for o in [tight[b.name]]), default=0)
    aliases = aliases or {}
    for name in aliases:
        offsets[name] = offsets[_root(name, aliases)]
    unshared = sum(_align(b.nbytes, alignment) for b in buffers)
    return ArenaPlan(dict(sorted(offsets.items())), arena, bound, unshared, dict(sorted(aliases.items())))


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
