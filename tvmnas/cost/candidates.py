"""Cost data from sampled operators (tvmnas profile-ops): each OpSpec compiled alone, measured on
the emulator through the profiler, and recorded in the profile database.

Workers compile and measure on the executor seam; this process alone writes the database, one
transaction per candidate. A kernel that is already stored (same key: target, precision, identity,
codegen version, flags) is never measured again, also when another candidate is measuring it now.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from tvmnas.cost.sampler import OpSpec
from tvmnas.errors import TvmnasError
from tvmnas.executor import Executor, make_executor
from tvmnas.measure.profiler import PreparedNetwork, kernel_keys, measure_network, prepare_network
from tvmnas.measure.store import CandidateRow, KernelKey, KernelRow, ProfileDB
from tvmnas.targets import Target


def prepare_candidate(spec: OpSpec, target: Target, bundle_dir: Path, *, seed: int = 0) -> PreparedNetwork:
    """Compile one sampled operator alone as a single-op network into `bundle_dir`."""
    return prepare_network(spec.build(seed), target, bundle_dir, input_shape=spec.input_shape)


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
        self.waiting: list[tuple[OpSpec, PreparedNetwork]] = []

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
        if missing & self.in_flight:
            self.waiting.append((spec, prepared))
            return WAIT
        self.in_flight |= missing
        return MEASURE

    def measured(self, spec: OpSpec, prepared: PreparedNetwork, counts: list[tuple[int, int]]) -> None:
        """Write a measured candidate's new kernels and its row in one transaction."""
        stored = self._stored(prepared)
        new = {r.key: r for r in kernel_rows(spec, prepared, counts) if stored.get(r.key) is None}
        rows = {**{k: v for k, v in stored.items() if v is not None}, **new}
        self.stats.kernels_added += self.db.record(candidate_row(spec, prepared, rows), list(new.values()))
        self.stats.measured += 1
        self.in_flight -= set(new)
        self._finish(spec, "measured")

    def failed(self, spec: OpSpec, prepared: PreparedNetwork | None, err: BaseException) -> None:
        self.stats.failures.append(f"{spec.key}: {err}")
        if prepared is not None:
            self.in_flight -= set(kernel_keys(prepared))
        self._finish(spec, "failed")

    def take_ready(self) -> list[tuple[OpSpec, PreparedNetwork]]:
        """Waiting candidates whose kernels are no longer in flight (removed from the wait list)."""
        ready, still = [], []
        for item in self.waiting:
            (still if set(kernel_keys(item[1])) & self.in_flight else ready).append(item)
        self.waiting = still
        return ready


def _prepare_task(spec: OpSpec, target: Target, work_dir: Path) -> PreparedNetwork:
    return prepare_candidate(spec, target, work_dir / "bundle")


def _measure_task(prepared: PreparedNetwork, target: Target, timeout_s: float) -> list[tuple[int, int]]:
    profile = measure_network(prepared, target, prepared.bundle_dir.parent / "build", timeout_s=timeout_s)
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

    Work runs on `executor` (default: `jobs` local worker processes). Workers compile and
    measure; this process alone writes the database, one transaction per candidate, so a run
    killed at any moment keeps every finished candidate and a rerun measures only the rest. A
    candidate that fails (build error, hang, fault) is listed in the stats and leaves no row, so a
    rerun retries it.
    """
    work_dir = Path(work_dir)
    sched = _Scheduler(db, on_done)
    with executor if executor is not None else make_executor("local", jobs) as pool:
        todo = [(spec, work_dir / f"{i:05d}") for i, spec in enumerate(specs)][::-1]
        running: dict[Future, tuple[OpSpec, PreparedNetwork | None, Path]] = {}
        while todo or running:
            while todo and sum(p is None for _, p, _ in running.values()) < pool.workers:
                spec, cand_dir = todo.pop()
                running[pool.submit(_prepare_task, spec, target, cand_dir)] = (spec, None, cand_dir)
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                spec, prepared, cand_dir = running.pop(fut)
                err = fut.exception()
                if err is not None and not isinstance(err, CANDIDATE_ERRORS):
                    raise err
                if err is not None:
                    sched.failed(spec, prepared, err)
                    shutil.rmtree(cand_dir, ignore_errors=True)
                    ready = sched.take_ready()
                elif prepared is None:
                    ready = [(spec, fut.result())]
                else:
                    sched.measured(spec, prepared, fut.result())
                    shutil.rmtree(cand_dir, ignore_errors=True)
                    ready = sched.take_ready()
                for r_spec, r_prep in ready:
                    verdict = sched.decide(r_spec, r_prep)
                    if verdict == MEASURE:
                        running[pool.submit(_measure_task, r_prep, target, timeout_s)] = (
                            r_spec, r_prep, r_prep.bundle_dir.parent)
                    elif verdict == DONE:
                        shutil.rmtree(r_prep.bundle_dir.parent, ignore_errors=True)
    return sched.stats


def profile_candidate(
    spec: OpSpec, target: Target, db: ProfileDB, work_dir: Path, *, timeout_s: float = 60.0
) -> CandidateRow:
    """Profile one candidate into `db` (measuring only if a kernel is missing) and return its row.

    Raises the candidate's own error (EmulatorError naming the kernel on a hang or fault).
    """
    sched = _Scheduler(db, None)
    prepared = _prepare_task(spec, target, Path(work_dir))
    if sched.decide(spec, prepared) == MEASURE:
        sched.measured(spec, prepared, _measure_task(prepared, target, timeout_s))
    rows = {key: db.kernel(key) for key in kernel_keys(prepared)}
    return candidate_row(spec, prepared, rows)  # type: ignore[arg-type]
