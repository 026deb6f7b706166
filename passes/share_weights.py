"""Weight sharing between sub-networks compiled from one super-network.

Two parts:
- `share_weights` (analysis): given the constants of several compiled sub-networks and the
  super-network's tensors, find for every constant the nested slice of a super-network tensor
  it equals exactly (first channels, centred kernel window; a 2-D tensor may match transposed),
  and lay each shared tensor out once, cropped to the union of the slices the sub-networks read.
- `StridedWeightView` (PrimFunc rewrite) / `ReadSharedWeights` (module pass): make a kernel read
  a weight parameter as a strided view into that shared array, so no sub-network needs its own
  copy. The C emitter then passes the shared array's address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product
from typing import Mapping, Sequence

import numpy as np
import tvm
from tvm import tirx

from .module_update import replace_functions

TRANSPOSED = ".T"


@dataclass(frozen=True)
class WeightView:
    """A constant read as `shared[offsets[d] : offsets[d] + shape[d], ...]` of the stored array."""

    shared: str
    shape: tuple[int, ...]
    offsets: tuple[int, ...]
    full_shape: tuple[int, ...]

    @property
    def strides(self) -> tuple[int, ...]:
        """Row-major element strides of the stored shared array."""
        out, step = [], 1
        for dim in reversed(self.full_shape):
            out.append(step)
            step *= dim
        return tuple(reversed(out))

    @property
    def contiguous(self) -> bool:
        """Whether the view is one contiguous block of the stored array (readable through a plain
        pointer at elem_offset): the dimensions after the first partial one are whole, those before
        it have extent 1."""
        d = len(self.shape) - 1
        while d > 0 and self.shape[d] == self.full_shape[d]:
            d -= 1
        return all(s == 1 for s in self.shape[:d])

    @property
    def elem_offset(self) -> int:
        """Element offset of the view's first element in the stored array."""
        return int(sum(o * s for o, s in zip(self.offsets, self.strides)))


@dataclass(frozen=True)
class SharedWeightLayout:
    """What `share_weights` decided.

    arrays: the shared arrays to store once (name -> array, cropped to what some config reads).
    views: (config, constant name) -> WeightView into one of `arrays`.
    private: (config, constant name) -> array that matched no shared tensor (stored per config,
    e.g. per-sub-network BatchNorm scale and shift).
    """

    arrays: dict[str, np.ndarray]
    views: dict[tuple[int, str], WeightView]
    private: dict[tuple[int, str], np.ndarray]

    @property
    def shared_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    @property
    def private_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.private.values()))


