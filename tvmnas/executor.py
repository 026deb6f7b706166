"""Where fan-out work runs: the one seam every parallel job in tvmnas goes through.

A driver submits picklable module-level functions and gets `concurrent.futures.Future`s back,
so it can use `concurrent.futures.wait` / `as_completed` whatever runs the work. The driver alone
writes results (databases, files), in its own deterministic order; executors only compute.

- `InlineExecutor`: runs each task when it is submitted, in this process (one worker: today's
  sequential behaviour, and what tests use to compare against).
- `LocalExecutor`: a pool of spawned worker processes on this machine.
- `RayExecutor` (tvmnas.ray_executor, the optional `ray` extra): Ray workers on a cluster's nodes.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Protocol

EXECUTOR_KINDS = ("local", "ray")


# A folder as a task carries it to another machine: (path relative to the folder, bytes), sorted.
FolderFiles = tuple[tuple[str, bytes], ...]


def pack_folder(folder: Path) -> FolderFiles:
    """Every file under `folder` (none if it does not exist), for a task that runs elsewhere."""
    folder = Path(folder)
    return tuple((f.relative_to(folder).as_posix(), f.read_bytes()) for f in sorted(folder.rglob("*")) if f.is_file())


def unpack_folder(folder: Path, files: FolderFiles) -> None:
    """Write packed files under `folder`, replacing files of the same name and keeping the others."""
    for rel, data in files:
        path = Path(folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class Executor(Protocol):
    """What a driver needs from wherever its tasks run.

    `shares_files`: tasks see this machine's files (local workers); when False, a task that works
    in a folder carries it there and back (pack_folder / unpack_folder).
    """

    workers: int
    shares_files: bool

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future: ...

    def shutdown(self, *, cancel_pending: bool = False) -> None: ...

    def __enter__(self) -> "Executor": ...

    def __exit__(self, exc_type: object, *exc: object) -> None: ...


def _single_thread_worker() -> None:
    import torch

    torch.set_num_threads(1)


class InlineExecutor:
    """Runs every task at submit time in this process; the future it returns is already done."""

    workers = 1
    shares_files = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - handed to the driver through the future, as a pool would
            fut.set_exception(err)
        return fut

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        return None

    def __enter__(self) -> "InlineExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class LocalExecutor:
    """`workers` spawned processes on this machine, each with one torch thread."""

    shares_files = True

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_single_thread_worker)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        self._pool.shutdown(wait=not cancel_pending, cancel_futures=cancel_pending)

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # On an error or Ctrl-C the driver has saved what finished; queued tasks are dropped.
        self.shutdown(cancel_pending=exc_type is not None)


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None) -> Executor:
    """The executor for `kind` with `workers` workers (one local worker runs inline).

    "ray": tasks on the Ray cluster at `address`, or on a local Ray instance started (and stopped at
    shutdown) for this run; `workers` <= 0 means one per CPU of the cluster (of this machine).
    """
    if kind not in EXECUTOR_KINDS:
        from tvmnas.errors import TvmnasError

        raise TvmnasError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTOR_KINDS)}",
                          settings=("executor",))
    if address is not None and kind != "ray":
        from tvmnas.errors import TvmnasError

        raise TvmnasError(f"a Ray address ({address}) is only for executor 'ray', not {kind!r}",
                          settings=("executor", "ray_address"))
    if kind == "ray":
        from tvmnas.ray_executor import RayExecutor

        return RayExecutor(workers, address)
    return InlineExecutor() if workers <= 1 else LocalExecutor(workers)


def as_finished(executor: Executor, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]],
                *, in_flight: int | None = None) -> Iterator[tuple[int, Future]]:
    """Run `fn(*args)` for every args tuple, yielding (index, future) as each task finishes.

    At most `in_flight` tasks (default: twice the workers; one inline) are submitted at a time, so the driver
    saves each result while later tasks run, and a stopped driver has queued little work.
    """
    limit = in_flight or (2 * executor.workers if executor.workers > 1 else 1)
    pending = iter(enumerate(calls))
    running: dict[Future, int] = {}
    try:
        while True:
            for i, args in pending:
                running[executor.submit(fn, *args)] = i
                if len(running) >= limit:
                    break
            if not running:
                return
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=running.__getitem__):
                yield running.pop(fut), fut
    finally:
        for fut in running:
            fut.cancel()
