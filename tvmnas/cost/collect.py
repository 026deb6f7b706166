"""Whole networks profiled for the cost models: each network compiled once, built and profiled per
target, and kept in the profile store (measure.store: a network row per target with its calls in
order, and a feature row per kernel).

Features are those of tvmnas.passes.kernel_features on the fused, legalized PrimFunc, computed here
where the TIR is at hand; cycles are the project's per-core timing-table estimate over an exact
emulated instruction trace. A network is profiled in one precision: float32 (as it is) or int8 (its
int8 build, measure.profiler.lower_network(precision="int8"); kernels of cores with the DSP extension
call the SIMD micro-kernels).
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from tvmnas.cost.collector import WorkItem, run_items
from tvmnas.cost.surrogate import PRECISIONS, check_precision
from tvmnas.errors import CostModelError
from tvmnas.executor import Executor, make_executor
from tvmnas.measure.profiler import LoweredNetwork, feature_rows, lower_network, measure_network, write_network
from tvmnas.measure.store import FeatureRow, NetworkRow, ProfileDB, canonical_json
from tvmnas.search.genotype import Genotype
from tvmnas.targets import Target, load_target


def lower_genotype(genotype: Genotype, seed: int, precision: str = "float32", simd: bool = False) -> LoweredNetwork:
    """The network of `genotype` (weights seeded) as the compiler lowers it: float32 as it is, int8 as
    its int8 build (simd: the DSP extension's micro-kernels, as compile_model builds it for such cores)."""
    from tvmnas.models import build_model

    torch.manual_seed(seed)
    return lower_network(build_model(genotype).eval(), input_shape=(1, *genotype.input_shape), simd=simd,
                         precision=precision)


def profile_network(genotype: Genotype, targets: list[Target], precision: str, *, name: str, split: str,
                    seed: int = 0, timeout_s: float = 120) -> tuple[list[NetworkRow], list[FeatureRow]]:
    """Lower `genotype` once in `precision` (int8 once per kind of core: with and without the DSP
    extension), then build and profile it for each target (input: profile_input(seed)): its network
    rows (one per target) and its kernels' feature rows."""
    check_precision(precision)
    lowerings: dict[bool, LoweredNetwork] = {}
    rows: list[NetworkRow] = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-cost-") as tmp:
        for target in targets:
            simd = precision == "int8" and target.dsp
            if simd not in lowerings:
                lowerings[simd] = lower_genotype(genotype, seed, precision, simd)
            prepared = write_network(lowerings[simd], target, Path(tmp) / f"bundle-{target.name}")
            prof = measure_network(prepared, target, Path(tmp) / f"build-{target.name}", timeout_s=timeout_s, seed=seed)
            calls = [[k.name, k.kernel_hash, m.instructions, m.cycles] for k, m in zip(prepared.kernels, prof.kernels)]
            rows.append(NetworkRow(target.name, precision, name, split, seed, canonical_json(genotype.to_dict()),
                                   prof.instructions, prof.cycles, prof.preamble_cycles, canonical_json(calls)))
    features = {f.kernel_hash: f for network in lowerings.values() for f in feature_rows(network)}
    return rows, [features[h] for h in sorted(features)]


@dataclass
class NetworkItem(WorkItem):
    """A named genotype as a collector work item: profiled whole on a worker (profile_network, on
    every target) and recorded as its network rows with its kernels' features; stored when the
    store holds it on every target."""

    key: str  # the network's name
    split: str
    genotype: Genotype
    targets: list[Target]
    precision: str
    seed: int
    rows: list[NetworkRow] = field(default_factory=list)  # once recorded (for progress lines)

    def stored(self, db: ProfileDB) -> bool:
        have = {n.target for n in db.networks(precision=self.precision, name=self.key)}
        return {t.name for t in self.targets} <= have

    def prepare(self) -> tuple[list[NetworkRow], list[FeatureRow]]:
        return profile_network(self.genotype, self.targets, self.precision, name=self.key, split=self.split,
                               seed=self.seed)

    def record(self, db: ProfileDB, prepared: tuple[list[NetworkRow], list[FeatureRow]], measured: None = None) -> str:
        db.record_network(*prepared)  # measured where it was prepared
        self.rows = prepared[0]
        return "measured"


def network_items(genotypes: list[tuple[str, str, Genotype]], targets: list[Target],
                  precision: str = "float32") -> list[NetworkItem]:
    """Work items for (name, split, genotype) on `targets`; each network gets the seed of its place
    in `genotypes`, so any number of jobs gives the same rows."""
    check_precision(precision)
    return [NetworkItem(name, split, g, list(targets), precision, i) for i, (name, split, g) in enumerate(genotypes)]


def collect(
    genotypes: list[tuple[str, str, Genotype]],
    targets: list[Target],
    db: ProfileDB,
    *,
    jobs: int = 1,
    executor: Executor | None = None,
    precision: str = "float32",
    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> int:
    """Profile every (name, split, genotype) on every target into `db`, on `executor` (default:
    `jobs` local worker processes), as `precision` builds it (float32 or int8): the collector
    (run_items) over network_items; returns the number of networks profiled.

    Each network is written with its kernels' features in one transaction, and a network the
    database holds on every target is not profiled again, so an interrupted run resumes where it
    stopped. A network that fails leaves no row and is reported (a "failed:" line); the run ends
    with a CostModelError once the others are stored.
    """
    items = network_items(genotypes, targets, precision)

    def on_done(item: NetworkItem, status: str) -> None:
        if status == "measured":
            cycles = ", ".join(f"{r.target}: {r.cycles:,}" for r in item.rows)
            progress(f"[{item.seed + 1}/{len(items)}] {item.key} ({item.split}, {item.genotype.space}): "
                     f"{cycles} cycles")

    with executor if executor is not None else make_executor("local", jobs) as pool:
        stats = run_items(items, db, pool, on_done=on_done)  # type: ignore[arg-type]
    for failure in stats.failures:
        progress(f"failed: {failure}")
    if stats.failures:  # the others are stored: a rerun profiles only the failed ones
        raise CostModelError(f"{len(stats.failures)} of {len(items)} networks failed; "
                             f"first: {stats.failures[0]}")
    return stats.measured


def refresh_features(db: ProfileDB, precision: str,
                     progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> int:
    """Recompute the features of the kernels of the stored networks of `precision` with today's
    kernel_features, keeping the measurements.

    Each network is lowered again from its genotype, with the weights of the seed it was collected
    with (float32 kernels do not depend on the weights, int8 ones do through their zero points), as
    each of its targets builds it (int8: with and without the DSP extension); a kernel is matched by
    its hash, so a kernel whose lowering changed since it was measured keeps its features (and is
    counted as stale). Returns the number of kernels whose features were recomputed.
    """
    stored = db.features(precision)
    nets: dict[str, list[NetworkRow]] = {}
    for net in db.networks(precision=precision):
        nets.setdefault(net.name, []).append(net)
    fresh: dict[str, FeatureRow] = {}
    for i, rows in enumerate(nets.values()):
        genotype = Genotype.from_json(rows[0].genotype)
        for simd in sorted({precision == "int8" and load_target(r.target).dsp for r in rows}):
            network = lower_genotype(genotype, rows[0].seed, precision, simd)
            fresh.update({f.kernel_hash: f for f in feature_rows(network)
                          if f.kernel_hash in stored and f.kernel_hash not in fresh})
        progress(f"[{i + 1}/{len(nets)}] {rows[0].name}: {len(fresh)} kernels refreshed")
    db.set_features(fresh[h] for h in sorted(fresh))
    stale = len(stored) - len(fresh)
    if stale:
        progress(f"{stale} measured kernels no longer occur in today's lowering: their features are unchanged")
    return len(fresh)


def load_kernel_rows(source: Path, target: str, precision: str = "float32") -> list[dict]:
    """Fit rows of `precision` on `target` from a profile store (a database or a dump): the kernels
    of its 'fit' networks and of its sampled candidates, with features."""
    from tvmnas.measure.store import open_profiles

    check_precision(precision)
    with open_profiles(Path(source)) as db:
        rows = db.kernel_rows(target, precision, split="fit")
        others = [p for p in PRECISIONS if p != precision and db.kernel_rows(target, p, split="fit")]
    if not rows:
        held = f" (it holds {others[0]} ones: fit them with precision {others[0]})" if others else ""
        raise CostModelError(f"profile store '{source}' has no {precision} kernels with features measured on "
                             f"{target}{held}", settings=("precision",) if others else ())
    return rows
