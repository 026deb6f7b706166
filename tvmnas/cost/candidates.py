"""Cost data from sampled operators (tvmnas profile-ops): each OpSpec compiled alone, measured on
the emulator through the profiler, and recorded in the profile store with its kernels' features.

Workers compile and measure on the executor seam; this process alone writes the database, one
transaction per candidate. A kernel that is already stored (same key: target, precision, identity,
codegen version, flags) is never measured again, also when another candidate is measuring it now.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from tvmnas.cost.sampler import OpSpec
from tvmnas.errors import ToolchainMissingError, TvmnasError
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


@dataclass
class RunStats:
    """What a profiling run did: candidates measured, found complete in the database, or failed."""

    measured: int = 0
    cached: int = 0
    kernels_added: int = 0
    failures: list[str] = field(default_factory=list)


ProgressHook = Callable[[OpSpec, str], None]
MEASURE, DONE, WAIT = "measure", "done", "wait"


class _Scheduler:
    """Decides per prepared candidate: already recorded, computable from stored kernels, or to measure.

    Kernels being measured for one candidate are 'in flight'; a candidate that needs one of them
    waits for that measurement instead of repeating it, so nothing is measured twice in one run.
    Only this object writes to the database (one transaction per candidate).
    """

    def __init__(self, db: ProfileDB, on_done: ProgressHook | None) -> None:
        self.db, self.on_done = db, on_done
        self.stats = RunStats()
        self.in_flight: set[KernelKey] = set()
        self.waiting: list[tuple[OpSpec, PreparedNetwork]] = []  # in the order they were decided

    def _finish(self, spec: OpSpec, status: str) -> None:
        if self.on_done is not None:
            self.on_done(spec, status)

    def _stored(self, prepared: PreparedNetwork) -> dict[KernelKey, KernelRow | None]:
        return {key: self.db.kernel(key) for key in kernel_keys(prepared)}

    def decide(self, spec: OpSpec, prepared: PreparedNetwork) -> str:
        """DONE (recorded now or before), WAIT (a kernel it needs is in flight) or MEASURE (keys claimed)."""
        if self.db.has_candidate(prepared.target, prepared.precision, spec.key, prepared.codegen_version,
                                 prepared.flags):
            self.stats.cached += 1
            self._finish(spec, "cached")
            return DONE
        stored = self._stored(prepared)
        missing = {key for key, row in stored.items() if row is None}
        if not missing:
            self.db.record(candidate_row(spec, prepared, stored), [])
            self.stats.cached += 1
            self._finish(spec, "cached")
            return DONE
        # An earlier candidate that waits will measure what it lacks first, as a sequential run does.
        wanted = {key for _, p in self.waiting for key in kernel_keys(p)}
        if missing & (self.in_flight | wanted):
            self.waiting.append((spec, prepared))
            return WAIT
        self.in_flight |= missing
        return MEASURE

    def measured(self, spec: OpSpec, prepared: PreparedNetwork, counts: list[tuple[int, int]]) -> None:
        """Write a measured candidate's new kernels and its row in one transaction."""
        stored = self._stored(prepared)
        new = {r.key: r for r in kernel_rows(spec, prepared, counts) if stored.get(r.key) is None}
        rows = {**{k: v for k, v in stored.items() if v is not None}, **new}
        self.stats.kernels_added += self.db.record(candidate_row(spec, prepared, rows), list(new.values()),
                                                   prepared.features)
        self.stats.measured += 1
        self.in_flight -= set(new)
        self._finish(spec, "measured")

    def failed(self, spec: OpSpec, prepared: PreparedNetwork | None, err: BaseException) -> None:
        self.stats.failures.append(f"{spec.key}: {err}")
        if prepared is not None:
            self.in_flight -= set(kernel_keys(prepared))
        self._finish(spec, "failed")

    def take_ready(self) -> list[tuple[OpSpec, PreparedNetwork]]:
        """Waiting candidates whose kernels are neither in flight nor wanted by an earlier waiting one
        (removed from the wait list, in the order they were decided)."""
        ready, still = [], []
        blocked = set(self.in_flight)
        for item in self.waiting:
            keys = set(kernel_keys(item[1]))
            if keys & blocked:
                still.append(item)
                blocked |= keys
            else:
                ready.append(item)
        self.waiting = still
        return ready


def _prepare_task(spec: OpSpec, target: Target, work_dir: Path) -> PreparedNetwork:
    """Compile a candidate in a folder of its own wherever the task runs; its bundle comes back as
    bytes (`files`), so the measuring task may run on another machine."""
    with tempfile.TemporaryDirectory(prefix="tvmnas-prepare-") as tmp:
        prepared = prepare_candidate(spec, target, Path(tmp) / "bundle")
        files = pack_folder(prepared.bundle_dir)
    return replace(prepared, bundle_dir=work_dir / "bundle", files=files)


