"""KernelFeatures: a fixed-length feature vector per fused TIR kernel, for learned cost models.

Features are read from the legalized, fused PrimFunc as MCULowering leaves it (SBlocks with
iteration domains, before any schedule or LowerTIRForC), so they describe what a kernel computes
(loop extents, MACs, bytes moved, operator kind, kernel size, stride, channels) and stay stable
when loop structure changes underneath. A PrimFunc without SBlocks (already flat) is also
accepted: its BufferStores are then counted under their enclosing loops.

An int8 kernel that calls a C micro-kernel (passes/int8_simd: tvmnas_s8_conv, tvmnas_s8_conv_add,
tvmnas_s8_depthwise) has no loop nest to read: its features come from the call's layer constants
instead (micro_kernel_features), in the same slots a float32 kernel of that shape fills (MACs,
output elements, channels, window, stride, padding), so the one feature layout serves both
precisions and float32 kernels' features are unchanged.

A kernel with an int8 parameter also gets the integer features (passes/integer_features:
requantizations by the path gcc compiles them to, branch arms counted over the iterations that take
them, divisions by a variable count), after FEATURE_NAMES (INT8_FEATURE_NAMES, the layout of int8
surrogates); a float32 kernel's features are FEATURE_NAMES alone, so float32 profile data and
surrogates stay as they were.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import tirx

from .integer_features import INTEGER_FEATURE_NAMES, integer_counts, integer_features, integer_kernel

DTYPE_BYTES = {"float32": 4, "int32": 4, "int8": 1, "uint8": 1, "int16": 2, "int64": 8, "float64": 8, "bool": 1}
ARITH = ("Add", "Sub", "Mul", "Div", "FloorDiv", "FloorMod", "Max", "Min")
COMPARE = ("LT", "LE", "GT", "GE", "EQ", "NE", "And", "Or", "Not")

# Operator classes, from the block names LegalizeOps gives (first match wins).
OP_CLASSES = ("depthwise", "conv", "matmul", "pool_max", "pool_avg", "mean", "concat", "elementwise")
_CLASS_KEYS = (
    ("depthwise", ("depthwise",)),
    ("conv", ("conv2d",)),
    ("matmul", ("matmul", "dense")),
    ("pool_max", ("pool_max",)),
    ("pool_avg", ("pool_sum", "pool_avg", "adaptive_pool")),
    ("mean", ("mean", "_red")),
    ("concat", ("concatenate",)),
)

# Dynamic counts over the kernel as printed to C (flat TIR after LowerTIRForC): every statement and
# expression weighted by the trip count of its enclosing loops. Loads and stores with constant
# indices hit register-tile accumulators; a load repeated in one loop body is counted once (the C
# compiler keeps it in a register).
FLAT_COUNTS = ("loop_iters", "loop_entries", "inner_iters", "unrolled_iters", "mem_loads", "mem_stores",
               "reg_accesses", "fmul", "fadd", "fminmax", "fdiv", "fcalls", "selects", "int_ops", "compares",
               "branches")

# gcc -O3 unrolls a loop completely when it runs at most this often and its unrolled body stays
# small (its max-completely-peel-times and max-completely-peeled-insns defaults); TIR nodes stand
# in for gcc's instruction estimate.
UNROLL_MAX_TRIPS = 16
UNROLL_MAX_NODES = 200

# Block-level counts that also enter as ratios per unit of work (see ratio_features).
BLOCK_COUNTS = ("loads", "flops", "compares", "iters_pad", "iters_spatial", "loop_entries", "loads_reduce",
                "loads_elementwise", "bytes_in", "bytes_out", "bytes_temp", "padded_macs")

# The vector layout: every model trained on these features depends on this order.
FEATURE_NAMES: tuple[str, ...] = (
    "n_blocks", "n_reduce_blocks", "n_pad_blocks", "n_elementwise_blocks",
    "log_iters_total", "log_iters_reduce", "log_iters_spatial", "log_iters_pad",
    "log_loads", "log_flops", "log_macs", "log_compares",
    "log_bytes_in", "log_bytes_out", "log_bytes_temp", "n_params",
    "log_loop_entries", "log_main_out_elems", "log_loads_reduce", "log_loads_elementwise",
    *(f"class_{c}" for c in OP_CLASSES),
    "main_log_domain", "main_log_reduce", "main_depth",
    "main_inner0", "main_inner1", "main_inner2",
    "kernel_h", "kernel_w", "stride", "dilation",
    "channels_in", "channels_out", "out_h", "out_w", "groups_depthwise",
    "has_clip", "has_residual_add", "spatial_ops_per_elem",
    "window_valid_frac", "log_valid_macs", "log_padded_macs",
    *(f"log_exec_{c}" for c in FLAT_COUNTS),
    *(f"per_unit_{c}" for c in FLAT_COUNTS),
    *(f"per_out_{c}" for c in FLAT_COUNTS),
    *(f"share_{c}" for c in FLAT_COUNTS),
    "units_per_out",
    *(f"per_unit_block_{c}" for c in BLOCK_COUNTS),
)
# int8 kernels (a parameter is an int8 buffer) add the integer features (passes/integer_features);
# float32 kernels' features are FEATURE_NAMES alone, as they were before integer features existed
INT8_FEATURE_NAMES: tuple[str, ...] = (*FEATURE_NAMES, *INTEGER_FEATURE_NAMES)


def feature_names(precision: str = "float32") -> tuple[str, ...]:
    """The feature layout a model of `precision` kernels is fitted on (float32: FEATURE_NAMES)."""
    return FEATURE_NAMES if precision == "float32" else INT8_FEATURE_NAMES


@dataclass
class BlockStats:
    """What one SBlock (or bare BufferStore) does: domain, loop extents, loads and ops per iteration."""

    name: str
    domain: int
    extents: list[int]
    reduce_extents: list[int]
    loads: int
    arith: dict[str, int]
    compares: int
    is_pad: bool
    store_buffer: str
    store_shape: tuple[int, ...]
    read_shapes: list[tuple[int, ...]] = field(default_factory=list)
    stride: int = 1
    dilation: int = 1


def _expr_children(e) -> list:
    kind = type(e).__name__
    if kind in ARITH or kind in COMPARE[:-1]:  # binary nodes (Not is unary)
        return [e.a, e.b]
    if kind == "Not":
        return [e.a]
    if kind in ("Cast",):
        return [e.value]
    if kind == "Select":
        return [e.condition, e.true_value, e.false_value]
    if kind == "Call":
        return list(e.args)
    if kind in ("BufferLoad", "TensorLoad"):
        return list(e.indices)
    return []


def _count_expr(e, counts: dict[str, int], loads: list) -> None:
    kind = type(e).__name__
    if kind in ("BufferLoad", "TensorLoad"):
        loads.append(e)
    elif kind == "Call":
        op = e.op.name.rsplit(".", 1)[-1] if hasattr(e.op, "name") else "call"
        counts["call:" + op] = counts.get("call:" + op, 0) + 1
    elif kind in ARITH or kind in COMPARE or kind == "Select":
        counts[kind] = counts.get(kind, 0) + 1
    for child in _expr_children(e):
        _count_expr(child, counts, loads)


def _int(x) -> int:
    return int(x.value) if hasattr(x, "value") else int(x)


def _shape(buffer) -> tuple[int, ...]:
    return tuple(_int(d) for d in buffer.shape)


def _load_source(load):
    """The buffer (or buffer-typed Var) a load reads."""
    return load.source if type(load).__name__ == "TensorLoad" else load.buffer


def _linear_coeff(index, var) -> int | None:
    """Coefficient of `var` in an affine index, or None when the index is not affine in it."""
    coeffs = tvm.sym.detect_linear_equation(index, [var])
    if len(coeffs) != 2 or not hasattr(coeffs[0], "value"):
        return None
    return int(coeffs[0].value)


def _block_stats(block, loops: list[int], store) -> BlockStats:
    counts: dict[str, int] = {}
    loads: list = []
    _count_expr(store.value, counts, loads)
    reduce_extents, spatial_vars, reduce_vars = [], [], []
    for iv in getattr(block, "iter_vars", []):
        if int(iv.iter_type) == tirx.IterVar.CommReduce:
            reduce_extents.append(_int(iv.dom.extent))
            reduce_vars.append(iv.var)
        else:
            spatial_vars.append(iv.var)
    value_kind = type(store.value).__name__
    is_pad = counts.get("call:if_then_else", 0) > 0 or value_kind == "Select"
    compares = sum(v for k, v in counts.items() if k in COMPARE)
    arith = {k: v for k, v in counts.items() if k in ARITH or k.startswith("call:")}
    stride = dilation = 1
    if reduce_vars and len(spatial_vars) >= 2:
        # the activation read indexed by an output row and a kernel row: conv or pool window
        for load in loads:
            if len(load.indices) < 3:
                continue
            idx = load.indices[-2]
            s = _linear_coeff(idx, spatial_vars[-2])
            d = _linear_coeff(idx, reduce_vars[-2]) if len(reduce_vars) >= 2 else None
            if s and d:
                stride, dilation = s, d
                break
    return BlockStats(
        name=str(getattr(block, "name_hint", store.buffer.name)),
        domain=int(np.prod(loops, dtype=np.int64)) if loops else 1,
        extents=list(loops),
        reduce_extents=reduce_extents,
        loads=len(loads),
        arith=arith,
        compares=compares,
        is_pad=is_pad,
        store_buffer=store.buffer.name,
        store_shape=_shape(store.buffer),
        read_shapes=[_shape(_load_source(ld)) for ld in loads],
        stride=stride,
        dilation=dilation,
    )


def collect_blocks(func: tirx.PrimFunc) -> list[BlockStats]:
    """One BlockStats per SBlock with a BufferStore body (or per bare BufferStore), in program order."""
    out: list[BlockStats] = []

    def visit(stmt, loops: list[int], block) -> None:
        kind = type(stmt).__name__
        if kind == "SeqStmt":
            for child in stmt.seq:
                visit(child, loops, block)
        elif kind == "For":
            ext = stmt.extent
            visit(stmt.body, loops + [_int(ext) if hasattr(ext, "value") else 1], block)
        elif kind == "SBlockRealize":
            visit(stmt.block, loops, stmt.block)
        elif kind == "SBlock":
            visit(stmt.body, loops, stmt)  # the init store (once per output element) is not counted
        elif kind in ("BufferStore", "TensorStore"):
            out.append(_block_stats(block if block is not None else stmt, loops, stmt))
        elif kind == "IfThenElse":
            visit(stmt.then_case, loops, block)
            if stmt.else_case is not None:
                visit(stmt.else_case, loops, block)
        elif hasattr(stmt, "body"):
            visit(stmt.body, loops, block)

    visit(func.body, [], None)
    return out


def op_class(blocks: list[BlockStats]) -> str:
    """The kernel's operator class (one of OP_CLASSES), from its block names."""
    names = " ".join(b.name for b in blocks)
    for cls, keys in _CLASS_KEYS:
        if any(k in names for k in keys):
            return cls
    return "elementwise"


