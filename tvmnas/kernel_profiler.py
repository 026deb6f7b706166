"""Per-kernel profiles: a network or one sampled candidate compiled, built with kernel marks and timed on QEMU.

Instructions are exact (QEMU plugin inside the measured window); cycles are an estimate from the
core's timing table. Every kernel is identified by the structural hash of its lowered code (its C
text with the function name normalised) and a code-generator version that also covers the shared
C prelude, the cross compiler's version and the flags, so a database keyed by both re-measures
exactly the kernels whose machine code can have changed.

A hang or a fault on the emulator ends as an EmulatorError naming the kernel that was running:
the plugin writes its profile when QEMU exits (also on SIGTERM after a timeout), and the open
window's last segment is the kernel in progress.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import tvm
from torch import nn
from tvm import tirx

from tvmnas.codegen.bundle import PRELUDE, EmittedKernel, write_bundle, write_manifest
from tvmnas.compiler import arena_buffers, check_single_input_output, emit_kernels, lower_model
from tvmnas.errors import EmulatorError, TvmnasError
from tvmnas.executor import Executor, make_executor
from tvmnas.frontend import ModelSource, import_model
from tvmnas.passes import CallGraph, KernelCall, plan_arena
from tvmnas.profiledb import CandidateRow, KernelKey, KernelRow, ProfileDB
from tvmnas.profiling import Profile, build_plugin, parse_block_profile, profile_from_blocks, qemu_plugin_args
from tvmnas.profiling.profile import DEFAULT_PLUGIN_CACHE, flash_region_for, timing_table_for
from tvmnas.passes.int8_simd import SIMD_C, uses_simd
from tvmnas.passes.kernel_features import MACS_ATTR
from tvmnas.quantized import integer_model
from tvmnas.runner import COMMON_CFLAGS, JOB_FILE, check_exit, write_job, build, qemu_command
from tvmnas.sampler import OpSpec
from tvmnas.targets import Target
from tvmnas.toolchain import ARM_GCC, kill_group, tool_path, tool_process

CYCLES_NOTE = "estimated from a per-core timing table"
INSTRUCTIONS_NOTE = "exact (QEMU plugin inside the measured window)"
PROFILE_INPUT_SEED = 0
TERM_GRACE_S = 10.0
HASH_CHARS = 20


# --------------------------------------------------------------------------- identities


def codegen_flags(target: Target) -> str:
    """The compiler flags a kernel is built with for `target`, as one string."""
    return " ".join([*target.cflags, *target.opt_flags, *COMMON_CFLAGS])


@lru_cache(maxsize=None)
def compiler_version() -> str:
    """First line of `arm-none-eabi-gcc --version` (part of every code-generator version)."""
    proc = subprocess.run([str(tool_path(ARM_GCC)), "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout.splitlines() or ["unknown"])[0].strip()


def kernel_hash(c_text: str, name: str) -> str:
    """Structural hash of a lowered kernel: its C text with its own function name normalised."""
    normalised = re.sub(rf"\b{re.escape(name)}\b", "KERNEL", c_text)
    if uses_simd(c_text):  # the micro-kernel it calls is part of what runs
        normalised += SIMD_C
    return hashlib.sha256(normalised.encode()).hexdigest()[:HASH_CHARS]


def codegen_version(k_hash: str, flags: str) -> str:
    """Version of the code that runs for a kernel: its hash, the shared C prelude, compiler and flags."""
    text = "\0".join([k_hash, PRELUDE, compiler_version(), flags])
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


# --------------------------------------------------------------------------- MACs


def _load_source(e: Any) -> Any:
    kind = type(e).__name__
    if kind == "BufferLoad":
        return e.buffer
    if kind == "TensorLoad":
        return e.source
    return None


def _store_is_mac(store: Any) -> bool:
    """`C[i] = C[i] + a * b` (either operand order, optionally through a cast)."""
    value = store.value
    if type(value).__name__ != "Add":
        return False
    target = store.buffer if type(store).__name__ == "BufferStore" else getattr(store, "source", None)
    for acc, prod in ((value.a, value.b), (value.b, value.a)):
        while type(prod).__name__ == "Cast":
            prod = prod.value
        source = _load_source(acc)
        if source is not None and target is not None and source.same_as(target) and type(prod).__name__ == "Mul":
            return True
    return False


def _macs_in(stmt: Any, trips: int) -> int:
    kind = type(stmt).__name__
    if kind in ("BufferStore", "TensorStore"):
        return trips if _store_is_mac(stmt) else 0
    if kind == "For":
        extent = stmt.extent
        if type(extent).__name__ != "IntImm":
            raise NotImplementedError(f"MAC count of a loop with non-constant extent {extent}")
        return _macs_in(stmt.body, trips * int(extent.value))
    if kind == "SeqStmt":
        return sum(_macs_in(s, trips) for s in stmt.seq)
    if kind == "IfThenElse":
        return _macs_in(stmt.then_case, trips)
    for attr in ("block", "body"):
        inner = getattr(stmt, attr, None)
        if isinstance(inner, tirx.Stmt):
            return _macs_in(inner, trips)
    return 0


def kernel_macs(func: tirx.PrimFunc) -> int:
    """Multiply-accumulates a kernel performs: each `acc += a * b` store times its loop trip count.

    Counts conv (Cout*Hout*Wout*Cin/groups*k*k), dense/matmul (in*out) and any other reduction of
    products; pooling, element-wise ops and data movement count zero. A kernel that calls a C
    micro-kernel (passes/int8_simd.py) states its MACs as the function attribute MACS_ATTR.
    """
    if func.attrs is not None and MACS_ATTR in func.attrs:
        return int(func.attrs[MACS_ATTR])
    return _macs_in(func.body, 1)


def count_macs(lowered: tvm.IRModule, graph: CallGraph) -> list[int]:
    """MACs of every kernel call of a lowered network, in call order (see kernel_macs)."""
    per_kernel = {c.kernel: kernel_macs(lowered[c.kernel]) for c in graph.calls}
    return [per_kernel[c.kernel] for c in graph.calls]


def count_module_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of a torch module from its Conv2d and Linear layers (forward hooks on a zero input)."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.Linear):
            total += out.numel() // out.shape[-1] * mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return total


# --------------------------------------------------------------------------- compile without a flash check


@dataclass(frozen=True)
class KernelInfo:
    """One kernel call of a compiled network, with its identity for the profile database."""

    index: int
    name: str
    kernel_hash: str
    codegen_version: str
    macs: int
    c_text: str


@dataclass(frozen=True)
class PreparedNetwork:
    """A bundle written for profiling, and what each of its kernel calls is."""

    bundle_dir: Path
    target: str
    flags: str
    input_floats: int
    kernels: tuple[KernelInfo, ...]

    @property
    def codegen_version(self) -> str:
        """Version of the whole call sequence: every kernel's codegen version in order."""
        text = "\0".join(k.codegen_version for k in self.kernels)
        return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


