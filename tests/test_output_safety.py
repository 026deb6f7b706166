"""Nothing the user owns is lost: --out folders tvmnas did not write are refused, bundles are replaced
by renames only, killed runs leave nothing that lasts, run-all trusts files (digests) rather than
records and holds its folder, and a database that is not ours is never written to."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tvmnas.cli.options import error_line
from tvmnas.errors import ProfileDatabaseError, TvmnasError
from tvmnas.output_dir import MARKER_FILE, OutputFolderError, folder_lock, output_kind, staged_output, write_marker
from tvmnas.pipeline import STAGES, PipelineSettings, StageLog, Stages, _check_settings, run_pipeline
from tvmnas.measure.store import ProfileDB
from tvmnas.model_file import export_onnx
from zoo import ZOO

NOT_OURS = "exists and is not a tvmnas bundle; choose another folder or remove it"


def tvmnas(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvmnas", *args], capture_output=True, text=True, cwd=cwd, env=env)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` (hidden ones included) with its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    entry = ZOO["m0_cnn"]
    path = tmp_path_factory.mktemp("model") / "m0_cnn.onnx"
    export_onnx(entry.build(), entry.input_shape, path)
    return path


@pytest.fixture(scope="module")
def bundle(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    proc = tvmnas("compile", str(onnx_model), "--target", "cortex-m0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


# ---------------------------------------------------------------------------------------------- --out refusals


def test_a_folder_tvmnas_did_not_write_is_refused_and_kept(onnx_model: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    (mine / "sub" / "manifest.json").write_text("{}")
    before = snapshot(mine)
    proc = tvmnas("compile", str(onnx_model), "--target", "cortex-m0", "--out", str(mine))
    assert proc.returncode == 1
    assert one_error_line(proc) == f"error: --out {mine} {NOT_OURS}"
    assert snapshot(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder beside it


@pytest.mark.parametrize("case", ["dot", "model_inside", "cwd_inside"])
def test_out_holding_the_model_or_the_current_folder_is_refused(case: str, onnx_model: Path, tmp_path: Path) -> None:
    work = tmp_path / "d"
    (work / "inner").mkdir(parents=True)
    model = work / "good.onnx"
    model.write_bytes(onnx_model.read_bytes())
    cwd, out, expected = {
        "dot": (work, ".", "is or holds the current folder"),
        "model_inside": (tmp_path, "d", "holds the input"),
        "cwd_inside": (work / "inner", str(tmp_path), "is or holds the current folder"),
    }[case]
    if case == "model_inside":  # the folder is empty but for the model: still refused
        (work / "inner").rmdir()
    before = snapshot(tmp_path)
    proc = tvmnas("compile", str(model), "--target", "cortex-m0", "--out", out, cwd=cwd)
    assert proc.returncode == 1
    assert expected in one_error_line(proc)
    assert snapshot(tmp_path) == before and (work / "good.onnx").is_file()


def test_out_that_is_a_file_is_refused_before_compiling(onnx_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("keep")
    proc = tvmnas("compile", str(onnx_model), "--target", "cortex-m0", "--out", str(target))
    assert proc.returncode == 1
    assert one_error_line(proc) == f"error: --out {target} is an existing file, not a folder; choose a folder name"
    assert "compiling" not in proc.stderr  # refused before any work
    assert target.read_text() == "keep"


def test_out_on_a_location_that_cannot_be_written_is_one_line(onnx_model: Path) -> None:
    # /sys refuses new folders to every user, root included (a chmod'ed folder does not stop root)
    out = Path("/sys/tvmnas-output-test/b")
    proc = tvmnas("compile", str(onnx_model), "--target", "cortex-m0", "--out", str(out))
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith(f"error: --out {out}") and ("not writable" in line or "cannot write in /sys" in line)
    assert not out.parent.exists()


@pytest.mark.parametrize("command", [
    ["dynamic", "compile", "SEL", "--out", "OUT"],
    ["dynamic", "select", "SEL", "--out", "OUT"],
    ["dynamic", "export", "SEL", "--config", "0", "--out", "OUT"],
])
def test_dynamic_commands_refuse_a_folder_they_did_not_write(command: list[str], tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    proc = tvmnas(*[str(mine) if a == "OUT" else str(tmp_path / "sel") if a == "SEL" else a for a in command])
    assert proc.returncode == 1
    assert "exists and is not a tvmnas" in one_error_line(proc)
    assert snapshot(mine) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}


def test_a_run_all_folder_is_not_replaced_by_a_bundle(onnx_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_marker(run_dir, "run-all")
    (run_dir / "model.pt2").write_text("trained")
    proc = tvmnas("compile", str(onnx_model), "--target", "cortex-m0", "--out", str(run_dir))
    assert proc.returncode == 1
    assert "is a tvmnas run-all folder, not a tvmnas bundle" in one_error_line(proc)
    assert (run_dir / "model.pt2").read_text() == "trained"


# ---------------------------------------------------------------------------------------------- replacing by renames


def _bundle_like(folder: Path, text: str) -> None:
    folder.mkdir(parents=True)
    write_marker(folder, "bundle")
    (folder / "model.c").write_text(text)
    (folder / "model.h").write_text(text)


def test_an_earlier_bundle_or_an_empty_folder_is_replaced_and_nothing_is_left_beside(tmp_path: Path) -> None:
    out = tmp_path / "b"
    _bundle_like(out, "old")
    with staged_output(out) as staging:
        (staging / "model.c").write_text("new")
    assert (out / "model.c").read_text() == "new" and not (out / "model.h").exists()
    assert output_kind(out) == "bundle"
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_output(empty) as staging:
        (staging / "model.c").write_text("new")
    assert (empty / "model.c").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "empty"]


def test_an_error_keeps_the_earlier_bundle_and_removes_the_folders_it_made(tmp_path: Path) -> None:
    out = tmp_path / "b"
    _bundle_like(out, "old")
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with staged_output(out) as staging:
            (staging / "model.c").write_text("half")
            raise RuntimeError("compile failed")
    assert snapshot(out) == before
    deep = tmp_path / "x" / "y" / "b"
    with pytest.raises(RuntimeError):
        with staged_output(deep):
            raise RuntimeError("compile failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_an_undeletable_old_file_never_leaves_a_half_deleted_bundle(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "b"
    _bundle_like(out, "old")
    (out / "locked.bin").write_text("cannot go")
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):  # root ignores permissions, so the file system refusal is simulated
        if Path(path).name == "locked.bin":
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with staged_output(out) as staging:
        (staging / "model.c").write_text("new")
        (staging / "model.h").write_text("new")
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert sorted(snapshot(out)) == [MARKER_FILE, "model.c", "model.h"]
    assert (out / "model.c").read_text() == (out / "model.h").read_text() == "new"
    left = [p.name for p in tmp_path.iterdir() if p.name != "b"]
    assert len(left) == 1 and left[0].startswith(f".b.trash.{os.getpid()}.")  # only the old file's trash


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_and_trash_of_a_dead_process_are_removed_at_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "b"
    _bundle_like(out, "old")
    dead = _dead_pid()
    for name in (f".b.staging.{dead}.abc", f".b.trash.{dead}.def", ".b.staging.1.live", f".c.staging.{dead}.other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.c").write_text("x" * 1000)
    (tmp_path / ".b.notes").mkdir()  # not a name tvmnas makes: kept
    with staged_output(out) as staging:
        (staging / "model.c").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.notes", ".b.staging.1.live", f".c.staging.{dead}.other", "b"]


# ---------------------------------------------------------------------------------------------- killed runs

FAKE_GCC = """#!/bin/sh
# stands in for arm-none-eabi-gcc: answers the toolchain check, otherwise starts a long child and waits
case "$*" in *-print-file-name*) exec {real} "$@";; esac
sleep 300 &
echo "$$ $!" > {pids}
wait
"""


def _fake_gcc(tmp_path: Path) -> tuple[dict, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pids = tmp_path / "gcc.pids"
    gcc = bin_dir / "arm-none-eabi-gcc"
    gcc.write_text(FAKE_GCC.format(real=shutil.which("arm-none-eabi-gcc"), pids=pids))
    gcc.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, pids


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _still_running(pids: list[int]) -> list[int]:
    """The pids still running once SIGKILL has had time to land (a loaded machine may take a moment)."""
    for _ in range(300):
        running = [pid for pid in pids if _running(pid)]
        if not running:
            break
        time.sleep(0.1)
    return running


def _start_and_wait_for_gcc(args: list[str], env: dict, pids: Path, cwd: Path) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-m", "tvmnas", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (pids.is_file() and len(pids.read_text().split()) == 2):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    return proc, [int(p) for p in pids.read_text().split()]


def _cleanup(pids: list[int]) -> None:
    for pid in pids:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_during_compile_cleans_up_like_an_error(onnx_model: Path, tmp_path: Path) -> None:
    env, pid_file = _fake_gcc(tmp_path)
    out = tmp_path / "out" / "b"
    proc, pids = _start_and_wait_for_gcc(["compile", str(onnx_model), "-t", "cortex-m0", "--out", str(out)],
                                         env, pid_file, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate()
        assert proc.returncode == 128 + signal.SIGTERM
        assert "Traceback" not in stderr and "error: stopped by SIGTERM" in stderr
        assert not (tmp_path / "out").exists()  # staging removed, and the parent it made
        assert _still_running(pids) == []  # the compiler and its child are gone
    finally:
        _cleanup(pids)


def test_sigterm_during_build_leaves_no_compiler_running(bundle: Path, tmp_path: Path) -> None:
    env, pid_file = _fake_gcc(tmp_path)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 1, 8, 8), np.float32))
    proc, pids = _start_and_wait_for_gcc(["run", str(bundle), "--input", str(x), "--output", str(tmp_path / "y.npy")],
                                         env, pid_file, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        proc.communicate()
        assert proc.returncode == 128 + signal.SIGTERM
        assert _still_running(pids) == []
    finally:
        _cleanup(pids)


@pytest.mark.slow  # two compiles; the clean-up itself is tested above without TVM
def test_staging_of_a_killed_compile_is_removed_by_the_next_compile(onnx_model: Path, tmp_path: Path) -> None:
    env, pid_file = _fake_gcc(tmp_path)
    out = tmp_path / "b"
    proc, pids = _start_and_wait_for_gcc(["compile", str(onnx_model), "-t", "cortex-m0", "--out", str(out)],
                                         env, pid_file, tmp_path)
    try:
        proc.kill()
        proc.communicate()
    finally:
        _cleanup(pids)
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.")]
    assert left and all(name.startswith(f".b.staging.{proc.pid}.") for name in left)
    again = tvmnas("compile", str(onnx_model), "-t", "cortex-m0", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".b.")] == []
    assert (out / "model.c").is_file()


# ---------------------------------------------------------------------------------------------- run-all records


def _stage_files(root: Path, log: StageLog) -> tuple[Stages, list[str]]:
    stages, calls = Stages(root, log), []

    def step(name: str) -> dict:
        def fn() -> dict:
            calls.append(name)
            folder = root / name
            folder.mkdir(exist_ok=True)
            (folder / "out.txt").write_text(f"{name} output")
            return {"dir": str(folder)}
        return stages.run(name, name, fn, lambda r: "ok", lambda r: [Path(r["dir"])])

    for name in STAGES[:-1]:
        step(name)
    return stages, calls


@pytest.mark.parametrize("damage", ["missing", "changed", "truncated_record", "old_record"])
def test_a_stage_is_done_only_while_its_files_are_there_and_whole(damage: str, tmp_path: Path) -> None:
    log = StageLog(False)
    _, first = _stage_files(tmp_path, log)
    assert first == list(STAGES[:-1])
    _, none = _stage_files(tmp_path, log)
    assert none == []
    if damage == "missing":
        (tmp_path / "compile" / "out.txt").unlink()
    elif damage == "changed":
        (tmp_path / "compile" / "out.txt").write_text("edited")
    elif damage == "truncated_record":
        record = tmp_path / "work" / "stages" / "compile.json"
        record.write_text(record.read_text()[:20])
    else:  # a record written before digests were stored: the bare result
        record = tmp_path / "work" / "stages" / "compile.json"
        record.write_text(json.dumps(json.loads(record.read_text())["result"]))
    _, again = _stage_files(tmp_path, log)
    assert again == list(STAGES[STAGES.index("compile"):-1])  # that stage and every stage after it
    assert (tmp_path / "compile" / "out.txt").read_text() == "compile output"


REDUCED = PipelineSettings(limit_train=400, search_epochs=1, train_epochs=2, chain_layers=((8, 1), (8, 2)),
                           verify_images=48, cost_model="mac")


def test_the_settings_refusal_names_what_changed(tmp_path: Path) -> None:
    work = tmp_path / "run" / "work"
    _check_settings(work, REDUCED, False, "macs")
    with pytest.raises(TvmnasError) as err:
        _check_settings(work, replace(REDUCED, train_epochs=3, seed=7), False, "macs")
    assert "(seed 0 -> 7, train_epochs 2 -> 3)" in str(err.value) and "--restart" in error_line(err.value)
    with pytest.raises(TvmnasError, match=r'search_cost_model "macs" -> "learned"'):
        _check_settings(work, REDUCED, False, "learned")
    (work / "settings.json").write_text('{"dataset": "dig')
    with pytest.raises(TvmnasError, match="settings.json is unreadable"):
        _check_settings(work, REDUCED, False, "macs")


def test_run_all_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my report")
    with pytest.raises(OutputFolderError, match="exists and is not a tvmnas run-all"):
        run_pipeline(mine, REDUCED)
    assert snapshot(mine) == {"report.md": hashlib.sha256(b"my report").hexdigest()}
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputFolderError, match="is an existing file, not a folder"):
        run_pipeline(a_file, REDUCED)


def test_a_second_run_all_on_the_same_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    write_marker(out, "run-all")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from tvmnas.output_dir import folder_lock\n"
         "with folder_lock(Path(sys.argv[1]), 'run-all'):\n    print('held', flush=True); time.sleep(300)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputFolderError) as err:
            run_pipeline(out, REDUCED)
        assert error_line(err.value) == (f"--out {out} is in use by another tvmnas run-all (pid {holder.pid}); "
                                  f"wait for it to finish or choose another --out")
        assert not (out / "work").exists()
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(out, "run-all"):  # the holder's death released it
        pass


# ---------------------------------------------------------------------------------------------- profile database


def test_cost_fit_refuses_a_database_that_is_not_ours_and_leaves_it_untouched(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE accounts (name TEXT)")
        conn.execute("INSERT INTO accounts VALUES ('alice')")
    conn.close()
    before = other.read_bytes()
    with pytest.raises(ProfileDatabaseError, match="is not a tvmnas profile database"):
        ProfileDB(other)
    assert other.read_bytes() == before and not other.with_name("other.sqlite-wal").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ProfileDatabaseError, match="is empty"):
        ProfileDB(empty, create=False)
    assert empty.stat().st_size == 0
    ProfileDB(empty).close()  # profile-ops may start a database in an empty file
    ProfileDB(empty, create=False).close()
    proc = tvmnas("cost", "fit", "--db", str(other), "--target", "cortex-m4", "--out", str(tmp_path / "s.json"))
    assert proc.returncode == 1
    assert "is not a tvmnas profile database" in one_error_line(proc)
    assert other.read_bytes() == before and not (tmp_path / "s.json").exists()


def _alive(pid: int) -> bool:
    """Whether `pid` is a process that is neither gone nor a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_tool_dies_with_tvmnas_on_sigkill() -> None:
    # a stand-in for a hung emulator, started the way every build and emulator run is started
    script = ("from tvmnas.measure.toolchain import tool_process\n"
              "with tool_process(['sleep', '600']) as proc:\n"
              "    print(proc.pid, flush=True)\n"
              "    proc.wait()\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    tool_pid = int(parent.stdout.readline())
    assert _alive(tool_pid)
    parent.kill()
    parent.wait()
    for _ in range(200):  # the kernel delivers the parent-death signal at once; reaping may lag
        if not _alive(tool_pid):
            break
        time.sleep(0.05)
    alive = _alive(tool_pid)
    if alive:
        os.kill(tool_pid, signal.SIGKILL)
    assert not alive, "the tool outlived tvmnas"
