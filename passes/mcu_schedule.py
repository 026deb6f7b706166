"""ScheduleForMCU: loop-nest rules that make legalized kernels fast and small on a microcontroller."""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from .module_update import replace_functions

_REDUCE = 2  # IterVar.iter_type of a commutative reduction axis
_WINDOW_MAX = 7  # reduction loops up to this extent (kernel windows) are unrolled


def _is_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(int(iv.iter_type) == _REDUCE for iv in sch.get(block).iter_vars)


def _try(action, *args, **kwargs):
    """Apply one schedule primitive; None when TVM refuses it (the rule then does not apply)."""
    try:
        return action(*args, **kwargs)
    except (tvm.error.InternalError, RuntimeError, ValueError):
        return None


def _region_dtype(region) -> str:
    """dtype of the buffer a block's read/write region refers to."""
    buffer = getattr(region, "buffer", None) or getattr(region, "tensor", None) or getattr(region, "source", None)
    return str(buffer.dtype)


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext.value) if hasattr(ext, "value") else None


def _largest_divisor(n: int | None, candidates: tuple[int, ...]) -> int:
    for c in candidates:
        if n is not None and n % c == 0 and n > c:
            return c
    return 1


class _Rules:
    """The rules applied to one PrimFunc, in order."""

    def __init__(self, func: tirx.PrimFunc, tile_channels: int, tile_width: int,
                 integer_tile: tuple[int, int] | None = None) -> None:
        self.sch = s_tir.Schedule(func)
        self.root = self.sch.get_sblock("root")
        self.tile_channels = tile_channels
        self.tile_width = tile_width
        self.integer_tile = integer_tile

    def blocks(self) -> list:
        return list(self.sch.get_child_blocks(self.root))

    def name(self, block) -> str:
        return self.sch.get(block).name_hint

    def reductions(self) -> list:
        return [b for b in self.blocks() if _is_reduction(self.sch, b)]

    def split_loops(self, red) -> tuple[list, list]:
        loops = self.sch.get_loops(red)
        n_spatial = sum(1 for iv in self.sch.get(red).iter_vars if int(iv.iter_type) != _REDUCE)
        return list(loops[:n_spatial]), list(loops[n_spatial:])

    def fuse_epilogue(self, red) -> None:
        """Inline bias/activation chains after the reduction into one block computed per output tile."""
        blocks = self.blocks()
        names = [self.name(b) for b in blocks]
        after = blocks[names.index(self.name(red)) + 1:]
        for b in after[:-1]:
            _try(self.sch.compute_inline, b)
        self.epilogue = self.blocks()[-1] if after else None

    def tile(self, red) -> tuple[list, list, object]:
        """Register tile: output channels x output columns innermost, reduction in between.

        Loop order for a 4-D output becomes  n, row, ch_o, col_o, <reduction>, ch_i, col_i  so
        each loaded weight is reused across tile_width columns and each input across tile_channels.
        Returns (outer spatial loops, reduction loops, the loop under which a padded row band is computed).
        """
        spatial, reduce = self.split_loops(red)
        sch = self.sch
        if len(spatial) == 4:
            n, ch, row, col = spatial
            tc = _largest_divisor(_extent(sch, ch), (self.tile_channels, 2))
            tw = _largest_divisor(_extent(sch, col), (self.tile_width, 2))
            ch_o, ch_i = sch.split(ch, [None, tc])
            col_o, col_i = sch.split(col, [None, tw])
            sch.reorder(n, row, ch_o, col_o, *reduce, ch_i, col_i)
            for loop in (ch_i, col_i):
                if _extent(sch, loop) > 1:
                    sch.unroll(loop)
            return [n, row, ch_o, col_o], reduce, row
        if len(spatial) == 2:
            i, j = spatial
            tj = _largest_divisor(_extent(sch, j), (self.tile_channels, 2))
            j_o, j_i = sch.split(j, [None, tj])
            sch.reorder(i, j_o, *reduce, j_i)
            if tj > 1:
                sch.unroll(j_i)
            return [i, j_o], reduce, None
        return spatial, reduce, None

    def apply(self, inline_padding: bool, fuse_epilogue: bool, register_tile: bool, unroll_window: bool):
        sch = self.sch
        reductions = self.reductions()
        if not reductions and fuse_epilogue:
            # a purely injective kernel (concat, slice, transpose, elementwise chains): compute every
            # element straight into the output instead of staging each step in scratch
            for b in self.blocks()[:-1]:
                _try(sch.compute_inline, b)
        if len(reductions) != 1:
            return sch.mod["main"]
        red = reductions[0]
        if self.integer_tile is not None and "int" in _region_dtype(self.sch.get(red).writes[0]):
            # integer accumulators live in the core registers (13 usable), not the FPU's 32
            self.tile_channels, self.tile_width = self.integer_tile
        pads = [b for b in self.blocks() if self.name(b).startswith("pad") and not _is_reduction(sch, b)]
        self.epilogue = None
        if fuse_epilogue:
            self.fuse_epilogue(red)
        band = None
        n_outer = len(self.split_loops(red)[0])
        if register_tile:
            tiled = _try(self.tile, red)
            if tiled is not None:
                outer, _, band = tiled
                n_outer = len(outer)
        loops = sch.get_loops(red)
        has_reduce = len(loops) > n_outer
        first_reduce = n_outer
        outer_tile_loop = loops[n_outer - 1] if n_outer > 0 else None
        if self.epilogue is not None and outer_tile_loop is not None:
            _try(sch.reverse_compute_at, self.epilogue, outer_tile_loop)
        for pad in pads:
            if inline_padding:
                _try(sch.compute_inline, pad)
            elif band is not None:
                _try(sch.compute_at, pad, band)
        if has_reduce and (fuse_epilogue or register_tile):  # accumulator init hoisted out of the reduction
            _try(sch.decompose_reduction, red, sch.get_loops(red)[first_reduce])
        if unroll_window:
            for loop in sch.get_loops(red)[first_reduce:]:
                ext = _extent(sch, loop)
                if ext is not None and 1 < ext <= _WINDOW_MAX:
                    _try(sch.unroll, loop)
        return sch.mod["main"]


