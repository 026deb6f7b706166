"""The external tools the runner needs (cross compiler, newlib, QEMU, host gcc) and their check."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
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


def run_tool(cmd: Sequence[str], *, timeout_s: float | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True) with the tool in a process group of its
    own that is killed whole (gcc's cc1, as and ld included) on a timeout or any exception, SIGTERM
    of tvmnas included (see tvmnas.cli.app): nothing keeps running after tvmnas stops.
    Raises subprocess.TimeoutExpired like subprocess.run."""
    with subprocess.Popen(list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except BaseException:
            kill_group(proc)
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a tool started with start_new_session=True and everything it started; reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.communicate()
