"""Per-kernel profiles: a network or one sampled candidate compiled, built with kernel marks and timed on QEMU.

Instructions are exact (QEMU plugin inside the measured window); cycles are an estimate from the
core's timing table. A kernel's identity is passes.kernel_hash, the structural hash of its
scheduled TIR (what it computes, the program its cost-model features are read from), with its
precision; its code-generator version hashes what turns that into machine code (its C text with
the function name normalised, the shared C prelude, the cross compiler's version and the flags),
so a database keyed by both re-measures exactly the kernels whose machine code can have changed.

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
import tvm

from tvmnas.codegen.bundle import PRELUDE, EmittedKernel, write_bundle, write_manifest
from tvmnas.compiler import arena_buffers, check_single_input_output, emit_kernels, lower_model
from tvmnas.errors import EmulatorError, TvmnasError
from tvmnas.executor import Executor, make_executor
from tvmnas.frontend import ModelSource, import_model
from tvmnas.passes import CallGraph, KernelCall, plan_arena
from tvmnas.measure.store import CandidateRow, KernelKey, KernelRow, ProfileDB
from tvmnas.measure.emulator import Emulator
from tvmnas.measure.profile import Profile
from tvmnas.passes.int8_simd import SIMD_C, uses_simd
from tvmnas.passes.kernel_features import kernel_hash, kernel_macs
from tvmnas.quantized import integer_model
from tvmnas.measure.runner import COMMON_CFLAGS
from tvmnas.cost.sampler import OpSpec
from tvmnas.targets import Target
from tvmnas.measure.toolchain import ARM_GCC, tool_path

CYCLES_NOTE = "estimated from a per-core timing table"
INSTRUCTIONS_NOTE = "exact (QEMU plugin inside the measured window)"
PROFILE_INPUT_SEED = 0
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


def codegen_version(c_text: str, name: str, flags: str) -> str:
    """Version of the machine code of a kernel: its C text with its own function name normalised
    (plus the SIMD micro-kernel it calls), the shared C prelude, the compiler's version and flags."""
    normalised = re.sub(rf"\b{re.escape(name)}\b", "KERNEL", c_text)
    if uses_simd(c_text):  # the micro-kernel it calls is part of what runs
        normalised += SIMD_C
    text = "\0".join([normalised, PRELUDE, compiler_version(), flags])
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


# --------------------------------------------------------------------------- MACs


def count_macs(lowered: tvm.IRModule, graph: CallGraph) -> list[int]:
    """MACs of every kernel call of a lowered network, in call order (passes.kernel_macs)."""
    per_kernel = {c.kernel: kernel_macs(lowered[c.kernel]) for c in graph.calls}
    return [per_kernel[c.kernel] for c in graph.calls]


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
    precision: str


@dataclass(frozen=True)
class PreparedNetwork:
    """A bundle written for profiling, and what each of its kernel calls is."""

    bundle_dir: Path
    target: str
    flags: str
    input_floats: int
    kernels: tuple[KernelInfo, ...]

    @property
    def precision(self) -> str:
        """The precision of the network's kernels ("float32" or "int8")."""
        return self.kernels[0].precision if self.kernels else "float32"

    @property
    def codegen_version(self) -> str:
        """Version of the whole call sequence: every kernel's codegen version in order."""
        text = "\0".join(k.codegen_version for k in self.kernels)
        return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


@dataclass(frozen=True)
class LoweredNetwork:
    """A network after the MCU pipeline: its call graph, printed kernels, their identities
    (passes.kernel_hash by kernel name), MACs per call and the scheduled TIR (target-free)."""

    graph: CallGraph
    kernels: dict[str, EmittedKernel]
    hashes: dict[str, str]
    macs: tuple[int, ...]
    precision: str = "float32"  # "int8" for a QDQ model compiled to integer kernels
    lowered: tvm.IRModule | None = field(default=None, repr=False, compare=False)  # features are read from it


def lower_network(model: ModelSource, *, input_shape: tuple[int, ...] | None = None,
                  optimize: str = "speed", simd: bool = False) -> LoweredNetwork:
    """Import and lower `model` (built for `optimize`, as `compile_model`) and print its kernels;
    the same for every target, except that simd=True (cores with the DSP extension) makes int8
    conv / dense kernels call the SIMD micro-kernel."""
    mod, quantization = integer_model(import_model(model, input_shape))  # QDQ: integer kernels, as compile_model
    lowered, graph = lower_model(mod, optimize=optimize, simd=simd)
    check_single_input_output(graph)
    hashes = {name: kernel_hash(lowered[name]) for name in sorted({c.kernel for c in graph.calls})}
    return LoweredNetwork(graph, emit_kernels(lowered, graph), hashes, tuple(count_macs(lowered, graph)),
                          "float32" if quantization is None else "int8", lowered)


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
    return LoweredNetwork(solo, {call.kernel: network.kernels[call.kernel]},
                          {call.kernel: network.hashes[call.kernel]}, (network.macs[index],), network.precision)


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
        kernels.append(KernelInfo(call.index, call.kernel, network.hashes[call.kernel],
                                  codegen_version(text, call.kernel, flags), n_macs, text, network.precision))
    return PreparedNetwork(bundle_dir, target.name, flags, graph.inputs[0].elems, tuple(kernels))


def prepare_network(
    model: ModelSource, target: Target, bundle_dir: Path, *, input_shape: tuple[int, ...] | None = None,
    optimize: str = "speed",
) -> PreparedNetwork:
    """Lower `model` and write its C bundle to `bundle_dir`, replacing it (no flash measurement, no budget check)."""
    network = lower_network(model, input_shape=input_shape, optimize=optimize, simd=target.dsp)
    return write_network(network, target, bundle_dir)


# --------------------------------------------------------------------------- measuring


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
    seed: int = PROFILE_INPUT_SEED,
) -> Profile:
    """Build a prepared bundle with kernel marks and profile one call, on profile_input(seed), on
    the target's emulator.

    extra_cflags are for experiments only: rows keyed by `prepared.flags` must not use them.
    """
    emulator = Emulator(target, timeout_s)
    elf = emulator.build(prepared.bundle_dir, build_dir, profile=True, extra_cflags=extra_cflags)
    names = [k.name for k in prepared.kernels]
    profile = emulator.profile(elf, [profile_input(prepared.input_floats, seed)], kernel_names=names)
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
    return [KernelKey(prepared.target, k.precision, k.kernel_hash, k.codegen_version, prepared.flags)
            for k in prepared.kernels]


def kernel_rows(spec: OpSpec, prepared: PreparedNetwork, counts: list[tuple[int, int]]) -> list[KernelRow]:
    """One database row per kernel call of a measured candidate; counts are (instructions, cycles)."""
    return [
        KernelRow(
            target=prepared.target,
            precision=k.precision,
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
        precision=prepared.precision,
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
        if self.db.has_candidate(prepared.target, prepared.precision, spec.key, prepared.codegen_version,
                                 prepared.flags):
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
