"""A cost model measured on the target at the search's exact shapes: every candidate layer the
search can pick (search.cost LayerSpec) compiled alone in its precision, run on the emulator, and
its estimated cycles kept in the profile database.

The chain and DARTS spaces give every candidate of a slot fixed shapes, so the search's cost
table (search.cost.CostTerm) holds exactly these measurements: no interpolation between shapes
and no gradient with respect to them is needed. A spec the table has not seen (another width or
resolution) is measured when it is first priced, a few seconds each. Rows are keyed as the
candidate profiler keys them (target, precision, kernel identity, code-generator version, flags),
so a second model on the same database measures nothing and a change in code generation
re-measures exactly the layers whose code changed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from tvmnas.cost.candidates import record_candidate
from tvmnas.errors import CostModelError
from tvmnas.measure.profiler import prepare_network
from tvmnas.measure.store import ProfileDB
from tvmnas.search.cost import LayerCost, MacCostModel
from tvmnas.search.layer_spec import LayerSpec
from tvmnas.search.ops import build_layer
from tvmnas.targets import Target

PRECISIONS = ("float32", "int8")
BYTES = {"float32": 4, "int8": 1}  # per weight and per activation element
LAYER_SEED = 0  # weights of a measured layer (cycles do not depend on them)


@dataclass(frozen=True)
class LayerCandidate:
    """A LayerSpec as the candidate profiler stores it: op, text key, parameters, module, input shape."""

    spec: LayerSpec

    @property
    def op(self) -> str:
        return self.spec.op

    @property
    def key(self) -> str:
        """Stable text key, e.g. 'layer mb_k3_e3 k3 s2 e3 d1 r32x32 c16->24'."""
        s = self.spec
        return f"layer {s.op} k{s.kernel} s{s.stride} e{s.expand} d{s.dilation} r{s.h}x{s.w} c{s.c_in}->{s.c_out}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.spec.c_in, self.spec.h, self.spec.w)

    def params_json(self) -> str:
        """The spec as sorted compact JSON (what the profile database stores)."""
        return json.dumps(asdict(self.spec), sort_keys=True, separators=(",", ":"))

    def build(self) -> nn.Module:
        """The layer as in a derived network, eval mode, weights from LAYER_SEED (global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LAYER_SEED)
            return build_layer(self.spec).eval()


def computes_nothing(spec: LayerSpec) -> bool:
    """Layers that run no kernel in a derived network (identity skips, DARTS 'none')."""
    return spec.op == "none" or isinstance(build_layer(spec), nn.Identity)


def stderr_progress(text: str) -> None:
    print(f"[measured cost] {text}", file=sys.stderr, flush=True)


class MeasuredCostModel:
    """CostModel whose cycles are the emulator's estimate for each layer at its exact shape.

    Bytes are counted (1 per weight and activation element in int8, 4 in float32), as MacCostModel
    counts them. `stats` says how many layers were measured and how many came from the database.
    """

    unit = "estimated cycles (measured per layer on the emulator)"

    def __init__(self, target: Target, db_path: Path, *, precision: str = "int8", work_dir: Path | None = None,
                 timeout_s: float = 120.0, progress: Callable[[str], None] | None = stderr_progress) -> None:
        if precision not in PRECISIONS:
            raise CostModelError(f"measured cost precision '{precision}' is not one of {', '.join(PRECISIONS)}")
        self.target = target
        self.precision = precision
        self.name = f"measured-{precision}-{target.name}"
        self.db_path = Path(db_path)
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.timeout_s = timeout_s
        self.progress = progress
        self.counter = MacCostModel()
        self.cycles: dict[LayerSpec, int] = {}
        self.stats = {"measured": 0, "cached": 0}  # the database is opened when layers are first priced

    def price(self, specs: Iterable[LayerSpec]) -> dict[LayerSpec, int]:
        """Estimated cycles of every spec, measuring those the database lacks (progress per layer)."""
        todo = [s for s in dict.fromkeys(specs) if s not in self.cycles]
        with ProfileDB(self.db_path) as db, tempfile.TemporaryDirectory(
                prefix="tvmnas-measured-", dir=self.work_dir) as tmp:
            for i, spec in enumerate(todo, 1):
                t0 = time.monotonic()
                cycles, how = self._price_one(spec, db, Path(tmp) / f"{i:04d}")
                self.cycles[spec] = cycles
                if how != "none":
                    self.stats[how] += 1
                if self.progress is not None:
                    self.progress(f"{i}/{len(todo)} {LayerCandidate(spec).key}: {cycles:,} est. cycles "
                                  f"({how}, {time.monotonic() - t0:.1f} s)")
        return {s: self.cycles[s] for s in specs}

    def _price_one(self, spec: LayerSpec, db: ProfileDB, work: Path) -> tuple[int, str]:
        if computes_nothing(spec):
            return 0, "none"
        cand = LayerCandidate(spec)
        try:
            prepared = prepare_network(cand.build(), self.target, work / "bundle", input_shape=cand.input_shape,
                                       precision=self.precision)
        except NotImplementedError as err:
            raise CostModelError(f"layer '{cand.key}' cannot be compiled for {self.target.name}: {err}") from err
        row, how = record_candidate(cand, prepared, self.target, db, timeout_s=self.timeout_s)  # type: ignore[arg-type]
        return int(row.cycles), how

    def layer_cost(self, spec: LayerSpec) -> LayerCost:
        """Measured cycles and counted bytes as 0-d tensors (a constant: the search's table)."""
        if spec not in self.cycles:
            self.price([spec])
        c = self.counter.count(spec)
        b = BYTES[self.precision]
        return LayerCost(cycles=torch.tensor(float(self.cycles[spec])), param_bytes=torch.tensor(float(c.params * b)),
                         act_bytes=torch.tensor(float(c.act_elems * b)))
