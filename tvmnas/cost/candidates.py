"""Cost data from sampled operators (tvmnas profile-ops): each OpSpec compiled alone, measured on
the emulator through the profiler, and recorded in the profile store with its kernels' features.

Each candidate is a CandidateItem of the one collector (cost.collector.run_items): workers compile
and measure, this process alone writes the database, and a stored kernel is never measured again.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from tvmnas.cost.collector import ProgressHook, RunStats, WorkItem, run_items
from tvmnas.cost.sampler import OpSpec
from tvmnas.executor import Executor, make_executor, pack_folder, unpack_folder
from tvmnas.measure.profiler import PreparedNetwork, kernel_keys, measure_network, prepare_network
from tvmnas.measure.store import CandidateRow, KernelKey, KernelRow, ProfileDB
from tvmnas.targets import Target


def prepare_candidate(spec: OpSpec, target: Target, bundle_dir: Path, *, seed: int = 0) -> PreparedNetwork:
    """Compile one sampled operator alone as a single-op network into `bundle_dir`, with its kernels'
    feature rows (recorded beside their measurements: fit data for the cost models)."""
    return prepare_network(spec.build(seed), target, bundle_dir, input_shape=spec.input_shape, features=True)


def kernel_rows(spec: OpSpec, prepared: PreparedNetwork, counts: list[tuple[int, int]]) -> list[KernelRow]:
    """One database row per kernel call of a measured candidate; counts are (instructions, cycles)."""
    return [
        KernelRow(
            target=prepared.target,
            precision=k.precision,
            kernel_hash=k.kernel_hash,
            codegen_version=k.codegen_version,
            flags=prepared.flags,
            kernel_name=k.name,
            op=spec.op,
            params=spec.params_json(),
            macs=k.macs,
            instructions=n,
            cycles=c,
            c_text=k.c_text,
        )
        for k, (n, c) in zip(prepared.kernels, counts, strict=True)
    ]


def candidate_row(spec: OpSpec, prepared: PreparedNetwork, rows: dict[KernelKey, KernelRow]) -> CandidateRow:
    """The candidate's row: its kernels in call order and their summed MACs, instructions and cycles.

    The block total is the sum of its kernels' rows (the window's few preamble instructions are
    left out), so it is the same whichever candidate first measured a shared kernel.
    """
    used = [rows[key] for key in kernel_keys(prepared)]
    return CandidateRow(
        target=prepared.target,
        precision=prepared.precision,
        candidate_key=spec.key,
        codegen_version=prepared.codegen_version,
        flags=prepared.flags,
        op=spec.op,
        params=spec.params_json(),
        kernels=json.dumps([[k.index, k.name, k.kernel_hash] for k in prepared.kernels]),
        macs=sum(r.macs for r in used),
        instructions=sum(r.instructions for r in used),
        cycles=sum(r.cycles for r in used),
    )


@dataclass(frozen=True)
class CandidateItem(WorkItem):
    """A sampled operator as a collector work item: compiled on a worker, its missing kernels
    measured on a worker, recorded as a candidate row with its new kernels and their features. Its
    key holds its code version, so whether it is stored is known once it is compiled (`record`)."""

    spec: OpSpec
    target: Target
    work_dir: Path
    timeout_s: float = 60.0

    @property
    def key(self) -> str:
        return self.spec.key

    def prepare(self) -> PreparedNetwork:
        """Compile in a folder of its own wherever the task runs; the bundle comes back as bytes
        (`files`), so the measuring task may run on another machine."""
        with tempfile.TemporaryDirectory(prefix="tvmnas-prepare-") as tmp:
            prepared = prepare_candidate(self.spec, self.target, Path(tmp) / "bundle")
            files = pack_folder(prepared.bundle_dir)
        return replace(prepared, bundle_dir=self.work_dir / "bundle", files=files)

    def kernels(self, prepared: PreparedNetwork) -> list[KernelKey]:
        return kernel_keys(prepared)

    def measure(self, prepared: PreparedNetwork) -> list[tuple[int, int]]:
        """Build and time a prepared candidate (from its `files` in a folder of its own, when it has them)."""
        with tempfile.TemporaryDirectory(prefix="tvmnas-measure-") as tmp:
            if prepared.files:
                unpack_folder(Path(tmp) / "bundle", prepared.files)
                prepared = replace(prepared, bundle_dir=Path(tmp) / "bundle")
            profile = measure_network(prepared, self.target, Path(tmp) / "build", timeout_s=self.timeout_s)
        return [(k.instructions, k.cycles) for k in profile.kernels]

    def record(self, db: ProfileDB, prepared: PreparedNetwork,
               counts: list[tuple[int, int]] | None = None) -> str | None:
        """Write the candidate's row with its newly measured kernels (from `counts`) in one transaction;
        without counts only when it is stored or its kernels are."""
        if counts is None and db.has_candidate(prepared.target, prepared.precision, self.spec.key,
                                               prepared.codegen_version, prepared.flags):
            return "cached"
        stored = {key: db.kernel(key) for key in kernel_keys(prepared)}
        if counts is None and None in stored.values():
            return None
        new = {} if counts is None else {r.key: r for r in kernel_rows(self.spec, prepared, counts)
                                         if stored.get(r.key) is None}
        rows = {**{k: v for k, v in stored.items() if v is not None}, **new}
        db.record(candidate_row(self.spec, prepared, rows), list(new.values()),
                  () if counts is None else prepared.features)
        return "cached" if counts is None else "measured"


def profile_candidates(
    specs: list[OpSpec],
    target: Target,
    db: ProfileDB,
    work_dir: Path,
    *,
    jobs: int = 1,
    executor: Executor | None = None,
    timeout_s: float = 60.0,
    on_done: ProgressHook | None = None,
) -> RunStats:
    """Profile every candidate into `db` on `executor` (default: `jobs` local worker processes),
    skipping what it already holds: the collector (run_items) over CandidateItems. `on_done` gets
    each item and "measured", "cached" or "failed"."""
    items = [CandidateItem(spec, target, Path(work_dir) / f"{i:05d}", timeout_s) for i, spec in enumerate(specs)]
    with executor if executor is not None else make_executor("local", jobs) as pool:
        return run_items(items, db, pool, on_done=on_done)


def record_candidate(spec: OpSpec, prepared: PreparedNetwork, target: Target, db: ProfileDB, *,
                     timeout_s: float = 60.0) -> tuple[CandidateRow, str]:
    """Record a prepared candidate in `db`, measuring it only if a kernel is missing: its row, and
    "measured" or "cached". Raises the candidate's own error (EmulatorError naming the kernel on a
    hang or fault)."""
    item = CandidateItem(spec, target, prepared.bundle_dir.parent, timeout_s)
    how = item.record(db, prepared) or item.record(db, prepared, item.measure(prepared))
    return candidate_row(spec, prepared, {key: db.kernel(key) for key in kernel_keys(prepared)}), how  # type: ignore[misc]


def profile_candidate(
    spec: OpSpec, target: Target, db: ProfileDB, work_dir: Path, *, timeout_s: float = 60.0
) -> CandidateRow:
    """Compile and profile one candidate into `db` (record_candidate) and return its row."""
    prepared = CandidateItem(spec, target, Path(work_dir)).prepare()
    return record_candidate(spec, prepared, target, db, timeout_s=timeout_s)[0]
