"""Compiler figures for the test zoo, scheduled (ScheduleForMCU) and unscheduled side by side.

Per network: exact instructions and estimated cycles on QEMU, cycles per MAC, flash, the arena next
to its lower bound, the sum of every intermediate tensor, and what TVM's own planner reserves; the
max difference between scheduled and unscheduled outputs on the emulator. Writes JSON to
benchmarks/results/compiler_zoo.json and the `compiler_zoo` section of RESULTS.md; never fails.

    python benchmarks/compiler_zoo.py [--targets cortex-m4,cortex-m7] [--nets resnet8,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, replace_section  # noqa: E402

import torch  # noqa: E402

from tvmnas.compiler import compile_model, lower_model  # noqa: E402
from tvmnas.models import build_model  # noqa: E402
from tvmnas.search.genotype import Genotype  # noqa: E402
from tvmnas.frontend import import_model  # noqa: E402
from tvmnas.search.cost import count_module  # noqa: E402
from tvmnas.passes import stock_storage_bytes  # noqa: E402
from tvmnas.measure.profile import profile_elf  # noqa: E402
from tvmnas.measure.runner import build, run  # noqa: E402
from tvmnas.targets import load_target  # noqa: E402
from zoo import ZOO  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HEADLINE = ("resnet8", "mobilenetv2_tiny", "darts_cells")


def measure_variant(model, entry, target, schedule: bool, work: Path, x: np.ndarray) -> dict:
    """Compile, run and profile one network one way; outputs kept for the side-by-side check."""
    t0 = time.time()
    compiled = compile_model(model, target, work / "c", input_shape=entry.input_shape,
                             ignore_budget=True, schedule=schedule)
    compile_s = time.time() - t0
    elf = build(compiled.out_dir, target, work / "b")
    result = run(elf, target, [x], timeout_s=900)
    prof = profile_elf(elf, target, [x], timeout_s=900)
    m = compiled.manifest
    return {
        "instructions": result.instructions[0],
        "cycles_estimated": prof.cycles,
        "flash_bytes": m["flash_bytes"],
        "arena_bytes": m["arena_bytes"],
        "arena_lower_bound_bytes": m["arena_lower_bound_bytes"],
        "kernels": len(m["kernels"]),
        "compile_s": round(compile_s, 1),
        "output": result.outputs[0].tolist(),
    }


def tensor_figures(model, entry) -> dict:
    """Sum of all intermediate tensors, the live-tensor bound, and TVM's stock storage plan (unscheduled)."""
    lowered, graph = lower_model(import_model(model, entry.input_shape), schedule=False)
    io = {graph.inputs[0].name, graph.outputs[0].name}
    inter = {o for c in graph.calls for o in c.outputs if o not in io}
    last = {}
    for c in graph.calls:
        for a in c.args:
            last[a] = c.index
    live_peak = 0
    for c in graph.calls:
        live = sum(graph.tensors[t].nbytes for t in inter
                   if next(k.index for k in graph.calls if t in k.outputs) <= c.index <= last.get(t, c.index))
        live_peak = max(live_peak, live)
    return {
        "intermediates_sum_bytes": sum(graph.tensors[t].nbytes for t in inter),
        "live_tensor_bound_bytes": live_peak,
        "stock_tvm_storage_bytes": stock_storage_bytes(lowered),
    }


@dataclass(frozen=True)
class SearchedNetwork:
    """A network the search found, rebuilt from its genotype.json (cycles do not depend on weights)."""

    name: str
    input_shape: tuple[int, ...]
    genotype_path: Path

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(Genotype.load(self.genotype_path)).eval()

    def sample_input(self, seed: int = 0) -> torch.Tensor:
        return torch.from_numpy(np.random.RandomState(seed).randn(*self.input_shape).astype("float32"))


def searched_network(path: Path) -> SearchedNetwork:
    genotype = Genotype.load(path)
    return SearchedNetwork(f"searched:{path.stem}", (1, *genotype.input_shape), path)