@dataclass(frozen=True)
class LoweredNetwork:
    """A network after the MCU pipeline: its call graph, printed kernels and MACs per call (target-free)."""

    graph: CallGraph
    kernels: dict[str, EmittedKernel]
    macs: tuple[int, ...]
    precision: str = "float32"  # "int8" for a QDQ model compiled to integer kernels


def lower_network(model: ModelSource, *, input_shape: tuple[int, ...] | None = None,
                  optimize: str = "speed", simd: bool = False) -> LoweredNetwork:
    """Import and lower `model` (built for `optimize`, as `compile_model`) and print its kernels;
    the same for every target, except that simd=True (cores with the DSP extension) makes int8
    conv / dense kernels call the SIMD micro-kernel."""
    mod, quantization = integer_model(import_model(model, input_shape))  # QDQ: integer kernels, as compile_model
    lowered, graph = lower_model(mod, optimize=optimize, simd=simd)
    check_single_input_output(graph)
    return LoweredNetwork(graph, emit_kernels(lowered, graph), tuple(count_macs(lowered, graph)),
                          "float32" if quantization is None else "int8")


def isolate_call(network: LoweredNetwork, index: int, *, seed: int = PROFILE_INPUT_SEED) -> LoweredNetwork:
    """A one-kernel network running only call `index`, as the cost model's kernel table sees it.

    The call's first tensor argument becomes the input, any further tensor argument (the other
    side of an add or concat) a seeded constant, and its first output the output.
    """
    graph = network.graph
    call = graph.calls[index]
    tensor_args = [a for a in call.args if a in graph.tensors]
    if not tensor_args:
        raise NotImplementedError(f"isolating call {index} '{call.kernel}': it reads no tensor")
    rng = np.random.default_rng(seed)
    constants = {a: graph.constants[a] for a in call.args if a in graph.constants}
    for name in dict.fromkeys(tensor_args[1:]):
        if name != tensor_args[0]:
            info = graph.tensors[name]
            constants[name] = rng.standard_normal(info.shape).astype(info.dtype)
    names = [tensor_args[0], *call.outputs]
    solo = CallGraph(
        inputs=[graph.tensors[tensor_args[0]]],
        outputs=[graph.tensors[call.outputs[0]]],
        tensors={n: graph.tensors[n] for n in names},
        constants=constants,
        calls=[KernelCall(0, call.kernel, call.args, call.outputs)],
    )
    return LoweredNetwork(solo, {call.kernel: network.kernels[call.kernel]}, (network.macs[index],))


