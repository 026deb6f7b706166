"""Instruction mix of real kernels on the emulator: per-kernel features (tvmnas.board.features)
with the data reads from flash counted, for whole networks and for the stored profile data.

The flash region is read from the ELF itself (the sections the linker placed with the code), so
a firmware whose weights were moved to RAM reports no flash reads for them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tvmnas.board.features import Features, segment_features
from tvmnas.cost.gzip_text import gzip_bytes, read_text, replace_bytes
from tvmnas.errors import CostModelError, EmulatorError
from tvmnas.measure.blocks import BlockProfile, parse_block_profile
from tvmnas.measure.plugin import build_plugin, qemu_plugin_args
from tvmnas.measure.regions import flash_region
from tvmnas.measure.profile import DEFAULT_PLUGIN_CACHE, timing_table_for
from tvmnas.measure.runner import run
from tvmnas.measure.store import NetworkRow
from tvmnas.targets import Target

MIX_FORMAT = "tvmnas-kernel-mix"
MIX_VERSION = 1


def run_mix_profile(elf: Path, target: Target, inputs: Sequence[np.ndarray], *, timeout_s: float = 120.0,
                    cache_dir: Path = DEFAULT_PLUGIN_CACHE) -> BlockProfile:
    """Run a harness ELF (built with profile=True) on its inputs under the plugin, flash reads counted."""
    plugin_so = build_plugin(cache_dir)
    with tempfile.TemporaryDirectory(prefix="tvmnas-mix-") as tmp:
        out = Path(tmp) / "profile.txt"
        run(elf, target, list(inputs), timeout_s=timeout_s,
            qemu_extra_args=qemu_plugin_args(plugin_so, elf, out, region=flash_region(elf)))
        return parse_block_profile(out)


def kernel_features_of(blocks: BlockProfile, target: Target, window: int = -1) -> list[Features]:
    """Features of each kernel segment of one window (default: the last)."""
    one = blocks.window(window)
    feats = segment_features(one, timing_table_for(target))
    return [feats.get(k, {}) for k in range(one.kernels())]


def network_mix(genotype: Any, target: Target, *, seed: int = 0, timeout_s: float = 120.0) -> list[tuple[str, Features]]:
    """(kernel hash, features) of every call of a genotype's network, as cost.collect profiles it."""
    from tvmnas.cost.collect import lower_genotype
    from tvmnas.measure.profiler import profile_input, write_network
    from tvmnas.measure.runner import build

    network = lower_genotype(genotype, seed)
    graph = network.graph
    with tempfile.TemporaryDirectory(prefix="tvmnas-mix-net-") as tmp:
        prepared = write_network(network, target, Path(tmp) / "bundle")
        elf = build(prepared.bundle_dir, target, Path(tmp) / "build", profile=True)
        x = profile_input(prepared.input_floats, seed)
        feats = kernel_features_of(run_mix_profile(elf, target, [x], timeout_s=timeout_s), target)
    if len(feats) != len(graph.calls):
        raise EmulatorError(f"{len(feats)} kernel segments measured for {len(graph.calls)} calls")
    return [(network.hashes[c.kernel], f) for c, f in zip(graph.calls, feats)]


def load_mix(path: Path) -> dict[str, Any]:
    """A kernel-mix file: {format, version, target, networks: [names], kernels: {hash: features}}."""
    path = Path(path)
    if not path.is_file():
        raise CostModelError(f"kernel mix file '{path}' does not exist")
    try:
        doc = json.loads(read_text(path))
    except ValueError as err:
        raise CostModelError(f"kernel mix file '{path}' is not JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != MIX_FORMAT or doc.get("version") != MIX_VERSION:
        raise CostModelError(f"'{path}' is not a {MIX_FORMAT} file of version {MIX_VERSION}")
    return doc


def save_mix(path: Path, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    replace_bytes(path, gzip_bytes(text))


def collect_mix(networks: Sequence[NetworkRow], target: Target, path: Path, *,
                progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure the instruction mix of stored networks (profile store rows of `target`, in the order
    given) into `path`, resuming: networks already listed there are skipped, the file is rewritten
    after each one."""
    from tvmnas.search.genotype import Genotype

    doc = load_mix(path) if Path(path).is_file() else {
        "format": MIX_FORMAT, "version": MIX_VERSION, "target": target.name, "networks": [], "kernels": {}}
    if doc["target"] != target.name:
        raise CostModelError(f"kernel mix file '{path}' is for {doc['target']}, not {target.name}")
    for net in networks:
        if net.name in doc["networks"] or net.target != target.name:
            continue
        mix = network_mix(Genotype.from_json(net.genotype), target)
        if [h for h, _ in mix] != [h for _, h, _, _ in net.call_list]:
            progress(f"{net.name}: lowering differs from the stored profile; skipped")
            continue
        for h, f in mix:
            doc["kernels"].setdefault(h, f)
        doc["networks"].append(net.name)
        save_mix(path, doc)
        progress(f"{net.name}: {len(doc['kernels'])} kernels with their mix")
    return doc


__all__ = ["collect_mix", "kernel_features_of", "load_mix", "network_mix", "run_mix_profile", "save_mix"]
