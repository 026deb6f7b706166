"""The external tools the runner needs (cross compiler, newlib, QEMU, host gcc) and their check."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from tvmnas.errors import ToolchainMissingError

ARM_GCC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
ARM_NM = "arm-none-eabi-nm"
QEMU = "qemu-system-arm"
HOST_GCC = "gcc"

_APT_HINT = (
    "install with `apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm` "
    "(or run `make setup`)"
)
_HINTS = {
    ARM_GCC: _APT_HINT,
    ARM_SIZE: _APT_HINT,
    ARM_NM: _APT_HINT,
    QEMU: _APT_HINT,
    HOST_GCC: "install with `apt-get install gcc`",
}


def tool_path(name: str) -> Path:
    """Absolute path of an external tool, or ToolchainMissingError saying how to install it."""
    found = shutil.which(name)
    if found is None:
        hint = _HINTS.get(name, _APT_HINT)
        raise ToolchainMissingError(f"{name} not found: {hint}")
    return Path(found)


def require_tools(*, emulator: bool = True) -> None:
    """Check the cross toolchain, newlib and (with emulator=True) QEMU are installed."""
    for name in (ARM_GCC, ARM_SIZE, ARM_NM):
        tool_path(name)
    libc = subprocess.run(
        [str(tool_path(ARM_GCC)), "-print-file-name=libc.a"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not Path(libc).is_absolute():
        raise ToolchainMissingError(f"newlib for {ARM_GCC} not found: {_APT_HINT}")
    if emulator:
        tool_path(QEMU)


def require_host_compiler() -> None:
    """Check the host C compiler used for host builds of a bundle is installed."""
    tool_path(HOST_GCC)


@lru_cache(maxsize=1)
def _die_with_parent() -> tuple[str, ...]:
    """The prefix that makes a tool receive SIGKILL when the thread that started it dies (util-linux
    setpriv: PR_SET_PDEATHSIG, kept across exec), so that `kill -9` of tvmnas leaves no emulator
    running; empty where setpriv is missing."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()


@contextmanager
def tool_process(cmd: Sequence[str], *, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start `cmd` (stdout and stderr piped, text) in a process group of its own, killed whole (gcc's
    cc1, as and ld included) if the block raises: a timeout, an error, or SIGTERM of tvmnas (see
    tvmnas.cli.app), which is held back while the tool starts so that no started tool escapes. The
    tool itself also dies with tvmnas on SIGKILL (see _die_with_parent)."""
    pending: list[int] = []
    previous = _hold_sigterm(pending)
    try:
        proc = subprocess.Popen([*_die_with_parent(), *cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    except BaseException:
        _release_sigterm(previous, pending)
        raise
    try:
        _release_sigterm(previous, pending)
        yield proc
    except BaseException:
        kill_group(proc)
        raise


def run_tool(cmd: Sequence[str], *, timeout_s: float | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True) through tool_process: nothing it starts
    keeps running after tvmnas stops. Raises subprocess.TimeoutExpired like subprocess.run."""
    with tool_process(cmd, cwd=cwd) as proc:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, stdout, stderr)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a tool started by tool_process and everything it started, and reap it."""
    if proc.returncode is not None:  # reaped: its group id may belong to someone else by now
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.communicate()


def _hold_sigterm(pending: list[int]) -> Callable | None:
    """Queue SIGTERM instead of handling it (main thread, Python handler installed only); returns the
    handler to restore, or None when nothing was changed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return None
    signal.signal(signal.SIGTERM, lambda signum, frame: pending.append(signum))
    return previous


def _release_sigterm(previous: Callable | None, pending: list[int]) -> None:
    """Restore the SIGTERM handler and run it for a SIGTERM that came while it was held."""
    if previous is None:
        return
    signal.signal(signal.SIGTERM, previous)
    if pending:
        previous(pending[0], None)