def write_network(network: LoweredNetwork, target: Target, bundle_dir: Path) -> PreparedNetwork:
    """Write a lowered network's C bundle to `bundle_dir`, replacing it (no flash measurement, no budget check)."""
    graph, emitted = network.graph, network.kernels
    plan = plan_arena(arena_buffers(graph, emitted))
    flags = codegen_flags(target)
    bundle_dir = Path(bundle_dir)
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    manifest = write_bundle(bundle_dir, graph, emitted, plan, target.name, [*target.cflags, *target.opt_flags])
    write_manifest(bundle_dir, manifest)
    kernels = []
    for call, n_macs in zip(graph.calls, network.macs, strict=True):
        text = emitted[call.kernel].text
        k_hash = kernel_hash(text, call.kernel)
        kernels.append(KernelInfo(call.index, call.kernel, k_hash, codegen_version(k_hash, flags), n_macs, text))
    return PreparedNetwork(bundle_dir, target.name, flags, graph.inputs[0].elems, tuple(kernels))


def prepare_network(
    model: ModelSource, target: Target, bundle_dir: Path, *, input_shape: tuple[int, ...] | None = None,
    optimize: str = "speed",
) -> PreparedNetwork:
    """Lower `model` and write its C bundle to `bundle_dir`, replacing it (no flash measurement, no budget check)."""
    network = lower_network(model, input_shape=input_shape, optimize=optimize, simd=target.dsp)
    return write_network(network, target, bundle_dir)


# --------------------------------------------------------------------------- measuring


def _open_segment(profile_path: Path) -> int | None:
    """Kernel index running when QEMU stopped (last segment of the open window), None if unknown."""
    if not profile_path.is_file():
        return None
    windows, is_open, last = 0, False, None
    for line in profile_path.read_text(errors="replace").splitlines():
        parts = line.split()
        if parts[:1] == ["windows"] and len(parts) >= 4:
            windows, is_open = int(parts[1]), parts[3] != "0"
        elif parts[:1] == ["segment"] and len(parts) == 4 and is_open and int(parts[2]) == windows:
            last = int(parts[3])
    return last


def _kernel_label(index: int | None, names: list[str]) -> str:
    if index is None:
        return "(which kernel is unknown: the emulator wrote no profile)"
    if index < 0:
        return "before the first kernel"
    if index < len(names):
        return f"in kernel {index} '{names[index]}'"
    return f"in kernel {index}"


def profile_elf_named(
    elf: Path,
    target: Target,
    inputs: list[np.ndarray],
    kernel_names: list[str],
    *,
    timeout_s: float = 60.0,
    cache_dir: Path = DEFAULT_PLUGIN_CACHE,
) -> Profile:
    """Profile the last call of a harness ELF built with profile=True, naming the kernel on failure.

    A guest that does not exit within `timeout_s` gets SIGTERM (QEMU then writes the plugin's
    profile), and the error names the kernel whose segment was open; a fault likewise.
    """
    plugin_so = build_plugin(cache_dir)
    what = f"{Path(elf).name} on {target.name}"
    with tempfile.TemporaryDirectory(prefix="tvmnas-kprof-") as tmp:
        work = Path(tmp)
        out = work / "profile.txt"
        write_job(work / JOB_FILE, inputs, None)
        cmd = qemu_command(elf, target, qemu_plugin_args(plugin_so, elf, out, region=flash_region_for(elf, target)))
        with tool_process(cmd, cwd=work) as proc:
            try:
                _, stderr = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.communicate(timeout=TERM_GRACE_S)
                except subprocess.TimeoutExpired:
                    kill_group(proc)
                where = _kernel_label(_open_segment(out), kernel_names)
                raise EmulatorError(f"{what}: guest hung {where} (no exit within {timeout_s:g} s)") from None
        if proc.returncode != 0:
            where = _kernel_label(_open_segment(out), kernel_names)
            try:
                check_exit(proc.returncode, what, stderr, [])
            except EmulatorError as err:
                raise EmulatorError(f"{err} {where}") from None
        blocks = parse_block_profile(out)
    if blocks.windows != len(inputs):
        raise EmulatorError(f"{what}: expected {len(inputs)} measured windows, got {blocks.windows}")
    return profile_from_blocks(blocks, timing_table_for(target), window=-1)


