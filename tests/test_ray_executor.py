"""The Ray executor: real errors reach the driver once, lost workers and nodes cost retries, a node
without the tools says so, a user without Ray is told what to install, and a run on a two-node
cluster that loses a node mid-run writes the same profile database as a sequential run.

Every Ray process a test starts is started by the test (on 127.0.0.1) and killed by it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tvmnas.cli import app
from tvmnas.errors import EmulatorError, ToolchainMissingError, TvmnasError
from tvmnas.executor import InlineExecutor, make_executor
from tvmnas.cost.candidates import profile_candidates
from tvmnas.measure.store import ProfileDB
from tvmnas.ray_executor import INSTALL_HINT, RayExecutorError, check_node_tools
from tvmnas.cost.sampler import OpSpec
from tvmnas.targets import load_target

M4 = load_target("cortex-m4")


def _ship_this_module_by_value() -> None:
    """Ray workers cannot import a test module: its task functions travel by value."""
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
# Small candidates; the two blocks share two kernels, so the order in which candidates claim a
# kernel decides which candidate its row names.
SPECS = [
    OpSpec("inverted_residual", 6, 8, 8, kernel=3, stride=1, expand=3),
    OpSpec("conv", 8, 4, 8, kernel=3, stride=1),
    OpSpec("inverted_residual", 6, 8, 8, kernel=5, stride=1, expand=3),
    OpSpec("max_pool", 8, 8, 8, kernel=3, stride=2),
]


# --------------------------------------------------------------------------- without Ray


def test_asking_for_ray_without_it_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RayExecutorError) as err:
        make_executor("ray", 2)
    assert INSTALL_HINT in str(err.value) and "\n" not in str(err.value)

    db = tmp_path / "p.db"
    result = CliRunner().invoke(app, ["profile-ops", "--executor", "ray", "--db", str(db), "-n", "1"])
    assert result.exit_code != 0 and isinstance(result.exception, TvmnasError)
    assert "pip install 'tvmnas[ray]'" in str(result.exception)
    assert not db.exists()  # nothing written before the executor existed


def test_a_ray_address_with_the_local_executor_is_refused() -> None:
    with pytest.raises(TvmnasError, match=r"Ray address \(10.0.0.1:6379\) is only for executor 'ray'") as err:
        make_executor("local", 2, "10.0.0.1:6379")
    assert err.value.settings == ("executor", "ray_address")


def test_an_address_where_no_cluster_listens_is_one_line() -> None:
    address = f"127.0.0.1:{_free_port()}"  # free: nothing listens there
    with pytest.raises(RayExecutorError, match=rf"cannot reach the Ray cluster at {address}: ") as err:
        make_executor("ray", 0, address)
    assert "\n" not in str(err.value) and err.value.settings == ("ray_address",)


def test_the_node_check_names_the_node_and_the_missing_tool(monkeypatch) -> None:
    import tvmnas.ray_executor as rx

    monkeypatch.setattr(rx, "_NODE_CHECKED", False)
    monkeypatch.setattr(rx.shutil, "which", lambda tool: None if tool == "qemu-system-arm" else f"/usr/bin/{tool}")
    with pytest.raises(ToolchainMissingError) as err:
        check_node_tools()
    line = str(err.value)
    assert f"node {socket.gethostname()}" in line and "has no qemu-system-arm" in line and "\n" not in line


# --------------------------------------------------------------------------- a local Ray instance


def _fails_for_real(log: str) -> None:
    with open(log, "a") as f:
        f.write("attempt\n")
    raise EmulatorError("net3 on cortex-m4: guest hung in kernel 1 'fused_conv2d' (no exit within 3 s)")


def _dies_the_first_time(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).write_text("died once\n")
        os._exit(1)  # the worker process dies mid-task, as a killed or crashed worker does
    return "survived"


def test_a_real_error_is_reported_once_and_a_dead_worker_costs_a_retry(tmp_path: Path) -> None:
    _ship_this_module_by_value()
    log, marker = tmp_path / "attempts.txt", tmp_path / "died.txt"
    with make_executor("ray", 2) as pool:
        failing = pool.submit(_fails_for_real, str(log))
        dying = pool.submit(_dies_the_first_time, str(marker))
        err = failing.exception()
        assert dying.result() == "survived" and marker.is_file()
    assert type(err) is EmulatorError  # the task's own error, not Ray's wrapper around it
    assert str(err) == "net3 on cortex-m4: guest hung in kernel 1 'fused_conv2d' (no exit within 3 s)"
    assert log.read_text() == "attempt\n"  # not retried


@pytest.mark.slow  # the line itself is checked without Ray above; this is the Ray path
def test_a_node_without_the_cross_compiler_stops_the_run_naming_itself(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"  # the node's PATH: QEMU but no arm-none-eabi-gcc
    bin_dir.mkdir()
    (bin_dir / "qemu-system-arm").symlink_to(shutil.which("qemu-system-arm"))
    monkeypatch.setenv("PATH", str(bin_dir))  # the local Ray instance and its workers inherit it
    pool = make_executor("ray", 1)
    monkeypatch.undo()
    with ProfileDB(tmp_path / "p.db") as db, pytest.raises(ToolchainMissingError) as err:
        profile_candidates(SPECS[:2], M4, db, tmp_path / "w", executor=pool)
    line = str(err.value)
    assert f"node {socket.gethostname()} (" in line and "has no arm-none-eabi-gcc" in line and "\n" not in line


@pytest.mark.slow
def test_ctrl_c_on_the_driver_keeps_what_finished_and_a_rerun_does_the_rest(tmp_path: Path) -> None:
    import ray

    def interrupt_after_the_first(spec, status: str) -> None:
        raise KeyboardInterrupt

    with ProfileDB(tmp_path / "p.db") as db:
        with pytest.raises(KeyboardInterrupt):
            profile_candidates(SPECS, M4, db, tmp_path / "w", executor=make_executor("ray", 2),
                               on_done=interrupt_after_the_first)
        assert not ray.is_initialized()  # the private Ray instance is stopped
        assert db.counts()[1] == 1  # the finished candidate is saved
        rerun = profile_candidates(SPECS, M4, db, tmp_path / "w")
    assert rerun.cached == 1 and rerun.measured + rerun.cached == len(SPECS) and rerun.failures == []


@pytest.mark.slow
def test_cost_data_collected_on_ray_is_byte_identical_to_a_sequential_run(tmp_path: Path) -> None:
    from tvmnas.cost.collect import collect
    from tvmnas.search.genotype import ChainLayer, Genotype

    def tiny(*layers: tuple[str, int]) -> Genotype:
        return Genotype(space="chain", input_shape=(1, 8, 8), num_classes=4, channels=4,
                        layers=tuple(ChainLayer(op, width, 1) for op, width in layers), head_channels=0)

    nets = [("fit00", "fit", tiny(("mb_k3_e1", 4))), ("eval00", "eval", tiny(("mb_k5_e1", 4), ("mb_k3_e1", 4))),
            ("fit01", "fit", tiny(("mb_k3_e1", 8)))]
    for name, executor in (("one", None), ("ray", make_executor("ray", 2))):
        with ProfileDB(tmp_path / f"{name}.db") as db:
            collect(nets, [M4], db, executor=executor, progress=lambda m: None)
            db.dump(tmp_path / f"{name}.jsonl.gz")
    assert (tmp_path / "ray.jsonl.gz").read_bytes() == (tmp_path / "one.jsonl.gz").read_bytes()


# --------------------------------------------------------------------------- a two-node cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_processes(sid: int) -> dict[int, str]:
    """Live (not zombie) processes of session `sid` and their command lines."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[3]) == sid and stat[0] != "Z":
            found[int(entry)] = cmdline
    return found


