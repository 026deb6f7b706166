"""Every TVM pass run inside a test has its input and output checked for well-formedness.

Tests that may run an external tool (arm-none-eabi-gcc, host gcc, QEMU) are marked `toolchain`
here, at collection: a test is marked when its function, its fixtures or the helpers of its own
module they call name one of TOOLCHAIN_NAMES (the tvmnas entry points that build or run C, the CLI,
subprocesses). The rule over-marks rather than misses. Tests that start worker processes or a Ray
cluster (each worker imports torch and TVM again) are marked `workers` the same way, from
WORKER_NAMES. `make test-fast` runs the rest (`-m "not slow and not toolchain and not workers"`). In a run whose -m names `toolchain`, an unmarked test finds
stand-ins for those tools first on its PATH that fail naming the tool, so a test the rule missed
fails there instead of quietly needing the toolchain.
"""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import tvm
from tvm.relax.ir.instrument import WellFormedInstrument

# Names (functions, classes, attributes) through which a test reaches a C compiler or QEMU.
TOOLCHAIN_NAMES = frozenset({
    # compile (object_flash_bytes compiles the bundle with arm-none-eabi-gcc)
    "compile_model", "compile_dynamic", "object_flash_bytes", "quantize_and_compile",
    # build and run (measure/)
    "build", "build_host", "run", "run_host", "run_tool", "tool_process", "require_tools", "memory_usage",
    "Emulator", "measure_network", "profile_network_json", "profile_network", "profile_candidates",
    "profile_candidate", "profile_elf", "run_block_profile", "build_plugin", "collect", "run_items", "compiler_version",
    "codegen_version",
    # stages and commands that compile or run
    "run_all", "Pipeline", "build_firmware", "main", "app", "CliRunner", "subprocess", "Popen", "check_call",
})

# Names through which a test starts worker processes (tvmnas.executor) or a Ray cluster.
WORKER_NAMES = frozenset({"LocalExecutor", "make_executor", "RayExecutor", "ray_executor", "ProcessPoolExecutor"})

TESTS = Path(__file__).resolve().parent
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "arm-none-eabi-objdump",
         "arm-none-eabi-ar", "qemu-system-arm", "gcc", "cc")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "toolchain: may run arm-none-eabi-gcc, gcc or QEMU (set by tests/conftest.py; "
        "deselect with -m 'not toolchain')")
    config.addinivalue_line(
        "markers", "workers: starts worker processes or a Ray cluster (set by tests/conftest.py; "
        "deselect with -m 'not workers')")


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _reaches(func: object, module: types.ModuleType | None, seen: set[int], entry: frozenset[str]) -> bool:
    """Whether `func` (or a function or class of `module` that it names) names one of `entry`."""
    func = inspect.unwrap(func) if callable(func) else func
    code = getattr(func, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    names = _names(code)
    if names & entry:
        return True
    for name in sorted(names):
        obj = getattr(module, name, None)
        if getattr(obj, "__module__", None) != getattr(module, "__name__", ""):
            continue
        if inspect.isfunction(obj) and _reaches(obj, module, seen, entry):
            return True
        if inspect.isclass(obj) and any(_reaches(m, module, seen, entry)
                                        for m in vars(obj).values() if inspect.isfunction(m)):
            return True
    return False


def names_any(item: pytest.Item, entry: frozenset[str]) -> bool:
    """Whether a collected test, its fixtures or its module's helpers name one of `entry`."""
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        funcs += [d.func for d in defs]
    seen: set[int] = set()
    for func in funcs:
        home = inspect.getmodule(func) if func is not None else None
        if home is None or not str(getattr(home, "__file__", "")).startswith(str(TESTS)):
            continue  # pytest's own fixtures (tmp_path, monkeypatch, ...)
        if _reaches(func, home, seen, entry):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if names_any(item, TOOLCHAIN_NAMES):
            item.add_marker(pytest.mark.toolchain)
        if names_any(item, WORKER_NAMES):
            item.add_marker(pytest.mark.workers)


@pytest.fixture(scope="session")
def _tool_stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("no-toolchain")
    for tool in TOOLS:
        path = folder / tool
        path.write_text(f"#!/bin/sh\necho 'a test not marked toolchain ran {tool}: see tests/conftest.py' >&2\n"
                        "exit 97\n")
        path.chmod(0o755)
    return folder


@pytest.fixture(autouse=True)
def _no_toolchain_unless_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    markexpr = request.config.getoption("markexpr", "") or ""
    if "toolchain" in markexpr and request.node.get_closest_marker("toolchain") is None:
        stand_ins = request.getfixturevalue("_tool_stand_ins")
        monkeypatch.setenv("PATH", f"{stand_ins}{os.pathsep}{os.environ['PATH']}")
    yield


@pytest.fixture(autouse=True)
def well_formed_passes():
    with tvm.transform.PassContext(instruments=[WellFormedInstrument()]):
        yield