def profile_input(n_floats: int, seed: int = PROFILE_INPUT_SEED) -> np.ndarray:
    """The fixed standard-normal input every profile run uses (data-dependent branches stay fixed)."""
    return np.random.default_rng(seed).standard_normal(n_floats).astype(np.float32)


def measure_network(
    prepared: PreparedNetwork,
    target: Target,
    build_dir: Path,
    *,
    timeout_s: float = 60.0,
    extra_cflags: Sequence[str] = (),
) -> Profile:
    """Build a prepared bundle with kernel marks and profile one call on the target's emulator.

    extra_cflags are for experiments only: rows keyed by `prepared.flags` must not use them.
    """
    elf = build(prepared.bundle_dir, target, build_dir, profile=True, extra_cflags=extra_cflags)
    names = [k.name for k in prepared.kernels]
    profile = profile_elf_named(elf, target, [profile_input(prepared.input_floats)], names, timeout_s=timeout_s)
    if len(profile.kernels) != len(prepared.kernels):
        raise EmulatorError(
            f"{prepared.bundle_dir}: {len(profile.kernels)} kernel segments measured for {len(prepared.kernels)} calls"
        )
    return profile


def profile_network_json(
    model: ModelSource,
    target: Target,
    *,
    input_shape: tuple[int, ...] | None = None,
    timeout_s: float = 60.0,
    optimize: str = "speed",
    simd: bool | None = None,
) -> dict[str, Any]:
    """Per-kernel profile of a whole network in one emulator run, as the `tvmnas profile` JSON;
    the kernels built for `optimize` ("speed" or "size"), as `tvmnas compile --optimize` builds them;
    simd as `compile_model` (None: where the target has the DSP extension)."""
    use_simd = target.dsp if simd is None else simd and target.dsp
    with tempfile.TemporaryDirectory(prefix="tvmnas-netprof-") as tmp:
        network = lower_network(model, input_shape=input_shape, optimize=optimize, simd=use_simd)
        prepared = write_network(network, target, Path(tmp) / "bundle")
        profile = measure_network(prepared, target, Path(tmp) / "build", timeout_s=timeout_s)
    return {
        "target": target.name,
        "precision": network.precision,
        "instructions": profile.instructions,
        "cycles": profile.cycles,
        "instructions_note": INSTRUCTIONS_NOTE,
        "cycles_note": CYCLES_NOTE,
        "macs": sum(k.macs for k in prepared.kernels),
        "preamble_instructions": profile.preamble_instructions,
        "kernels": [
            {
                "index": k.index,
                "name": k.name,
                "kernel_hash": k.kernel_hash,
                "macs": k.macs,
                "instructions": m.instructions,
                "cycles": m.cycles,
            }
            for k, m in zip(prepared.kernels, profile.kernels)
        ],
    }


# --------------------------------------------------------------------------- sampled candidates


def prepare_candidate(spec: OpSpec, target: Target, bundle_dir: Path, *, seed: int = 0) -> PreparedNetwork:
    """Compile one sampled operator alone as a single-op network into `bundle_dir`."""
    return prepare_network(spec.build(seed), target, bundle_dir, input_shape=spec.input_shape)


def kernel_keys(prepared: PreparedNetwork) -> list[KernelKey]:
    """The database keys of a prepared network's kernels, in call order."""
    return [KernelKey(prepared.target, k.kernel_hash, k.codegen_version, prepared.flags) for k in prepared.kernels]


def kernel_rows(spec: OpSpec, prepared: PreparedNetwork, counts: list[tuple[int, int]]) -> list[KernelRow]:
    """One database row per kernel call of a measured candidate; counts are (instructions, cycles)."""
    return [
        KernelRow(
            target=prepared.target,
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
        if self.db.has_candidate(prepared.target, spec.key, prepared.codegen_version, prepared.flags):
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
