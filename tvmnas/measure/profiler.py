"""Per-kernel profiles: a network compiled, built with kernel marks and timed on QEMU, with the
identity and store key of every kernel it runs.

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
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tvm

from tvmnas.codegen.bundle import PRELUDE, EmittedKernel, support_c, write_bundle, write_manifest
from tvmnas.codegen.c_printer import C99, CLanguage, language_for
from tvmnas.compiler import arena_buffers, check_single_input_output, emit_kernels, lower_model
from tvmnas.errors import EmulatorError, TvmnasError
from tvmnas.executor import FolderFiles
from tvmnas.frontend import ModelSource, import_model
from tvmnas.passes import CallGraph, KernelCall, plan_arena
from tvmnas.measure.store import FeatureRow, KernelKey, canonical_json
from tvmnas.measure.emulator import Emulator
from tvmnas.measure.profile import Profile
from tvmnas.passes.kernel_features import kernel_features, kernel_hash, kernel_macs
from tvmnas.quantized import as_int8_source, integer_model
from tvmnas.measure.runner import COMMON_CFLAGS
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
    (plus the C micro-kernels it calls), the shared C prelude, the compiler's version and flags."""
    normalised = re.sub(rf"\b{re.escape(name)}\b", "KERNEL", c_text)
    normalised += "".join(support_c([c_text]))  # the shipped C it calls is part of what runs
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
    # The bundle's files (path relative to bundle_dir, bytes) when it travels to another machine.
    files: FolderFiles = field(default=(), repr=False, compare=False)
    # Its kernels' feature rows, when written with features=True (for the profile store).
    features: tuple[FeatureRow, ...] = field(default=(), repr=False, compare=False)

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
                  optimize: str = "speed", simd: bool = False, precision: str | None = None,
                  language: CLanguage = C99) -> LoweredNetwork:
    """Import and lower `model` (built for `optimize`, as `compile_model`) and print its kernels;
    the same for every target, except that simd=True (cores with the DSP extension) makes int8
    conv / dense kernels call the SIMD micro-kernel. precision="int8" prices a float model as its
    int8 build (quantized.as_int8_source); None takes the model as it is (QDQ models are int8).
    language: the C tables kernels are printed with (a target's `c_printer.language_for`)."""
    if precision not in (None, "float32", "int8"):
        raise TvmnasError(f"precision {precision!r} is not one of float32, int8", settings=("precision",))
    with tempfile.TemporaryDirectory(prefix="tvmnas-int8-") as work:
        if precision == "int8":
            model = as_int8_source(model, input_shape, work)
        mod, quantization = integer_model(import_model(model, input_shape))  # QDQ: integer kernels, as compile_model
    if precision == "float32" and quantization is not None:
        raise TvmnasError("the model is quantized (int8); it cannot be priced as float32", settings=("precision",))
    lowered, graph = lower_model(mod, optimize=optimize, simd=simd)
    check_single_input_output(graph)
    hashes = {name: kernel_hash(lowered[name]) for name in sorted({c.kernel for c in graph.calls})}
    return LoweredNetwork(graph, emit_kernels(lowered, graph, language=language), hashes, tuple(count_macs(lowered, graph)),
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


def feature_rows(network: LoweredNetwork) -> list[FeatureRow]:
    """One feature row per distinct kernel of a lowered network (its features and MACs, read from its TIR)."""
    first = {h: name for name, h in sorted(network.hashes.items(), reverse=True)}
    return [FeatureRow(network.precision, h, kernel_macs(network.lowered[name]),
                       canonical_json(kernel_features(network.lowered[name]))) for h, name in sorted(first.items())]


def write_network(network: LoweredNetwork, target: Target, bundle_dir: Path, *,
                  features: bool = False) -> PreparedNetwork:
    """Write a lowered network's C bundle to `bundle_dir`, replacing it (no flash measurement, no
    budget check); features: also read its kernels' feature rows (feature_rows)."""
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
    return PreparedNetwork(bundle_dir, target.name, flags, graph.inputs[0].elems, tuple(kernels),
                           features=tuple(feature_rows(network)) if features else ())


def prepare_network(
    model: ModelSource, target: Target, bundle_dir: Path, *, input_shape: tuple[int, ...] | None = None,
    optimize: str = "speed",
    precision: str | None = None,
    features: bool = False,
) -> PreparedNetwork:
    """Lower `model` (as its int8 build with precision="int8", see lower_network) and write its C
    bundle to `bundle_dir`, replacing it (no flash measurement, no budget check; features: with its
    kernels' feature rows)."""
    network = lower_network(model, input_shape=input_shape, optimize=optimize, simd=target.dsp, precision=precision,
                            language=language_for(target))
    return write_network(network, target, bundle_dir, features=features)


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
    precision: str | None = None,
) -> dict[str, Any]:
    """Per-kernel profile of a whole network in one emulator run, as the `tvmnas profile` JSON;
    the kernels built for `optimize` ("speed" or "size"), as `tvmnas compile --optimize` builds them;
    simd as `compile_model` (None: where the target has the DSP extension); precision as lower_network."""
    use_simd = target.dsp if simd is None else simd and target.dsp
    with tempfile.TemporaryDirectory(prefix="tvmnas-netprof-") as tmp:
        network = lower_network(model, input_shape=input_shape, optimize=optimize, simd=use_simd,
                                precision=precision, language=language_for(target))
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


# --------------------------------------------------------------------------- store keys


def kernel_keys(prepared: PreparedNetwork) -> list[KernelKey]:
    """The database keys of a prepared network's kernels, in call order."""
    return [KernelKey(prepared.target, k.precision, k.kernel_hash, k.codegen_version, prepared.flags)
            for k in prepared.kernels]