def measure(nets: list[str], targets: list[str], save, genotypes: list[Path] = ()) -> dict:
    result = {"commit": git_commit(), "nets": {}, "targets": targets}
    entries = [ZOO[name] for name in nets] + [searched_network(p) for p in genotypes]
    for entry in entries:
        name = entry.name
        model = entry.build()
        x = entry.sample_input(0).numpy()
        row = {"macs": count_module(model, entry.input_shape[1:]).macs, **tensor_figures(model, entry)}
        for tname in targets:
            if tname != targets[0] and name not in HEADLINE and not name.startswith("searched:"):
                continue
            target = load_target(tname)
            variants = {}
            for schedule in (False, True):
                with tempfile.TemporaryDirectory() as tmp:
                    variants["scheduled" if schedule else "unscheduled"] = measure_variant(
                        model, entry, target, schedule, Path(tmp), x)
            a = np.array(variants["scheduled"].pop("output"))
            b = np.array(variants["unscheduled"].pop("output"))
            variants["max_abs_diff_over_scale"] = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
            row[tname] = variants
            print(f"{name} {tname}: {variants['unscheduled']['cycles_estimated']:,} -> "
                  f"{variants['scheduled']['cycles_estimated']:,} est. cycles", file=sys.stderr, flush=True)
        result["nets"][name] = row
        save(result)
    return result


def render(result: dict, command: str) -> str:
    t0 = result["targets"][0]
    searched = all(name.startswith("searched:") for name in result["nets"])
    what = "networks found by the search (rebuilt from their genotype.json)" if searched else "the test zoo"
    lines = [
        f"## Compiler on {what} ({t0}, commit {result['commit']})",
        "",
        f"`{command}`",
        "",
        "Instructions are exact (QEMU -icount); cycles are estimates from the core's timing table "
        "(targets/timing), not board measurements. MACs count conv and linear layers. "
        "`arena` is what the C bundle needs; `bound` is the most bytes live at any kernel (tensors + "
        "that kernel's scratch) under the same schedule; `tensors sum` lays every intermediate tensor end to "
        "end; `stock TVM` is StaticPlanBlockMemory's storage for the unscheduled kernels (their run-time "
        "workspace not included). `diff` is max |scheduled - unscheduled| / output scale on the emulator.",
        "",
        "| network | MACs | instr. unsched | instr. sched | est. cyc/MAC unsched | est. cyc/MAC sched | speed-up | "
        "flash B | arena sched | bound sched | arena unsched | tensors sum | live tensors | stock TVM | diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["nets"].items():
        if t0 not in row:
            continue
        u, s = row[t0]["unscheduled"], row[t0]["scheduled"]
        macs = max(row["macs"], 1)
        lines.append(
            f"| {name} | {row['macs']:,} | {u['instructions']:,} | {s['instructions']:,} | "
            f"{u['cycles_estimated'] / macs:.2f} | {s['cycles_estimated'] / macs:.2f} | "
            f"{u['cycles_estimated'] / s['cycles_estimated']:.2f}x | {s['flash_bytes']:,} | {s['arena_bytes']:,} | "
            f"{s['arena_lower_bound_bytes']:,} | {u['arena_bytes']:,} | {row['intermediates_sum_bytes']:,} | "
            f"{row['live_tensor_bound_bytes']:,} | {row['stock_tvm_storage_bytes']:,} | "
            f"{row[t0]['max_abs_diff_over_scale']:.1e} |"
        )
    others = [t for t in result["targets"][1:]]
    for tname in others:
        lines += ["", f"Same networks on {tname} (estimated cycles per MAC):", "",
                  "| network | unscheduled | scheduled | speed-up |", "|---|---|---|---|"]
        for name, row in result["nets"].items():
            if tname in row:
                u, s = row[tname]["unscheduled"], row[tname]["scheduled"]
                macs = max(row["macs"], 1)
                lines.append(f"| {name} | {u['cycles_estimated'] / macs:.2f} | {s['cycles_estimated'] / macs:.2f} | "
                             f"{u['cycles_estimated'] / s['cycles_estimated']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="cortex-m4,cortex-m7")
    parser.add_argument("--nets", default=",".join(sorted(ZOO)))
    parser.add_argument("--genotypes", default="", help="comma-separated genotype.json files found by the search")
    parser.add_argument("--section", default="compiler_zoo", help="RESULTS.md section and results/<name>.json")
    args = parser.parse_args()
    command = "python benchmarks/compiler_zoo.py " + " ".join(sys.argv[1:])
    out_json = RESULTS_DIR / f"{args.section}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict) -> None:
        out_json.write_text(json.dumps(result, indent=1) + "\n")
        replace_section(args.section, render(result, command.strip()))

    genotypes = [Path(p) for p in args.genotypes.split(",") if p]
    nets = [n for n in args.nets.split(",") if n]
    result = measure(nets, args.targets.split(","), save, genotypes)
    print(render(result, command.strip()))


if __name__ == "__main__":
    main()