def _taps_inside(out: int, kernel: int, stride: int, dilation: int, size: int, pad_before: int) -> float:
    """Fraction of (output position, kernel tap) pairs along one axis that read inside the input."""
    if out <= 0 or kernel <= 0:
        return 1.0
    pos = np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * dilation - pad_before
    return float(np.mean((pos >= 0) & (pos < size)))


def window_valid_fraction(input_shapes: list[tuple[int, ...]], main: BlockStats | None,
                          kernel: tuple[int, int]) -> float:
    """Fraction of a window's taps that fall inside the input rather than its zero border (1.0 unpadded).

    A padded conv or pool pays for a border tap differently from an inside one (inline padding
    branches past the load); this fraction tells the two apart. The input is the largest 4-D
    parameter the kernel only reads (weights excluded); padding is inferred from the output size as
    PyTorch pads, symmetrically (a border row that no window reaches does not count). Read from the
    shapes alone, so it is the same before and after scheduling.
    """
    kh, kw = kernel
    if main is None or len(main.store_shape) != 4 or (kh <= 1 and kw <= 1):
        return 1.0
    activations = [s for s in input_shapes if len(s) == 4 and tuple(s[2:]) != (kh, kw)]
    if not activations:
        return 1.0
    h, w = max(activations, key=lambda s: s[2] * s[3])[2:]
    out_h, out_w = main.store_shape[2:]
    s, d = main.stride, main.dilation
    pad_h = max(0, (out_h - 1) * s + d * (kh - 1) + 1 - h)
    pad_w = max(0, (out_w - 1) * s + d * (kw - 1) + 1 - w)
    return (_taps_inside(out_h, kh, s, d, h, (pad_h + 1) // 2)
            * _taps_inside(out_w, kw, s, d, w, (pad_w + 1) // 2))


def _log(x: float) -> float:
    return math.log1p(max(float(x), 0.0))


def micro_kernel_call(func: tirx.PrimFunc) -> tuple[str, dict[str, int]] | None:
    """(function, layer constants by name) of the int8 micro-kernel `func` calls, or None when it
    calls none (passes/int8_simd: its LAYER_FIELDS / DEPTHWISE_FIELDS, ADD_FIELDS follow the
    pointers)."""
    from .int8_simd import (ADD_FIELDS, DEPTHWISE_FIELDS, DEPTHWISE_FUNCTION, LAYER_FIELDS, SIMD_ADD_FUNCTION,
                            SIMD_FUNCTION)

    fields = {SIMD_FUNCTION: LAYER_FIELDS, SIMD_ADD_FUNCTION: LAYER_FIELDS + ADD_FIELDS,
              DEPTHWISE_FUNCTION: DEPTHWISE_FIELDS}
    found: list = []

    def visit(stmt) -> None:
        kind = type(stmt).__name__
        if kind == "SeqStmt":
            for child in stmt.seq:
                visit(child)
        elif kind == "Evaluate" and type(stmt.value).__name__ == "Call":
            call = stmt.value
            op = call.op.name.rsplit(".", 1)[-1] if hasattr(call.op, "name") else ""
            if op == "call_extern" and getattr(call.args[0], "value", None) in fields:
                found.append(call)
        elif hasattr(stmt, "body"):
            visit(stmt.body)

    visit(func.body)
    if len(found) != 1:
        return None
    name = str(found[0].args[0].value)
    constants = [_int(a) for a in found[0].args[1:] if type(a).__name__ == "IntImm"]
    if len(constants) != len(fields[name]):
        return None
    return name, dict(zip(fields[name], constants))


def micro_kernel_features(func: tirx.PrimFunc, function: str, layer: dict[str, int]) -> dict[str, float]:
    """Feature dict of a kernel that is one call of an int8 micro-kernel, from its layer constants:
    the call's MACs, reduction and output sizes, window, stride, dilation, padding (window_valid_frac)
    and channels fill the slots a loop nest would, and the executed counts are those of the
    call as printed (one call, its pointer arguments)."""
    from .int8_simd import DEPTHWISE_FUNCTION, SIMD_ADD_FUNCTION

    macs = _int(func.attrs[MACS_ATTR]) if func.attrs is not None and MACS_ATTR in func.attrs else 0
    depthwise = function == DEPTHWISE_FUNCTION
    kh, kw, sh = layer["kh"], layer["kw"], layer["sh"]
    dil = 1 if depthwise else layer["dh"]
    # one input channel per output channel in a depthwise window, as the float32 features count it
    cin, cout = (1, layer["c_in"] * layer["multiplier"]) if depthwise else (layer["cin"], layer["cout"])
    h, w, oh, ow = layer["h"], layer["w"], layer["oh"], layer["ow"]
    dense = not depthwise and (h, w, kh, kw, oh, ow) == (1, 1, 1, 1, 1, 1)
    cls = "depthwise" if depthwise else "matmul" if dense else "conv"
    reduce = cin * kh * kw
    out_elems = cout * oh * ow
    valid = (_taps_inside(oh, kh, sh, dil, h, layer["pt"]) * _taps_inside(ow, kw, layer["sw"], dil, w, layer["pl"])
             if kh > 1 or kw > 1 else 1.0)
    params = [b for b in (_param_buffer(func, q) for q in func.params) if b is not None]
    sizes = [int(np.prod(_shape(b), dtype=np.int64)) * DTYPE_BYTES.get(str(b.dtype), 4) for b in params]
    residual = function == SIMD_ADD_FUNCTION
    clip = layer["act_min"] > -128 or layer["act_max"] < 127
    f: dict[str, float] = {
        "n_blocks": 1 + residual, "n_reduce_blocks": 1, "n_pad_blocks": 0, "n_elementwise_blocks": int(residual),
        "log_iters_total": _log(macs + residual * out_elems), "log_iters_reduce": _log(macs),
        "log_iters_spatial": _log(residual * out_elems), "log_iters_pad": 0.0,
        "log_loads": _log(2 * macs + 2 * residual * out_elems), "log_flops": _log(2 * macs + residual * out_elems),
        "log_macs": _log(macs), "log_compares": 0.0,
        "log_bytes_in": _log(sum(sizes[:-1])), "log_bytes_out": _log(sizes[-1] if sizes else 0),  # out: the last
        "log_bytes_temp": 0.0, "n_params": len(func.params),
        "log_loop_entries": _log(macs // max(1, kw)), "log_main_out_elems": _log(out_elems),
        "log_loads_reduce": _log(2 * macs), "log_loads_elementwise": _log(2 * residual * out_elems),
        **{f"class_{c}": float(c == cls) for c in OP_CLASSES},
        "main_log_domain": _log(macs), "main_log_reduce": _log(reduce),
        "main_depth": 3 if dense else 7,
        "main_inner0": cin if dense else kw, "main_inner1": cout if dense else kh, "main_inner2": 1 if dense else cin,
        "kernel_h": kh, "kernel_w": kw, "stride": sh, "dilation": dil,
        "channels_in": cin, "channels_out": cout, "out_h": oh, "out_w": ow,
        "groups_depthwise": float(depthwise), "has_clip": float(clip), "has_residual_add": float(residual),
        "spatial_ops_per_elem": 4.0 * residual,
        "window_valid_frac": valid, "log_valid_macs": _log(macs * valid), "log_padded_macs": _log(macs * (1.0 - valid)),
    }
    f.update({f"log_exec_{k}": _log(v) for k, v in flat_counts(func).items()})
    f.update(ratio_features(f))
    out = {name: float(f[name]) for name in FEATURE_NAMES}
    # the output rescale reads each channel's shift from memory; the residual add (tvmnas_s8_add, not
    # inlined) rescales both addends and the sum with shifts passed at run time
    counts = integer_counts(_flat(func))
    counts["requant"] += out_elems * (1 + 3 * residual)
    counts["requant_var"] += out_elems * (1 + 3 * residual)
    counts["clamps"] += out_elems * 2 * (1 + residual)
    out.update(integer_features(counts, out_elems))
    return out


def kernel_features(func: tirx.PrimFunc) -> dict[str, float]:
    """Feature dict (keys = FEATURE_NAMES) of one fused PrimFunc.

    Counts: iterations per block (product of enclosing loop extents), loads and arithmetic per
    iteration, MACs (iterations of reduction blocks that multiply, or pool windows), bytes of the
    parameters read / written and of internal buffers. Shape features come from the main block
    (the reduction block with the largest domain, else the largest block). A call of an int8
    micro-kernel is read from its layer constants (micro_kernel_features).
    """
    call = micro_kernel_call(func)
    if call is not None:
        return micro_kernel_features(func, *call)
    blocks = collect_blocks(func)
    params = list(func.params)
    written = {b.store_buffer for b in blocks}
    bytes_in = bytes_out = bytes_temp = 0
    param_names = set()
    input_shapes = []
    for p in params:
        buf = _param_buffer(func, p)
        if buf is None:
            continue
        nbytes = int(np.prod(_shape(buf), dtype=np.int64)) * DTYPE_BYTES.get(str(buf.dtype), 4)
        param_names.add(buf.name)
        if buf.name in written:
            bytes_out += nbytes
        else:
            bytes_in += nbytes
            input_shapes.append(_shape(buf))
    for b in {b.store_buffer: b for b in blocks}.values():
        if b.store_buffer not in param_names:
            bytes_temp += int(np.prod(b.store_shape, dtype=np.int64)) * 4

    reduce_blocks = [b for b in blocks if b.reduce_extents]
    pad_blocks = [b for b in blocks if b.is_pad and not b.reduce_extents]
    elem_blocks = [b for b in blocks if not b.reduce_extents and not b.is_pad]
    iters_total = sum(b.domain for b in blocks)
    iters_reduce = sum(b.domain for b in reduce_blocks)
    loads = sum(b.domain * b.loads for b in blocks)
    flops = sum(b.domain * sum(b.arith.values()) for b in blocks)
    compares = sum(b.domain * b.compares for b in blocks)
    macs = sum(b.domain for b in reduce_blocks)

    main = max(reduce_blocks or blocks, key=lambda b: b.domain, default=None)
    cls = op_class(blocks)
    if cls == "conv" and main is not None and len(main.reduce_extents) == 3 and main.reduce_extents[0] == 1:
        cls = "depthwise"  # LegalizeOps names grouped convs conv2d too; one input channel per group
    f: dict[str, float] = {
        "n_blocks": len(blocks),
        "n_reduce_blocks": len(reduce_blocks),
        "n_pad_blocks": len(pad_blocks),
        "n_elementwise_blocks": len(elem_blocks),
        "log_iters_total": _log(iters_total),
        "log_iters_reduce": _log(iters_reduce),
        "log_iters_spatial": _log(sum(b.domain for b in elem_blocks)),
        "log_iters_pad": _log(sum(b.domain for b in pad_blocks)),
        "log_loads": _log(loads),
        "log_flops": _log(flops),
        "log_macs": _log(macs),
        "log_compares": _log(compares),
        "log_bytes_in": _log(bytes_in),
        "log_bytes_out": _log(bytes_out),
        "log_bytes_temp": _log(bytes_temp),
        "n_params": len(params),
        "log_loop_entries": _log(sum(b.domain // max(1, b.extents[-1] if b.extents else 1) for b in blocks)),
        "log_main_out_elems": _log(main.domain // max(1, int(np.prod(main.reduce_extents))) if main else 0),
        "log_loads_reduce": _log(sum(b.domain * b.loads for b in reduce_blocks)),
        "log_loads_elementwise": _log(sum(b.domain * b.loads for b in elem_blocks + pad_blocks)),
        **{f"class_{c}": float(c == cls) for c in OP_CLASSES},
    }
    ext = list(main.extents) if main else []
    inner = (ext[::-1] + [0, 0, 0])[:3]
    red = main.reduce_extents if main else []
    out_shape = main.store_shape if main else ()
    f.update({
        "main_log_domain": _log(main.domain if main else 0),
        "main_log_reduce": _log(np.prod(red) if red else 0),
        "main_depth": len(ext),
        "main_inner0": inner[0],
        "main_inner1": inner[1],
        "main_inner2": inner[2],
        "kernel_h": red[-2] if len(red) >= 2 else (red[0] if cls.startswith("pool") and red else 1),
        "kernel_w": red[-1] if red else 1,
        "stride": main.stride if main else 1,
        "dilation": main.dilation if main else 1,
        "channels_in": red[0] if len(red) >= 3 else (red[0] if cls == "matmul" and red else 0),
        "channels_out": out_shape[1] if len(out_shape) >= 2 else 0,
        "out_h": out_shape[2] if len(out_shape) == 4 else 1,
        "out_w": out_shape[3] if len(out_shape) == 4 else 1,
        "groups_depthwise": float(cls == "depthwise"),
        "has_clip": float(any("Min" in b.arith and "Max" in b.arith for b in elem_blocks)),
        "has_residual_add": float(any(
            "Add" in b.arith and sum(shape == b.store_shape for shape in b.read_shapes) >= 2 for b in elem_blocks
        )),
        "spatial_ops_per_elem": (sum(b.domain * (b.loads + sum(b.arith.values())) for b in elem_blocks)
                                 / max(1, main.domain // max(1, int(np.prod(red))) if main and red else 1)),
    })
    valid = window_valid_fraction(input_shapes, main, (int(f["kernel_h"]), int(f["kernel_w"])))
    f.update({"window_valid_frac": valid, "log_valid_macs": _log(macs * valid),
              "log_padded_macs": _log(macs * (1.0 - valid))})
    flat = _flat(func)
    f.update({f"log_exec_{k}": _log(v) for k, v in flat_counts(flat).items()})
    f.update(ratio_features(f))
    assert set(f) == set(FEATURE_NAMES), sorted(set(FEATURE_NAMES) ^ set(f))
    out = {name: float(f[name]) for name in FEATURE_NAMES}
    if integer_kernel(func):
        window = int(np.prod(red)) if red else 1
        out.update(integer_features(integer_counts(flat, window), math.expm1(f["log_main_out_elems"])))
    return out


def ratio_features(f: dict[str, float]) -> dict[str, float]:
    """Counts per unit of work (MAC, or output element where a kernel has none), per output element,
    and each executed-operation count's share of all of them.

    Two kernels of one schedule family (same loop structure, other channel counts) share these
    ratios while their absolute counts differ; trees split on a ratio where they cannot subtract
    two log counts, so the family, and what it costs per MAC, is one split away.
    """
    raw = {k: math.expm1(v) for k, v in f.items() if k.startswith("log_")}
    outs = max(raw["log_main_out_elems"], 1.0)
    unit = raw["log_macs"] if raw["log_macs"] > 0 else outs
    executed = {c: raw[f"log_exec_{c}"] for c in FLAT_COUNTS}
    total = sum(executed.values()) + 1.0
    return {
        **{f"per_unit_{c}": v / unit for c, v in executed.items()},
        **{f"per_out_{c}": v / outs for c, v in executed.items()},
        **{f"share_{c}": v / total for c, v in executed.items()},
        "units_per_out": unit / outs,
        **{f"per_unit_block_{c}": raw[f"log_{c}"] / unit for c in BLOCK_COUNTS},
    }


def _flat(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """The kernel as the C printer sees it (LowerTIRForC), or `func` itself when it is already flat."""
    from .lower_tir import LowerTIRForC

    if not _contains(func.body, ("SBlock", "SBlockRealize")):
        return func
    return LowerTIRForC()(tvm.IRModule({"kernel": func}))["kernel"]


def _contains(stmt, kinds: tuple[str, ...]) -> bool:
    """Whether a statement of one of `kinds` occurs in `stmt` (statements only, not expressions)."""
    kind = type(stmt).__name__
    if kind in kinds:
        return True
    if kind == "SeqStmt":
        return any(_contains(child, kinds) for child in stmt.seq)
    if kind == "IfThenElse":
        return _contains(stmt.then_case, kinds) or (stmt.else_case is not None and _contains(stmt.else_case, kinds))
    if kind == "SBlockRealize":
        return _contains(stmt.block, kinds)
    return hasattr(stmt, "body") and _contains(stmt.body, kinds)


def _size(node) -> int:
    """TIR nodes (statements and expressions) in `node`, a stand-in for its instruction count."""
    kind = type(node).__name__
    if kind == "SeqStmt":
        return sum(_size(c) for c in node.seq)
    if kind == "For":
        trips = _int(node.extent) if hasattr(node.extent, "value") else 1
        return 2 + trips * _size(node.body)
    if kind in ("BufferStore", "TensorStore"):
        return 1 + sum(_size(i) for i in node.indices) + _size(node.value)
    if kind == "Bind":
        return 1 + _size(node.value)
    if kind == "IfThenElse":
        return 1 + _size(node.condition) + _size(node.then_case) + (_size(node.else_case) if node.else_case else 0)
    if kind == "Evaluate":
        return _size(node.value)
    if kind in ("IntImm", "FloatImm", "Var"):
        return 0
    if hasattr(node, "body"):
        return _size(node.body)
    return 1 + sum(_size(c) for c in _expr_children(node))


def flat_counts(func: tirx.PrimFunc) -> dict[str, float]:
    """FLAT_COUNTS of the kernel as printed to C: operations executed, weighted by loop trip counts."""
    counts = dict.fromkeys(FLAT_COUNTS, 0.0)

    def expr(e, weight: float, seen: set) -> None:
        kind = type(e).__name__
        is_float = str(getattr(e, "ty", "")).startswith("float")
        if kind in ("BufferLoad", "TensorLoad"):
            if all(type(i).__name__ == "IntImm" for i in e.indices):
                counts["reg_accesses"] += weight
            else:
                key = (_load_source(e).name, str(e.indices))
                if key not in seen:
                    seen.add(key)
                    counts["mem_loads"] += weight
        elif kind == "Call":
            op = e.op.name.rsplit(".", 1)[-1] if hasattr(e.op, "name") else "call"
            if op == "if_then_else":
                counts["selects"] += weight
            elif op != "likely":
                counts["fcalls"] += weight
        elif kind == "Select":
            counts["selects"] += weight
        elif kind in ("Mul",) and is_float:
            counts["fmul"] += weight
        elif kind in ("Add", "Sub") and is_float:
            counts["fadd"] += weight
        elif kind in ("Min", "Max") and is_float:
            counts["fminmax"] += weight
        elif kind == "Div" and is_float:
            counts["fdiv"] += weight
        elif kind in ARITH:
            counts["int_ops"] += weight
        elif kind in COMPARE:
            counts["compares"] += weight
        for child in _expr_children(e):
            expr(child, weight, seen)

    def stmt(s, weight: float, seen: set) -> None:
        kind = type(s).__name__
        if kind == "SeqStmt":
            for child in s.seq:
                stmt(child, weight, seen)
        elif kind == "For":
            trips = _int(s.extent) if hasattr(s.extent, "value") else 1
            if trips <= UNROLL_MAX_TRIPS and trips * _size(s.body) <= UNROLL_MAX_NODES:
                counts["unrolled_iters"] += weight * trips  # the C compiler unrolls it completely
                stmt(s.body, weight * trips, seen)
                return
            counts["loop_entries"] += weight
            counts["loop_iters"] += weight * trips
            if not _contains(s.body, ("For",)):
                counts["inner_iters"] += weight * trips
            stmt(s.body, weight * trips, set())
        elif kind in ("BufferStore", "TensorStore"):
            if all(type(i).__name__ == "IntImm" for i in s.indices):
                counts["reg_accesses"] += weight
            else:
                counts["mem_stores"] += weight
            for index in s.indices:
                expr(index, weight, seen)
            expr(s.value, weight, seen)
        elif kind == "Bind":
            expr(s.value, weight, seen)
        elif kind == "IfThenElse":
            counts["branches"] += weight
            expr(s.condition, weight, seen)
            stmt(s.then_case, weight, set(seen))
            if s.else_case is not None:
                stmt(s.else_case, weight, set(seen))
        elif kind == "Evaluate":
            expr(s.value, weight, seen)
        elif hasattr(s, "body"):
            stmt(s.body, weight, seen)

    stmt(_flat(func).body, 1.0, set())
    return counts


def _param_buffer(func: tirx.PrimFunc, param):
    """The buffer a parameter stands for (0.27: the buffer-typed Var itself; older: buffer_map)."""
    if hasattr(param, "shape") and hasattr(param, "dtype"):
        return param
    bmap = getattr(func, "buffer_map", None)
    if bmap is not None and param in bmap:
        return bmap[param]
    return None


MACS_ATTR = "tvmnas.macs"


def _load_source(e) -> object:
    kind = type(e).__name__
    if kind == "BufferLoad":
        return e.buffer
    if kind == "TensorLoad":
        return e.source
    return None


def _store_is_mac(store) -> bool:
    """`C[i] = C[i] + a * b` (either operand order, optionally through a cast)."""
    value = store.value
    if type(value).__name__ != "Add":
        return False
    target = store.buffer if type(store).__name__ == "BufferStore" else getattr(store, "source", None)
    for acc, prod in ((value.a, value.b), (value.b, value.a)):
        while type(prod).__name__ == "Cast":
            prod = prod.value
        source = _load_source(acc)
        if source is not None and target is not None and source.same_as(target) and type(prod).__name__ == "Mul":
            return True
    return False


def _macs_in(stmt, trips: int) -> int:
    kind = type(stmt).__name__
    if kind in ("BufferStore", "TensorStore"):
        return trips if _store_is_mac(stmt) else 0
    if kind == "For":
        extent = stmt.extent
        if type(extent).__name__ != "IntImm":
            raise NotImplementedError(f"MAC count of a loop with non-constant extent {extent}")
        return _macs_in(stmt.body, trips * int(extent.value))
    if kind == "SeqStmt":
        return sum(_macs_in(s, trips) for s in stmt.seq)
    if kind == "IfThenElse":
        return _macs_in(stmt.then_case, trips)
    for attr in ("block", "body"):
        inner = getattr(stmt, attr, None)
        if isinstance(inner, tirx.Stmt):
            return _macs_in(inner, trips)
    return 0


def kernel_macs(func: tirx.PrimFunc) -> int:
    """Multiply-accumulates a kernel performs: each `acc += a * b` store times its loop trip count.

    The project's one MAC convention (search.cost.count_module counts torch modules the same way):
    conv (Cout*Hout*Wout*Cin/groups*k*k), dense/matmul (in*out per row) and any other reduction of
    products count; pooling, means, element-wise ops and data movement count zero. A kernel that
    calls a C micro-kernel (int8_simd) states its MACs as the function attribute MACS_ATTR.
    """
    if func.attrs is not None and MACS_ATTR in func.attrs:
        return int(func.attrs[MACS_ATTR])
    return _macs_in(func.body, 1)


def kernel_hash(func: tirx.PrimFunc) -> str:
    """Identity of a kernel independent of its name: structural hash of the PrimFunc (free vars mapped)."""
    import tvm_ffi

    h = tvm_ffi.structural_hash(func.with_attr("global_symbol", "k"), map_free_vars=True)
    return hashlib.sha1(str(h).encode()).hexdigest()[:16]


def feature_vector(features: dict[str, float]) -> np.ndarray:
    """The features as float32 in FEATURE_NAMES order."""
    return np.array([features[n] for n in FEATURE_NAMES], dtype=np.float32)


def extract_kernel_features(mod: tvm.IRModule) -> dict[str, dict[str, float]]:
    """Analysis: features of every PrimFunc of `mod`, keyed by its global name (sorted)."""
    out = {}
    for gv, func in sorted(mod.functions.items(), key=lambda kv: kv[0].name_hint):
        if isinstance(func, tirx.PrimFunc):
            out[gv.name_hint] = kernel_features(func)
    return out
