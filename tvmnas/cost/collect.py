"""Profile data for cost models: compile whole networks once, build and profile them per target,
and keep one row per kernel call (features, MACs, exact instructions, estimated cycles).

Features are those of tvmnas.passes.kernel_features on the fused, legalized PrimFunc; cycles are
the project's per-core timing-table estimate over an exact emulated instruction trace.

A file holds one precision: float32 (the networks as they are) or int8 (each network's int8 build,
measure.profiler.lower_network(precision="int8"); kernels of cores with the DSP extension call the
SIMD micro-kernels). Float32 files carry no precision field, so they stay as they were written.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tvmnas.compiler import lower_model
from tvmnas.cost.gzip_text import gzip_bytes, read_text, replace_bytes
from tvmnas.errors import CostModelError
from tvmnas.executor import Executor, as_finished, make_executor
from tvmnas.frontend import import_model
from tvmnas.measure.profiler import LoweredNetwork, lower_network, measure_network, write_network
from tvmnas.passes import kernel_features, kernel_hash, kernel_macs
from tvmnas.search.genotype import Genotype
from tvmnas.targets import Target

DATA_VERSION = 1
PRECISIONS = ("float32", "int8")


@dataclass
class ProfileData:
    """Kernels (by hash: name, features, MACs) and networks (genotype, split, per-target calls), of
    one precision."""

    kernels: dict[str, dict[str, Any]] = field(default_factory=dict)
    networks: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "float32"

    def save(self, path: Path) -> None:
        """Write gzipped JSON with sorted keys (same data, same bytes)."""
        doc = {"version": DATA_VERSION, "kernels": self.kernels, "networks": self.networks}
        if self.precision != "float32":
            doc["precision"] = self.precision
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        replace_bytes(path, gzip_bytes(text))

    @classmethod
    def load(cls, path: Path) -> "ProfileData":
        """Read a file written by save()."""
        path = Path(path)
        if not path.is_file():
            raise CostModelError(f"profile data file '{path}' does not exist")
        try:
            doc = json.loads(read_text(path))
        except ValueError as err:  # broken gzip, not UTF-8, not JSON
            raise CostModelError(f"profile data file '{path}' is not JSON: {err}") from err
        version = doc.get("version") if isinstance(doc, dict) else None
        if version != DATA_VERSION:
            raise CostModelError(f"profile data file '{path}' has version {version}, expected {DATA_VERSION}")
        precision = doc.get("precision", "float32")
        if precision not in PRECISIONS:
            raise CostModelError(f"profile data file '{path}' has precision {precision!r}, not one of "
                                 f"{', '.join(PRECISIONS)}")
        return cls(doc["kernels"], doc["networks"], precision)

    def targets(self) -> list[str]:
        """Targets that at least one network was profiled on."""
        return sorted({t for n in self.networks for t in n["targets"]})

    def kernel_rows(self, target: str, split: str | None = None) -> list[dict[str, Any]]:
        """One row per distinct kernel measured on `target` (networks of `split`, or all):
        hash, name, features, macs, instructions, cycles (identical kernels measure identically)."""
        rows: dict[str, dict[str, Any]] = {}
        for net in self.networks:
            if (split is not None and net["split"] != split) or target not in net["targets"]:
                continue
            for call in net["targets"][target]["calls"]:
                if call["hash"] not in rows:
                    k = self.kernels[call["hash"]]
                    rows[call["hash"]] = {"hash": call["hash"], "name": k["name"], "features": k["features"],
                                          "macs": k["macs"], "instructions": call["instructions"],
                                          "cycles": call["cycles"]}
        return [rows[h] for h in sorted(rows)]


def check_precision(precision: str) -> None:
    """Refuse a precision the profile data cannot hold (one line naming it)."""
    if precision not in PRECISIONS:
        raise CostModelError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")


def _lower_network(genotype: Genotype, seed: int, precision: str = "float32", simd: bool = False) -> LoweredNetwork:
    """The network of `genotype` (weights seeded) as the compiler lowers it: float32 as it is, int8 as
    its int8 build (simd: the DSP extension's micro-kernels, as compile_model builds it for such cores)."""
    from tvmnas.models import build_model

    torch.manual_seed(seed)
    model = build_model(genotype).eval()
    if precision == "float32":
        return lower_network(model, input_shape=(1, *genotype.input_shape))
    return lower_network(model, input_shape=(1, *genotype.input_shape), simd=simd, precision=precision)


def profile_network(
    genotype: Genotype,
    targets: list[Target],
    data: ProfileData,
    *,
    name: str,
    split: str,
    seed: int = 0,
    timeout_s: float = 120,
) -> dict[str, Any]:
    """Lower `genotype` once (in `data.precision`; int8 once per kind of core: with and without the
    DSP extension), then build and profile it for each target (input: profile_input(seed)); append
    its rows to `data`."""
    check_precision(data.precision)
    lowerings: dict[bool, LoweredNetwork] = {}
    entry: dict[str, Any] = {"name": name, "split": split, "genotype": genotype.to_dict(), "targets": {}}
    with tempfile.TemporaryDirectory(prefix="tvmnas-cost-") as tmp:
        for target in targets:
            simd = data.precision == "int8" and target.dsp
            if simd not in lowerings:
                lowerings[simd] = network = _lower_network(genotype, seed, data.precision, simd)
                for kname, h in network.hashes.items():
                    if h not in data.kernels:
                        func = network.lowered[kname]
                        data.kernels[h] = {"name": kname, "features": kernel_features(func),
                                           "macs": kernel_macs(func)}
            network = lowerings[simd]
            prepared = write_network(network, target, Path(tmp) / f"bundle-{target.name}")
            prof = measure_network(prepared, target, Path(tmp) / f"build-{target.name}", timeout_s=timeout_s, seed=seed)
            entry["targets"][target.name] = {
                "instructions": prof.instructions,
                "cycles": prof.cycles,
                "preamble_cycles": prof.preamble_cycles,
                "calls": [
                    {"kernel": k.name, "hash": k.kernel_hash, "instructions": m.instructions, "cycles": m.cycles}
                    for k, m in zip(prepared.kernels, prof.kernels)
                ],
            }
    data.networks.append(entry)
    return entry


def _profile_alone(genotype: Genotype, targets: list[Target], name: str, split: str,
                   seed: int, precision: str = "float32") -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """profile_network in a worker process: the network's entry and its kernels."""
    data = ProfileData(precision=precision)
    entry = profile_network(genotype, targets, data, name=name, split=split, seed=seed)
    return entry, data.kernels


def _name_kernels_in_order(data: ProfileData) -> None:
    """Each kernel keeps the name a sequential run records (its first name in sorted order in the
    first network, in file order, that calls it), so the file does not depend on which worker
    finished first."""
    named: set[str] = set()
    for net in data.networks:
        names: dict[str, str] = {}
        for t in net["targets"].values():
            for call in t["calls"]:
                names[call["hash"]] = min(names.get(call["hash"], call["kernel"]), call["kernel"])
        for h in names.keys() - named:
            data.kernels[h]["name"] = names[h]
        named |= names.keys()


def collect(
    genotypes: list[tuple[str, str, Genotype]],
    targets: list[Target],
    *,
    save_to: Path | None = None,
    jobs: int = 1,
    executor: Executor | None = None,
    precision: str = "float32",
    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> ProfileData:
    """Profile every (name, split, genotype) on every target, in order, on `executor` (default:
    `jobs` local worker processes), as `precision` builds it (float32 or int8).

    With `save_to`, the data is written after every network and networks already in that file
    are not profiled again (an interrupted run resumes where it stopped). Each network gets the
    seed of its place in `genotypes`, and the file is written in that order at the end, so any
    number of jobs gives the same file.
    """
    check_precision(precision)
    data = (ProfileData.load(save_to) if save_to is not None and Path(save_to).is_file()
            else ProfileData(precision=precision))
    if data.precision != precision:
        raise CostModelError(f"profile data file '{save_to}' holds {data.precision} profiles, not {precision}: "
                             f"collect {precision} into another file")
    done = {n["name"] for n in data.networks}
    todo = [(i, name, split, g) for i, (name, split, g) in enumerate(genotypes) if name not in done]

    def finished(i: int, entry: dict[str, Any]) -> None:
        if save_to is not None:
            data.save(save_to)
        cycles = ", ".join(f"{t}: {v['cycles']:,}" for t, v in entry["targets"].items())
        progress(f"[{i + 1}/{len(genotypes)}] {entry['name']} ({entry['split']}, "
                 f"{entry['genotype']['space']}): {cycles} cycles")

    with executor if executor is not None else make_executor("local", jobs) as pool:
        calls = [(g, targets, name, split, i, precision) for i, name, split, g in todo]
        for k, fut in as_finished(pool, _profile_alone, calls):
            entry, kernels = fut.result()
            for h, kernel in kernels.items():
                data.kernels.setdefault(h, kernel)
            data.networks.append(entry)
            finished(todo[k][0], entry)
    order = {name: i for i, (name, _, _) in enumerate(genotypes)}
    data.networks.sort(key=lambda n: order.get(n["name"], len(genotypes)))
    _name_kernels_in_order(data)
    if save_to is not None and todo:
        data.save(save_to)
    return data


def refresh_features(data: ProfileData, seeds: dict[str, int] | None = None,
                     progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> int:
    """Recompute every kernel's features with today's kernel_features, keeping the measurements.

    Each network is lowered again from its genotype, with the weights of the seed it was collected
    with (`seeds` by network name, as collect gives them: its place in the list; float32 kernels do
    not depend on the weights, int8 ones do through their zero points), as each of its targets
    builds it (int8: with and without the DSP extension); a kernel is matched by its hash, so a
    kernel whose lowering changed since it was measured is left as it was (and counted as stale).
    Returns the number of kernels whose features were recomputed.
    """
    from tvmnas.targets import load_target

    fresh: set[str] = set()
    for i, net in enumerate(data.networks):
        genotype = Genotype.from_dict(net["genotype"])
        kinds = {data.precision == "int8" and load_target(t).dsp for t in net["targets"]}
        for simd in sorted(kinds):
            network = _lower_network(genotype, (seeds or {}).get(net["name"], 0), data.precision, simd)
            for kname, h in network.hashes.items():
                if h in data.kernels and h not in fresh:
                    data.kernels[h]["features"] = kernel_features(network.lowered[kname])
                    fresh.add(h)
        progress(f"[{i + 1}/{len(data.networks)}] {net['name']}: {len(fresh)} kernels refreshed")
    stale = len(data.kernels) - len(fresh)
    if stale:
        progress(f"{stale} measured kernels no longer occur in today's lowering: their features are unchanged")
    return len(fresh)


def kernel_rows_from_db(db_path: Path, target: str,
                        progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> list[dict[str, Any]]:
    """Kernel rows for fitting from a tvmnas profile database (tvmnas profile-ops).

    The database keeps C text, not TIR, so each sampled candidate is lowered again to read its
    kernels' features; a kernel joins its measured row by its identity (passes.kernel_hash).
    """
    from tvmnas.measure.store import ProfileDB
    from tvmnas.cost.sampler import OpSpec

    with ProfileDB(Path(db_path), create=False) as db:
        measured = {k.kernel_hash: k for k in db.kernels(target)}
        candidates = db.candidates(target)
    if not measured:
        raise CostModelError(f"profile database '{db_path}' has no kernels measured on {target}")
    rows: dict[str, dict[str, Any]] = {}
    for i, cand in enumerate(candidates):
        if all(k[2] in rows for k in cand.kernel_list):
            continue
        spec = OpSpec.from_json(cand.params)
        lowered, graph = lower_model(import_model(spec.build(0), spec.input_shape))
        for name in sorted({c.kernel for c in graph.calls}):
            h = kernel_hash(lowered[name])
            if h in measured and h not in rows:
                m = measured[h]
                rows[h] = {"hash": h, "name": name, "features": kernel_features(lowered[name]),
                           "macs": kernel_macs(lowered[name]), "instructions": m.instructions, "cycles": m.cycles}
        progress(f"[{i + 1}/{len(candidates)}] {cand.candidate_key}: {len(rows)} kernels with features")
    return [rows[h] for h in sorted(rows)]


def load_kernel_rows(source: Path, target: str, precision: str = "float32") -> list[dict[str, Any]]:
    """Fit rows of `precision` from profile data (.json.gz, its 'fit' networks) or a profile
    database (SQLite; float32: its candidates are lowered again as float models)."""
    check_precision(precision)
    source = Path(source)
    if not source.is_file():
        raise CostModelError(f"profile source '{source}' does not exist")
    if source.name.endswith(".json.gz"):
        data = ProfileData.load(source)
        if data.precision != precision:
            raise CostModelError(f"profile data file '{source}' holds {data.precision} profiles, not {precision} "
                                 f"(the precision asked for)", settings=("precision",))
        return data.kernel_rows(target, split="fit")
    if precision != "float32":
        raise CostModelError(f"profile database '{source}': only float32 rows are read from a database; "
                             f"{precision} surrogates fit on network profile data (.json.gz)", settings=("precision",))
    return kernel_rows_from_db(source, target)