def _measure_task(prepared: PreparedNetwork, target: Target, timeout_s: float) -> list[tuple[int, int]]:
    """Build and time a prepared candidate (from its `files` in a folder of its own, when it has them)."""
    with tempfile.TemporaryDirectory(prefix="tvmnas-measure-") as tmp:
        if prepared.files:
            bundle = Path(tmp) / "bundle"
            unpack_folder(bundle, prepared.files)
            prepared = replace(prepared, bundle_dir=bundle)
        profile = measure_network(prepared, target, Path(tmp) / "build", timeout_s=timeout_s)
    return [(k.instructions, k.cycles) for k in profile.kernels]


# A candidate that cannot be compiled or run is reported and skipped; anything else is a bug and propagates.
CANDIDATE_ERRORS = (TvmnasError, NotImplementedError)


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
    """Profile every candidate into `db`, skipping what it already holds.

    Work runs on `executor` (default: `jobs` local worker processes), any machine of it: tasks
    work in folders of their own and the bundle travels with the task. Workers compile and
    measure; this process alone writes the database, one transaction per candidate, so a run
    killed at any moment keeps every finished candidate and a rerun measures only the rest.
    Candidates are decided in their order in `specs` (a kernel two candidates share is measured
    for the first), so the rows are the same whatever the executor and its number of workers. A
    candidate that fails (build error, hang, fault) is listed in the stats and leaves no row, so a
    rerun retries it; a missing tool (on any node) stops the run.
    """
    work_dir = Path(work_dir)
    sched = _Scheduler(db, on_done)
    with executor if executor is not None else make_executor("local", jobs) as pool:
        todo = [(i, spec, work_dir / f"{i:05d}") for i, spec in enumerate(specs)][::-1]
        turn_of = {spec.key: i for i, spec in reversed(list(enumerate(specs)))}
        running: dict[Future, tuple[int, OpSpec, PreparedNetwork | None]] = {}
        arrived: dict[int, tuple[OpSpec, PreparedNetwork | None]] = {}  # prepared, waiting for their turn
        next_turn = 0
        while todo or running:
            while todo and sum(r[2] is None for r in running.values()) < pool.workers:
                i, spec, cand_dir = todo.pop()
                running[pool.submit(_prepare_task, spec, target, cand_dir)] = (i, spec, None)
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: running[f][0]):
                i, spec, prepared = running.pop(fut)
                err = fut.exception()
                if err is not None and (not isinstance(err, CANDIDATE_ERRORS)
                                        or isinstance(err, ToolchainMissingError)):
                    raise err
                if err is not None:
                    sched.failed(spec, prepared, err)
                    ready = sched.take_ready()
                    if prepared is None:
                        arrived[i] = (spec, None)
                elif prepared is None:
                    arrived[i] = (spec, fut.result())
                    ready = []
                else:
                    sched.measured(spec, prepared, fut.result())
                    ready = sched.take_ready()
                while next_turn in arrived:
                    r_spec, r_prep = arrived.pop(next_turn)
                    next_turn += 1
                    if r_prep is not None:
                        ready.append((r_spec, r_prep))
                for r_spec, r_prep in ready:
                    if sched.decide(r_spec, r_prep) == MEASURE:
                        running[pool.submit(_measure_task, r_prep, target, timeout_s)] = (
                            turn_of[r_spec.key], r_spec, r_prep)
    return sched.stats


def record_candidate(spec: OpSpec, prepared: PreparedNetwork, target: Target, db: ProfileDB, *,
                     timeout_s: float = 60.0) -> tuple[CandidateRow, str]:
    """Record a prepared candidate in `db`, measuring it only if a kernel is missing: its row, and
    "measured" or "cached". Raises the candidate's own error (EmulatorError naming the kernel on a
    hang or fault)."""
    sched = _Scheduler(db, None)
    how = "cached"
    if sched.decide(spec, prepared) == MEASURE:
        sched.measured(spec, prepared, _measure_task(prepared, target, timeout_s))
        how = "measured"
    return candidate_row(spec, prepared, {key: db.kernel(key) for key in kernel_keys(prepared)}), how  # type: ignore[misc]


def profile_candidate(
    spec: OpSpec, target: Target, db: ProfileDB, work_dir: Path, *, timeout_s: float = 60.0
) -> CandidateRow:
    """Compile and profile one candidate into `db` (record_candidate) and return its row."""
    return record_candidate(spec, _prepare_task(spec, target, Path(work_dir)), target, db, timeout_s=timeout_s)[0]
