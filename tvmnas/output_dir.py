"""Output folders tvmnas may replace: which ones, and how, so nothing the user owns is lost.

A folder tvmnas writes carries a small marker file (`.tvmnas-output`, JSON naming its kind). A
command that replaces its --out folder (compile, dynamic compile / select / export) writes into a
staging folder beside it and swaps it in with renames only when everything is written; it replaces
only a folder with a replaceable marker, or an empty one, and refuses any other. Staging and trash
folders carry the writer's pid in their names (`.NAME.staging.PID.xxxx`, `.NAME.trash.PID.xxxx`), so
those left by a killed process are removed by the next run on the same folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tvmnas.errors import TvmnasError

MARKER_FILE = ".tvmnas-output"
STAGING, TRASH = "staging", "trash"


class OutputFolderError(TvmnasError):
    """An output folder that tvmnas must not write, replace or empty (its message calls it "output folder")."""

    def __init__(self, *args: object, settings: tuple[str, ...] = ("out_dir",)) -> None:
        super().__init__(*args, settings=settings)


def output_kind(folder: Path) -> str | None:
    """The kind recorded in `folder`'s tvmnas marker, or None when it has no readable marker."""
    try:
        data = json.loads((Path(folder) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) and data.get("written_by") == "tvmnas" else None


def write_marker(folder: Path, kind: str) -> None:
    """Mark `folder` as written by tvmnas (kind: bundle, selection, subnet, run-all)."""
    (Path(folder) / MARKER_FILE).write_text(json.dumps({"written_by": "tvmnas", "kind": kind}) + "\n")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_path(out_dir: Path, kind: str = "bundle", *, inputs: Iterable[Path] = (),
                   replaced: bool = True) -> Path:
    """Refuse an --out folder that a command could not safely write (before any work is done); return
    it resolved. Refused: an existing file; the current folder or one holding it (when the command
    replaces the folder as a whole); a folder holding an input; an existing folder that is neither
    empty nor an earlier tvmnas output of this `kind`."""
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output folder {out_dir} is an existing file, not a folder; choose a folder name")
    if replaced and _inside(Path.cwd().resolve(), out):
        raise OutputFolderError(f"output folder {out_dir} is or holds the current folder; choose a new folder for the output")
    for source in inputs:
        source = Path(source).resolve()
        if _inside(source, out):
            raise OutputFolderError(f"output folder {out_dir} holds the input {source}; choose another folder for the output")
    if out.exists():
        existing = out.parent if replaced else out  # a replaced folder is renamed within its parent
    else:
        existing = next(p for p in out.parents if p.exists())
    if not existing.is_dir():
        raise OutputFolderError(f"output folder {out_dir}: {existing} is a file, not a folder; choose another output folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputFolderError(f"output folder {out_dir}: {existing} is not writable; choose another output folder")
    if out.is_dir():
        try:
            empty = not any(out.iterdir())
        except OSError as err:
            raise OutputFolderError(f"output folder {out_dir} cannot be read: {err.strerror}") from err
        found = output_kind(out)
        if not empty and found != kind:
            if found is not None:
                raise OutputFolderError(f"output folder {out_dir} is a tvmnas {found} folder, not a tvmnas {kind}; "
                                        f"choose another folder")
            raise OutputFolderError(f"output folder {out_dir} exists and is not a tvmnas {kind}; "
                                    f"choose another folder or remove it")
    return out


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(out: Path) -> None:
    """Remove the staging and trash folders beside `out` whose writing process is gone."""
    prefix = f".{out.name}."
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        parts = entry.name[len(prefix):].split(".") if entry.name.startswith(prefix) else []
        if len(parts) == 3 and parts[0] in (STAGING, TRASH) and parts[1].isdigit() and entry.is_dir() \
                and not entry.is_symlink() and not _pid_alive(int(parts[1])):
            shutil.rmtree(entry, ignore_errors=True)


def _private_dir(out: Path, role: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{role}.{os.getpid()}.", dir=out.parent))


def _make_parents(folder: Path, created: list[Path]) -> None:
    """mkdir -p `folder`, appending each folder it creates to `created` (deepest last)."""
    missing = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        missing.append(parent)
    for parent in reversed(missing):
        parent.mkdir()
        created.append(parent)


def _swap_in(staging: Path, out: Path) -> None:
    """Put `staging` in place of `out`: old -> trash, staging -> out, then delete the trash. Only
    renames touch `out`, so it is the old folder or the new one at every moment."""
    if not out.exists():
        staging.rename(out)
        return
    trash = _private_dir(out, TRASH)
    old = trash / "old"
    try:
        out.rename(old)
    except BaseException:
        trash.rmdir()
        raise
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(trash, ignore_errors=True)  # what cannot be deleted now goes at the next run


@contextmanager
def staged_output(out_dir: Path, kind: str = "bundle", *, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """A private folder beside `out_dir` to write into; it replaces `out_dir` only if the block
    completes, and is removed on any error (SIGTERM included, see tvmnas.cli.app), so no half-written
    output is ever left behind. `out_dir` is checked first (see check_out_path) and must be absent,
    empty, or an earlier tvmnas output of the same `kind`; `inputs` are files the block reads."""
    out = check_out_path(out_dir, kind, inputs=inputs)
    created: list[Path] = []
    try:
        _make_parents(out.parent, created)
        remove_stale(out)
        staging = _private_dir(out, STAGING)
    except OSError as err:
        _remove_empty(created)
        raise OutputFolderError(f"output folder {out_dir}: cannot write in {out.parent}: {err.strerror or err}") from err
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the bundle is an ordinary output folder
        write_marker(staging, kind)
        yield staging
        check_out_path(out_dir, kind, inputs=inputs)  # still ours to replace after the (long) work
        try:
            _swap_in(staging, out)
        except OSError as err:
            raise OutputFolderError(f"output folder {out_dir}: cannot replace it: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise


def _remove_empty(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


LOCK_FILE = ".tvmnas-lock"


@contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on its .tvmnas-lock, which records the holder's pid)
    for the block; a second process refuses with one line instead of writing the same files. The
    system drops the lock when its holder dies, so a killed run never blocks the next one."""
    fd = os.open(Path(folder) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputFolderError(f"output folder {folder} is in use by another tvmnas {command} (pid {holder}); "
                                    f"wait for it to finish or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