def schedule_primfunc(
    func: tirx.PrimFunc,
    *,
    inline_padding: bool = False,
    fuse_epilogue: bool = True,
    register_tile: bool = True,
    unroll_window: bool = True,
    tile_channels: int = 4,
    tile_width: int = 4,
    integer_tile: tuple[int, int] | None = (2, 2),
) -> tirx.PrimFunc:
    """Apply the MCU rules to one PrimFunc; a rule that does not apply leaves the function as it was,
    and so is a function without s_tir blocks (one call of a C micro-kernel, passes/int8_simd.py)."""
    if _try(s_tir.Schedule(func).get_sblock, "root") is None:
        return func
    return _Rules(func, tile_channels, tile_width, integer_tile).apply(
        inline_padding, fuse_epilogue, register_tile, unroll_window)


@tvm.transform.module_pass(opt_level=0, name="ScheduleForMCU")
class ScheduleForMCU:
    """Schedule every PrimFunc of a module for a single-issue microcontroller core.

    Expects: PrimFuncs as LegalizeOps + FuseTIR leave them (s_tir blocks); kernels with exactly one
    reduction block (conv, depthwise conv, dense/matmul, pooling) are scheduled, others untouched.
    Rules (constructor arguments, each can be switched off):
    - fuse_epilogue: bias/activation chains are inlined and computed right after each output tile's
      reduction, so accumulators stay in registers and no full-size intermediate exists; in kernels
      without a reduction (concat, slice, transpose, elementwise) every step is inlined into the output.
    - register_tile: output channels (tile_channels) x output columns (tile_width) become the
      innermost unrolled loops, so every loaded weight and input is reused from registers;
      kernels accumulating in integers (int8 convolutions) use integer_tile (channels, columns)
      instead, as their accumulators compete for the 13 core registers (None: the float tile).
    - inline_padding: True computes zero padding inside the inner loop (no scratch, branches per
      multiply); False (default) computes the padded input one row band at a time (scratch of
      C_in x kernel rows x padded width, branch-free inner loop).
    - unroll_window: the kernel-window reduction loops (extent <= 7) are unrolled.
    Guarantees: the same values as the unscheduled function (float summation order per output is
    unchanged); a function no rule applies to is returned as it was.
    """

    def __init__(
        self,
        inline_padding: bool = False,
        fuse_epilogue: bool = True,
        register_tile: bool = True,
        unroll_window: bool = True,
        tile_channels: int = 4,
        tile_width: int = 4,
        integer_tile: tuple[int, int] | None = (2, 2),
    ) -> None:
        self.options = dict(
            inline_padding=inline_padding, fuse_epilogue=fuse_epilogue, register_tile=register_tile,
            unroll_window=unroll_window, tile_channels=tile_channels, tile_width=tile_width,
            integer_tile=integer_tile,
        )

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {
            gv: schedule_primfunc(func, **self.options)
            for gv, func in mod.functions.items()
            if isinstance(func, tirx.PrimFunc)
        }
        return replace_functions(mod, updates)
