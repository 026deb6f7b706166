"""The four MLPerf Tiny architectures, int8 vs float32 on cortex-m4, m7 and m33, side by side in one run.

ResNet-8 (3x32x32), DS-CNN (KWS, 1x49x10), MobileNetV1-0.25 (VWW, 3x96x96) and the FC autoencoder
(640 inputs), from the public-architecture zoo (benchmarks/public_models/mlperf_tiny.py, seeded
weights), exported to ONNX; per target three builds: float32, int8 with the portable scalar
kernels, int8 with the SIMD micro-kernels (the default on these cores). int8 is `--quantize int8`
on 16 seeded N(0,1) calibration inputs, quantized once per network. Each cell is
`int8_vs_float32.measure` (compile for flash and arena, profile the whole network on the target's
emulator: instructions exact, cycles estimated from the core's timing table, not a board).

Resumable: each finished cell is kept in --cache (JSON lines) and not measured again; --force
remeasures. Writes the table and the command into benchmarks/RESULTS.md (section mlperf_tiny).

    nice -n 5 python benchmarks/mlperf_tiny.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, replace_section  # noqa: E402
from int8_vs_float32 import CALIBRATION_SAMPLES, measure  # noqa: E402
from public_models import PUBLIC_MODELS  # noqa: E402

HERE = Path(__file__).resolve().parent
NETS = {  # zoo name -> label, MACs in the MLPerf Tiny paper
    "mlperf_resnet8": "ResNet-8",
    "mlperf_dscnn": "DS-CNN",
    "mlperf_mobilenetv1_vww": "MobileNetV1-0.25 VWW",
    "mlperf_fc_autoencoder": "FC autoencoder",
}
TARGETS = ("cortex-m4", "cortex-m33", "cortex-m7")
BUILDS = ("float32", "int8_scalar", "int8_simd")


def cell_key(target: str, net: str, build: str) -> str:
    return f"{target}/{net}/{build}"


def load_cache(path: Path) -> dict[str, dict]:
    """Finished cells by key (the last line for a key wins)."""
    cells = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                cells[row["key"]] = row
    return cells


def prepare(net: str, work: Path) -> tuple[Path, Path]:
    """The network's float ONNX and its calibration inputs (seeded), written once per run."""
    from tvmnas.model_file import export_onnx

    entry = PUBLIC_MODELS[net]
    onnx_path = work / f"{net}.onnx"
    calibration = work / f"{net}_calibration.npy"
    if not onnx_path.exists():
        export_onnx(entry.build(), entry.input_shape, onnx_path)
        samples = np.random.RandomState(0).randn(CALIBRATION_SAMPLES, *entry.input_shape[1:])
        np.save(calibration, samples.astype(np.float32))
    return onnx_path, calibration


def measure_cell(net: str, build: str, target, work: Path) -> dict:
    """One build of one network on one target (see the module docstring)."""
    onnx_path, calibration = prepare(net, work)
    out = work / f"{target.name}_{net}_{build}"
    if build == "float32":
        return measure(onnx_path, target, out)
    quantize = dict(quantize="int8", calibration=calibration)
    return measure(onnx_path, target, out, simd=build == "int8_simd", **quantize)


def ratio(a, b) -> str:
    return f"{a / b:.3f}" if a and b else "-"


def table(cells: dict[str, dict], targets, nets) -> str:
    """Markdown: one row per (target, network, build), then the int8 SIMD / float32 ratios."""
    lines = [
        "| target | network | build | kernels | instructions | est. cycles | est. cyc/MAC | flash B | arena B "
        "| bound in place B | bound without B |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = ["| target | network | int8 SIMD / float32: est. cycles | flash | arena | bound without in place |",
              "|---|---|---|---|---|---|"]
    for t in targets:
        for n in nets:
            row = {b: cells.get(cell_key(t, n, b)) for b in BUILDS}
            for b in BUILDS:
                c = row[b]
                if c is None:
                    lines.append(f"| {t} | {NETS[n]} | {b} | not run | | | | | | | |")
                elif "error" in c:
                    lines.append(f"| {t} | {NETS[n]} | {b} | failed: {c['error'][:120]} | | | | | | | |")
                else:
                    r = c["result"]
                    lines.append(
                        f"| {t} | {NETS[n]} | {b} | {r['kernels']} | {r['instructions']:,} | {r['cycles']:,} | "
                        f"{r['cycles_per_mac']:.2f} | {r['flash_bytes']:,} | {r['arena_bytes']:,} | "
                        f"{r['arena_bound_bytes']:,} | {r['arena_bound_without_in_place_bytes']:,} |")
            f, q = row["float32"], row["int8_simd"]
            if f and q and "result" in f and "result" in q:
                f, q = f["result"], q["result"]
                ratios.append(f"| {t} | {NETS[n]} | {ratio(q['cycles'], f['cycles'])} | "
                              f"{ratio(q['flash_bytes'], f['flash_bytes'])} | {ratio(q['arena_bytes'], f['arena_bytes'])} | "
                              f"{ratio(q['arena_bytes'], f['arena_bound_without_in_place_bytes'])} |")
    return "\n".join(lines) + "\n\n" + "\n".join(ratios)