class TwoNodeCluster:
    """A Ray head (1 CPU) and a second node (2 CPUs, resource 'second_node') on 127.0.0.1, each a
    `ray start --block` in a session of its own, so that killing the session ends all of that node."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = tempfile.mkdtemp(prefix="tvmnas-ray-", dir="/tmp")  # short: Ray puts sockets in it
        # The nodes and the driver share a token of this cluster's own (the driver is a process of its
        # own too: a process keeps the authentication mode it first gave Ray).
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex,
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.ray = str(Path(sys.executable).parent / "ray")
        self.head = self.node = None

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        with open(Path(self.temp) / log, "w") as out:
            return subprocess.Popen([self.ray, "start", "--block", "--node-ip-address=127.0.0.1",
                                     "--disable-usage-stats", *args], env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_for(self, proc: subprocess.Popen, log: str, ready) -> None:
        while not ready():  # or the node has failed to start
            assert proc.poll() is None, (Path(self.temp) / log).read_text()
            threading.Event().wait(0.5)

    def __enter__(self) -> "TwoNodeCluster":
        self.head = self._start(["--head", f"--port={self.port}", "--num-cpus=1", "--include-dashboard=false",
                                 f"--temp-dir={self.temp}"], "head.log")
        self._wait_for(self.head, "head.log", lambda: "Ray runtime started" in self.log("head.log"))
        self.node = self._start([f"--address={self.address}", "--num-cpus=2", '--resources={"second_node": 2}'],
                                "node.log")
        self._wait_for(self.node, "node.log", lambda: "Ray runtime started" in self.log("node.log"))
        return self

    def log(self, name: str) -> str:
        return (Path(self.temp) / name).read_text(errors="replace")

    def second_node_busy(self) -> bool:
        """A worker of the second node is running a task (Ray titles it by the task's function)."""
        return any(cmd.startswith("ray::_run_task") for cmd in _session_processes(self.node.pid).values())

    def kill_second_node(self) -> None:
        """SIGKILL the second node's raylet: its workers and the node die with it."""
        raylets = [p for p, cmd in _session_processes(self.node.pid).items() if "/raylet/raylet " in cmd]
        assert raylets, "the second node has no raylet"
        for pid in raylets:
            os.kill(pid, signal.SIGKILL)

    def __exit__(self, *exc: object) -> None:
        for proc in (self.node, self.head):
            if proc is None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for proc in (self.node, self.head):  # wait until nothing of either session is left
            while proc is not None and _session_processes(proc.pid):
                for pid in _session_processes(proc.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                threading.Event().wait(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)


def _rows(path: Path) -> tuple[list[dict], list[dict]]:
    with ProfileDB(path, create=False) as db:
        kernels = sorted((asdict(k) for k in db.kernels()), key=lambda r: (r["kernel_hash"], r["codegen_version"]))
        candidates = sorted((asdict(c) for c in db.candidates()), key=lambda r: r["candidate_key"])
    return kernels, candidates


# The driver of the cluster run: profile_candidates on the cluster, as `tvmnas profile-ops --executor ray` runs it.
DRIVER = """
import json, sys
from pathlib import Path
from tvmnas.executor import make_executor
from tvmnas.cost.candidates import profile_candidates
from tvmnas.measure.store import ProfileDB
from tvmnas.cost.sampler import OpSpec
from tvmnas.targets import load_target
address, db_path, specs = sys.argv[1], Path(sys.argv[2]), [OpSpec.from_json(s) for s in json.loads(sys.argv[3])]
with ProfileDB(db_path) as db:
    stats = profile_candidates(specs, load_target("cortex-m4"), db, db_path.parent / "work",
                               executor=make_executor("ray", 3, address))  # the head's CPU and the node's two
print(json.dumps({"failures": stats.failures, "done": stats.measured + stats.cached}))
"""


@pytest.mark.slow
@pytest.mark.ci
def test_a_node_lost_mid_run_costs_retries_and_the_database_matches_a_sequential_run(tmp_path: Path) -> None:
    with ProfileDB(tmp_path / "sequential.db") as db:
        seq = profile_candidates(SPECS, M4, db, tmp_path / "w0", executor=InlineExecutor())
    assert seq.failures == [] and seq.measured + seq.cached == len(SPECS)

    (tmp_path / "ray").mkdir()
    killed, stop = threading.Event(), threading.Event()
    with TwoNodeCluster() as cluster:

        def kill_when_busy() -> None:
            while not stop.is_set():
                if cluster.second_node_busy():
                    cluster.kill_second_node()
                    killed.set()
                    return
                stop.wait(0.1)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        try:
            driver = subprocess.run(
                [sys.executable, "-c", DRIVER, cluster.address, str(tmp_path / "ray" / "p.db"),
                 json.dumps([spec.params_json() for spec in SPECS])],
                env=cluster.env, capture_output=True, text=True, check=False)
        finally:
            stop.set()
            killer.join()
    assert driver.returncode == 0, driver.stderr[-3000:]
    assert killed.is_set()  # the second node died while it ran a task
    assert json.loads(driver.stdout.splitlines()[-1]) == {"failures": [], "done": len(SPECS)}
    assert _rows(tmp_path / "ray" / "p.db") == _rows(tmp_path / "sequential.db")