def _candidate_offsets(small: tuple[int, ...], big: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Per-dimension offsets a nested slice can have: at the start, or centred."""
    per_dim = [sorted({0, (b - s) // 2}) for s, b in zip(small, big)]
    return [tuple(o) for o in product(*per_dim)]


def find_slice(const: np.ndarray, tensors: Mapping[str, np.ndarray]) -> tuple[str, tuple[int, ...]] | None:
    """(name, offsets) of the first tensor (by name) of which `const` is a nested slice (each dimension at
    the start or centred), bit for bit; None if there is none."""
    for name in sorted(tensors):
        full = tensors[name]
        if full.ndim != const.ndim or full.dtype != const.dtype:
            continue
        if any(s > b for s, b in zip(const.shape, full.shape)):
            continue
        for offsets in _candidate_offsets(const.shape, full.shape):
            window = tuple(slice(o, o + s) for o, s in zip(offsets, const.shape))
            if np.array_equal(full[window], const):
                return name, offsets
    return None


def share_weights(
    constants: Sequence[Mapping[str, np.ndarray]],
    shared: Mapping[str, np.ndarray],
    *,
    min_elems: int = 1,
) -> SharedWeightLayout:
    """Analysis: map each config's constants onto nested slices of the `shared` tensors.

    constants: one mapping per configuration (e.g. CallGraph.constants), name -> array.
    shared: the super-network's tensors by name; a 2-D tensor is also tried transposed (its
    stored name then ends in '.T'), as importers turn Linear weights into a transposed matmul.
    min_elems: constants smaller than this stay private (not worth a view).
    Guarantees: for every view, `arrays[v.shared][offsets:offsets+shape]` equals the constant
    bit for bit; each stored array is the bounding box of the slices that some config reads.
    """
    candidates: dict[str, np.ndarray] = {}
    for name, array in shared.items():
        candidates[name] = np.asarray(array)
        if np.ndim(array) == 2:
            candidates[name + TRANSPOSED] = np.ascontiguousarray(np.asarray(array).T)
    found: dict[tuple[int, str], tuple[str, tuple[int, ...], tuple[int, ...]]] = {}
    private: dict[tuple[int, str], np.ndarray] = {}
    for k, consts in enumerate(constants):
        for cname in sorted(consts):
            const = np.asarray(consts[cname])
            match = find_slice(const, candidates) if const.size >= min_elems else None
            if match is None:
                private[(k, cname)] = const
            else:
                found[(k, cname)] = (match[0], match[1], tuple(const.shape))
    lows: dict[str, list[int]] = {}
    highs: dict[str, list[int]] = {}
    for name, offsets, shape in found.values():
        lo = lows.setdefault(name, list(offsets))
        hi = highs.setdefault(name, [o + s for o, s in zip(offsets, shape)])
        for d, (o, s) in enumerate(zip(offsets, shape)):
            lo[d], hi[d] = min(lo[d], o), max(hi[d], o + s)
    arrays = {
        name: np.ascontiguousarray(candidates[name][tuple(slice(a, b) for a, b in zip(lows[name], highs[name]))])
        for name in sorted(lows)
    }
    views = {
        key: WeightView(name, shape, tuple(o - a for o, a in zip(offsets, lows[name])), tuple(arrays[name].shape))
        for key, (name, offsets, shape) in found.items()
    }
    return SharedWeightLayout(arrays, dict(sorted(views.items())), dict(sorted(private.items())))


def _param_decl_span(text: str, param: str) -> tuple[int, int]:
    """Start and end (after the closing parenthesis) of `param: T.Buffer(...)` in TVMScript."""
    found = re.search(rf"\b{re.escape(param)}: T\.Buffer\(", text)
    if found is None:
        raise ValueError(f"parameter {param} is not declared as a T.Buffer")
    depth, i = 0, found.end() - 1
    while i < len(text):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return found.start(), i + 1
        i += 1
    raise ValueError(f"unbalanced declaration of parameter {param}")


def StridedWeightView(func: tirx.PrimFunc, views: Mapping[int, WeightView]) -> tirx.PrimFunc:  # noqa: N802
    """Rewrite `func` so that parameter i (for each i in `views`) is a strided view.

    Expects: a PrimFunc as LegalizeOps / FuseTIR / ScheduleForMCU leave it, whose parameter i
    is a compact buffer of shape views[i].shape.
    Guarantees: the parameter keeps its shape and every access to it is unchanged, but it now
    has the strides of views[i].full_shape and elem_offset views[i].elem_offset, so after
    FlattenBuffer the kernel reads the shared array directly. Other parameters are untouched.
    Raises ValueError (naming the parameter) when a parameter's shape does not match its view.
    """
    if not views:
        return func
    text = func.script()
    for index in sorted(views, reverse=True):
        view = views[index]
        param = func.params[index]
        shape = tuple(int(d) for d in param.ty.shape)
        if shape != tuple(view.shape):
            raise ValueError(f"parameter {param.name} has shape {shape}, its view expects {view.shape}")
        start, end = _param_decl_span(text, param.name)
        index_type = str(param.ty.shape[0].ty) if shape else "int64"   # strides use the shape's index type
        strides = ", ".join(f"T.{index_type}({s})" for s in view.strides)
        extra = (f", strides=({strides}{',' if len(view.strides) == 1 else ''}), "
                 f"elem_offset=T.{index_type}({view.elem_offset})")
        text = text[: end - 1] + extra + text[end - 1:]
    rewritten = tvm.script.from_source(text)
    for index, view in views.items():
        ty = rewritten.params[index].ty
        got = tuple(int(s) for s in ty.strides)
        if got != view.strides or int(ty.elem_offset) != view.elem_offset:
            raise ValueError(f"parameter {func.params[index].name}: strided view was not applied")
    return rewritten


@tvm.transform.module_pass(opt_level=0, name="ReadSharedWeights")
class ReadSharedWeights:
    """Module pass: apply StridedWeightView to named PrimFuncs.

    views: PrimFunc name -> {parameter index -> WeightView}. PrimFuncs not named are untouched.
    """

    def __init__(self, views: Mapping[str, Mapping[int, WeightView]]):
        self.views = {name: dict(v) for name, v in views.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions.items():
            if gv.name_hint in self.views and isinstance(func, tirx.PrimFunc):
                updates[gv] = StridedWeightView(func, self.views[gv.name_hint])
        return replace_functions(mod, updates)