def targets_summary(cells: dict[str, dict]) -> str:
    """The issue's ResNet-8 targets on cortex-m4 against what this run measured."""
    f, q = (cells.get(cell_key("cortex-m4", "mlperf_resnet8", b)) for b in ("float32", "int8_simd"))
    if not (f and q and "result" in f and "result" in q):
        return ""
    f, q = f["result"], q["result"]
    return (
        "ResNet-8 on cortex-m4 against the targets of the int8 issue: int8 SIMD "
        f"{q['cycles_per_mac']:.2f} estimated cycles/MAC (target <= 2.0); flash {q['flash_bytes']:,} B = "
        f"{q['flash_bytes'] / f['flash_bytes']:.4f}x float32 (target <= 0.3); arena {q['arena_bytes']:,} B = "
        f"{q['arena_bytes'] / f['arena_bytes']:.3f}x the float32 arena with in-place kernels ({f['arena_bytes']:,} B), "
        f"{q['arena_bytes'] / f['arena_bound_without_in_place_bytes']:.3f}x the float32 bound without them "
        f"({f['arena_bound_without_in_place_bytes']:,} B) (target <= 0.3)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--cache", type=Path, default=HERE / "results" / "mlperf_tiny.jsonl")
    parser.add_argument("--force", action="store_true", help="remeasure cells already in the cache")
    parser.add_argument("--no-results-md", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args()

    from tvmnas.targets import load_target

    targets, nets = args.targets.split(","), args.nets.split(",")
    cells = {} if args.force else load_cache(args.cache)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tvmnas-mlperf-") as tmp:
        for t in targets:
            target = load_target(t)
            for n in nets:
                for b in BUILDS:
                    key = cell_key(t, n, b)
                    if key in cells:
                        continue
                    print(f"measuring {key}", file=sys.stderr, flush=True)
                    try:
                        row = {"key": key, "commit": git_commit(), "result": measure_cell(n, b, target, Path(tmp))}
                    except Exception as err:  # a benchmark records a failing cell and goes on
                        row = {"key": key, "commit": git_commit(), "error": f"{type(err).__name__}: {err}".splitlines()[0],
                               "traceback": traceback.format_exc()}
                    cells[key] = row
                    with args.cache.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    text = table(cells, targets, nets)
    print(text)
    if not args.no_results_md:
        commits = sorted({c["commit"] for c in cells.values()})
        body = (
            f"## MLPerf Tiny architectures, int8 vs float32 on cortex-m4, m33 and m7 (commit {', '.join(commits)})\n\n"
            "`nice -n 5 python benchmarks/mlperf_tiny.py`\n\n"
            f"{__doc__.split(chr(10) + chr(10))[1]}\n\n"
            "Each cell records the HEAD it was measured at; a cell measured later by the same process ran the "
            "code that process imported when it started (the first commit listed).\n\n"
            "Instructions are exact (QEMU -icount); cycles are estimates from each core's timing table, not board "
            "measurements. `arena` is the planned arena with in-place kernels (passes/in_place.py); `bound in place` "
            "is the most bytes live at any kernel when proven-safe kernels write over a dying input; `bound without` "
            "is the same with every tensor in its own bytes (the planner's bound before in-place planning).\n\n" + text
            + "\n\n" + targets_summary(cells)
        )
        replace_section("mlperf_tiny", body)


if __name__ == "__main__":
    main()
