"""The executor seam on a Ray cluster: the same module-level tasks, run by Ray workers on any node.

A driver gets `concurrent.futures.Future`s (from `ObjectRef.future()`), exactly as from the local
executors, so no job has a second implementation for Ray. Faults are split as Ray splits them:

- a worker process or a whole node that dies mid-task is a system failure: Ray runs the task again
  elsewhere (`max_retries`), so a lost node costs a retry, not the run;
- a task that raises (a compile error, an emulator fault, any TvmnasError) is not retried
  (`retry_exceptions=False`): the driver gets that error once, unwrapped from Ray's wrapper, so it
  reads as the same one line a local run gives.

Every task first checks, once per worker process, that its node has the cross compiler and QEMU, so
a badly provisioned node fails its first task with one line naming the node and the missing tool.
With no address, the executor starts a private Ray instance on 127.0.0.1 and stops it at shutdown;
with an address it connects to that cluster and only disconnects.
"""
from __future__ import annotations

import logging
import shutil
import socket
from concurrent.futures import Future
from typing import Any, Callable

from tvmnas.errors import ToolchainMissingError, TvmnasError

INSTALL_HINT = "pip install 'tvmnas[ray]'"
# Retries of a task whose worker process or node died (Ray's own default is 3).
SYSTEM_RETRIES = 3
NODE_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")


class RayExecutorError(TvmnasError):
    """Ray is missing, the cluster cannot be reached, or a task lost its worker more often than allowed."""


def import_ray() -> Any:
    """The `ray` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayExecutorError(f"executor 'ray' needs Ray, which is not installed: {INSTALL_HINT}",
                               settings=("executor",)) from None
    return ray


# --------------------------------------------------------------------------- in the worker

_NODE_CHECKED = False


def node_name() -> str:
    """This machine as a user finds it in a cluster: host name and IP address."""
    host = socket.gethostname()
    try:
        import ray

        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside a Ray worker the host name alone names the node
        return host
    return f"{host} ({ip})"


def check_node_tools(tools: tuple[str, ...] = NODE_TOOLS) -> None:
    """Fail with one line naming this node and the first missing tool; checked once per process."""
    global _NODE_CHECKED
    if _NODE_CHECKED:
        return
    for tool in tools:
        if shutil.which(tool) is None:
            raise ToolchainMissingError(
                f"node {node_name()} has no {tool} on its PATH: install gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi qemu-system-arm on every node (see docs/ray-cluster.yaml)")
    _NODE_CHECKED = True


def _run_task(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What every Ray task runs: the node check, one torch thread, then the driver's function."""
    check_node_tools()
    import torch

    torch.set_num_threads(1)
    return fn(*args, **kwargs)


# --------------------------------------------------------------------------- on the driver


def _driver_error(err: BaseException, what: str, retries: int) -> BaseException:
    """The error a driver sees: the task's own exception, or one line for a Ray system failure."""
    ray = import_ray()
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = getattr(err, "cause", None)
        return cause if isinstance(cause, BaseException) else RayExecutorError(f"{what}: {err}".splitlines()[0])
    if isinstance(err, ray.exceptions.RayError):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
                ray.exceptions.LocalRayletDiedError)
        if isinstance(err, lost):
            return RayExecutorError(f"{what}: lost its worker more often than the {retries} retries allowed; "
                                    f"last: {type(err).__name__}: {first}")
        return RayExecutorError(f"{what} failed in Ray: {type(err).__name__}: {first}")
    return err


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """One line if nothing listens at a HOST:PORT address (Ray itself would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # 'auto' and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise RayExecutorError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}",
                               settings=("ray_address",)) from None


def _connect(ray: Any, workers: int, address: str | None) -> None:
    """Start a private Ray instance on 127.0.0.1 (address None) or connect to the cluster at `address`."""
    if address is not None:
        check_reachable(address)
    try:
        if address is None:
            ray.init(address="local", num_cpus=workers if workers > 0 else None, include_dashboard=False,
                     _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.ERROR)
        else:
            # A cluster reached over loopback has its nodes on 127.0.0.1, whatever this host's address.
            loopback = address.split(":")[0] in ("127.0.0.1", "localhost")
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                     **({"_node_ip_address": "127.0.0.1"} if loopback else {}))
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RayExecutorError(f"cannot start or reach {where}: {first}", settings=("ray_address",)) from None


class RayExecutor:
    """Tasks on a Ray cluster (an existing one at `address`, else a private local instance).

    In a process already connected to Ray (a program that called ray.init itself), that connection
    is used as it is and left open at shutdown.
    """

    def __init__(self, workers: int = 0, address: str | None = None, *, max_retries: int = SYSTEM_RETRIES) -> None:
        ray = import_ray()
        self._ray = ray
        # A private instance runs on this machine; a cluster's workers see their own disks.
        self._owns_connection = not ray.is_initialized()
        self.shares_files = address is None and self._owns_connection
        if self._owns_connection:
            _connect(ray, workers, address)
        self.workers = workers if workers > 0 else max(int(ray.cluster_resources().get("CPU", 1)), 1)
        self._retries = max_retries
        self._remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(_run_task)
        self._pending: dict[Any, Future] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run `fn(*args, **kwargs)` as a Ray task; the future holds its result or its own error."""
        ref = self._remote.remote(fn, args, kwargs)
        what = f"task {getattr(fn, '__name__', fn)!s} on Ray"
        out: Future = Future()
        self._pending[ref] = out

        def settle(ray_fut: Future) -> None:
            self._pending.pop(ref, None)
            if out.done():
                return
            try:
                out.set_result(ray_fut.result())
            except BaseException as err:  # noqa: BLE001 - handed to the driver through its future
                out.set_exception(_driver_error(err, what, self._retries))

        ref.future().add_done_callback(settle)
        return out

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        """Cancel what is still queued or running when asked; stop the instance this executor started."""
        if not self._ray.is_initialized():
            return
        if cancel_pending:
            for ref, fut in list(self._pending.items()):
                fut.cancel()
                try:
                    self._ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - a task that already finished cannot be cancelled
                    pass
        self._pending.clear()
        if self._owns_connection:
            self._ray.shutdown()  # connected to a cluster: disconnects only

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # On an error or Ctrl-C the driver has saved what finished; queued tasks are dropped.
        self.shutdown(cancel_pending=exc_type is not None)
