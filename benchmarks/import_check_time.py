"""What the import check costs: `compile_model` wall time with and without it, side by side.

Per network and route (.onnx, .pt2): compiles alternate between import_check on and off, `--runs`
times each, and the median of each is reported with their difference; the check alone
(`check_import` on the imported model) is timed `--runs` times as well, since the difference of two
compiles on a loaded machine is noisy. Timings are wall-clock, other load included.
Writes benchmarks/results/import_check_time.json (resumed: runs already there are kept, `--restart`
drops them) and the `import_check_time` section of RESULTS.md; never fails.

    python benchmarks/import_check_time.py [--nets resnet8,mobilenetv2_tiny,darts_cells] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, replace_section  # noqa: E402

from tvmnas.compiler import compile_model  # noqa: E402
from tvmnas.frontend import import_source  # noqa: E402
from tvmnas.import_check import check_import  # noqa: E402
from tvmnas.targets import load_target  # noqa: E402
from tvmnas.model_file import export_onnx, export_pt2  # noqa: E402
from zoo import ZOO  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "import_check_time.json"
NETS = ("resnet8", "mobilenetv2_tiny", "darts_cells")
ROUTES = (".onnx", ".pt2")
TARGET = "cortex-m4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--restart", action="store_true", help="drop the runs already recorded")
    args = parser.parse_args()
    nets = args.nets.split(",")
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() and not args.restart else {}
    if not data:
        data = {"commits": [], "target": TARGET, "cpus": os.cpu_count(), "times": {}}
    if git_commit() not in data["commits"]:
        data["commits"].append(git_commit())
    target = load_target(TARGET)
    with tempfile.TemporaryDirectory() as tmp:
        for name in nets:
            entry = ZOO[name]
            for route in ROUTES:
                model = Path(tmp) / f"{name}{route}"
                (export_onnx if route == ".onnx" else export_pt2)(entry.build(), entry.input_shape, model)
                for _ in range(args.runs):
                    for check in (True, False):
                        key = f"{name}{route} {'check' if check else 'no-check'}"
                        times = data["times"].setdefault(key, [])
                        if len(times) >= args.runs:
                            continue
                        t0 = time.perf_counter()
                        compile_model(model, target, Path(tmp) / "out", ignore_budget=True, import_check=check)
                        times.append(round(time.perf_counter() - t0, 2))
                        print(f"{key}: {times[-1]:.1f} s", file=sys.stderr, flush=True)
                        RESULTS.parent.mkdir(exist_ok=True)
                        RESULTS.write_text(json.dumps(data, indent=1) + "\n")
                alone = data["times"].setdefault(f"{name}{route} check alone", [])
                imported = import_source(model) if len(alone) < args.runs else None
                while len(alone) < args.runs:
                    t0 = time.perf_counter()
                    check_import(imported)
                    alone.append(round(time.perf_counter() - t0, 2))
                    print(f"{name}{route} check alone: {alone[-1]:.1f} s", file=sys.stderr, flush=True)
                    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    write_table(data, nets, args.runs)


def write_table(data: dict, nets: list[str], runs: int) -> None:
    rows = []
    for name in nets:
        for route in ROUTES:
            on = data["times"].get(f"{name}{route} check", [])
            off = data["times"].get(f"{name}{route} no-check", [])
            alone = data["times"].get(f"{name}{route} check alone", [])
            if not on or not off or not alone:
                continue
            a, b, c = statistics.median(on), statistics.median(off), statistics.median(alone)
            rows.append(f"| {name} | {route} | {b:.1f} | {a:.1f} | {a - b:+.1f} | {c:.1f} | {100 * c / b:.0f}% |")
    body = "\n".join([
        f"## Import check: time added to a compile ({data['target']}, commit {', '.join(data['commits'])})",
        "",
        f"`python benchmarks/import_check_time.py --runs {runs}`",
        "",
        "`tvmnas compile` runs the imported Relax module on the host (TVM's LLVM back end, -O0, Relax VM) "
        "on one seeded input and compares it with PyTorch / onnxruntime before the MCU passes "
        "(`--no-import-check` skips it). Wall-clock seconds for `compile_model`, median of "
        f"{runs} runs each, on and off alternating, and the check alone (`check_import`: host build, "
        f"run, reference run), on a machine with {data['cpus']} CPUs shared with other jobs (their load "
        "varied during the runs: the difference of two compile medians is noisy, the check alone is the "
        "better figure; it was timed after the compiles, under whatever load there was then). `share` is "
        "the check alone over the median compile without it.",
        "",
        "| network | route | compile s, no check | compile s, check | difference s | check alone s | share |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])
    replace_section("import_check_time", body)
    print(body)


if __name__ == "__main__":
    main()
