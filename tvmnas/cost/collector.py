"""The one collector of cost data: work items (sampled operators, whole networks) prepared and
measured on one executor, recorded by this process alone, one transaction per item, in the items'
order (a kernel two items share is measured once, for the first), so the store is the same for any
executor and number of workers, and a rerun does only what the store lacks."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from tvmnas.errors import ToolchainMissingError, TvmnasError
from tvmnas.executor import Executor
from tvmnas.measure.store import KernelKey, ProfileDB


class WorkItem(Protocol):
    """One unit of cost data. `prepare` and `measure` are worker tasks (the item and their results
    travel as pickles); the rest runs in the driver, which alone writes the store: `stored` (held
    before any work: the resume), `kernels` (those its row needs stored), `record` (write it in one
    transaction: "measured" or "cached"; without measurements, None when it needs kernels measured)."""

    key: str

    def stored(self, db: ProfileDB) -> bool:
        return False

    def kernels(self, prepared: Any) -> list[KernelKey]:
        return []

    def prepare(self) -> Any: ...
    def measure(self, prepared: Any) -> Any: ...
    def record(self, db: ProfileDB, prepared: Any, measured: Any = None) -> str | None: ...


@dataclass
class RunStats:
    """What a collection did: items measured, found complete in the store, or failed."""

    measured: int = 0
    cached: int = 0
    kernels_added: int = 0
    failures: list[str] = field(default_factory=list)


ProgressHook = Callable[[Any, str], None]
MEASURE, DONE, WAIT = "measure", "done", "wait"

# An item that cannot be compiled or run is reported and skipped; anything else is a bug and propagates.
ITEM_ERRORS = (TvmnasError, NotImplementedError)


class Scheduler:
    """Decides per prepared item: recorded now, waiting for a kernel in flight (measured for
    another item now: not measured twice), or to measure. Only this object writes to the store."""

    def __init__(self, db: ProfileDB, on_done: ProgressHook | None) -> None:
        self.db, self.on_done = db, on_done
        self.stats = RunStats()
        self.in_flight: set[KernelKey] = set()
        self.waiting: list[tuple[WorkItem, Any]] = []  # in the order they were decided

    def finish(self, item: WorkItem, status: str) -> None:
        self.stats.cached += status == "cached"
        self.stats.measured += status == "measured"
        if self.on_done is not None:
            self.on_done(item, status)

    def decide(self, item: WorkItem, prepared: Any) -> str:
        """DONE (recorded now or before), WAIT (a kernel it needs is in flight) or MEASURE (keys claimed)."""
        status = item.record(self.db, prepared)
        if status is not None:
            self.finish(item, status)
            return DONE
        missing = {key for key in item.kernels(prepared) if self.db.kernel(key) is None}
        # An earlier item that waits will measure what it lacks first, as a sequential run does.
        wanted = {key for it, p in self.waiting for key in it.kernels(p)}
        if missing & (self.in_flight | wanted):
            self.waiting.append((item, prepared))
            return WAIT
        self.in_flight |= missing
        return MEASURE

    def measured(self, item: WorkItem, prepared: Any, measured: Any) -> None:
        status = item.record(self.db, prepared, measured) or "measured"
        self.in_flight -= set(item.kernels(prepared))
        self.finish(item, status)

    def failed(self, item: WorkItem, prepared: Any, err: BaseException) -> None:
        self.stats.failures.append(f"{item.key}: {err}")
        if prepared is not None:
            self.in_flight -= set(item.kernels(prepared))
        self.finish(item, "failed")

    def take_ready(self) -> list[tuple[WorkItem, Any]]:
        """Waiting items whose kernels are neither in flight nor wanted by an earlier waiting one
        (removed from the wait list, in the order they were decided)."""
        ready, still = [], []
        blocked = set(self.in_flight)
        for item, prepared in self.waiting:
            keys = set(item.kernels(prepared))
            if keys & blocked:
                still.append((item, prepared))
                blocked |= keys
            else:
                ready.append((item, prepared))
        self.waiting = still
        return ready


def run_items(items: list[WorkItem], db: ProfileDB, pool: Executor, *,
              on_done: ProgressHook | None = None) -> RunStats:
    """Collect every item into `db` on `pool`, skipping what it holds; a run killed at any moment
    keeps every finished item. An item that fails (build error, hang, fault) is listed in the stats
    and leaves no row, so a rerun retries it; a missing tool (on any node) stops the run."""
    sched, kernels_before = Scheduler(db, on_done), db.counts()[0]
    todo = [item for item in items if not item.stored(db) or sched.finish(item, "cached")]  # finish: None
    turn_of = {item.key: t for t, item in reversed(list(enumerate(todo)))}
    queue = list(enumerate(todo))[::-1]
    running: dict[Future, tuple[int, WorkItem, Any]] = {}
    arrived: dict[int, tuple[WorkItem, Any]] = {}  # prepared, waiting for their turn
    next_turn = 0
    while queue or running:
        while queue and sum(r[2] is None for r in running.values()) < pool.workers:
            turn, item = queue.pop()
            running[pool.submit(item.prepare)] = (turn, item, None)
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in sorted(finished, key=lambda f: running[f][0]):
            turn, item, prepared = running.pop(fut)
            err = fut.exception()
            if err is not None and (not isinstance(err, ITEM_ERRORS) or isinstance(err, ToolchainMissingError)):
                raise err
            ready: list[tuple[WorkItem, Any]] = []
            if err is not None:
                sched.failed(item, prepared, err)
                ready = sched.take_ready()
                if prepared is None:
                    arrived[turn] = (item, None)
            elif prepared is None:
                arrived[turn] = (item, fut.result())
            else:
                sched.measured(item, prepared, fut.result())
                ready = sched.take_ready()
            while next_turn in arrived:
                r_item, r_prep = arrived.pop(next_turn)
                next_turn += 1
                if r_prep is not None:
                    ready.append((r_item, r_prep))
            for r_item, r_prep in ready:
                if sched.decide(r_item, r_prep) == MEASURE:
                    running[pool.submit(r_item.measure, r_prep)] = (turn_of[r_item.key], r_item, r_prep)
    sched.stats.kernels_added = db.counts()[0] - kernels_before
    return sched.stats
