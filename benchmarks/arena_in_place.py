"""The arena with and without in-place kernels, for every test-zoo network and the MLPerf Tiny
architectures, float32 and int8, as the compiler plans it for one target.

Each network is exported to ONNX, lowered and printed as `compile_model` does (float32, and int8
quantized by `quantize_model` on 8 seeded N(0,1) calibration inputs, with the target's default
int8 kernels: SIMD on cores with the DSP extension), and planned twice with the same kernels:
every tensor in its own bytes, and with kernels writing over an input that dies there where
passes/in_place.py proves it safe. For each plan: the arena and the bound (the most bytes live at
any kernel, kernel scratch included). Planning only: nothing is built or run (the QEMU tests check
the in-place C).

Resumable: finished (network, precision) rows are kept in --cache (JSON lines); --force remeasures.
Writes the table and the command into benchmarks/RESULTS.md (section arena_in_place).

    nice -n 5 python benchmarks/arena_in_place.py
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

HERE = Path(__file__).resolve().parent
CALIBRATION_SAMPLES = 8
MLPERF = ("mlperf_resnet8", "mlperf_dscnn", "mlperf_mobilenetv1_vww", "mlperf_fc_autoencoder")


def network(name: str):
    """(module, input shape) of a test-zoo or public-zoo network."""
    from zoo import ZOO

    if name in ZOO:
        return ZOO[name].build(), ZOO[name].input_shape
    from public_models import PUBLIC_MODELS

    return PUBLIC_MODELS[name].build(), PUBLIC_MODELS[name].input_shape


def plan_both(model: Path, simd: bool) -> dict:
    """Arena and bound without and with in-place kernels, same lowering and kernels."""
    from tvmnas.compiler import emit_kernels, lower_model, plan_model_arena
    from tvmnas.frontend import import_model
    from tvmnas.quantized import integer_model

    mod, quantization = integer_model(import_model(model))
    lowered, graph = lower_model(mod, simd=simd and quantization is not None)
    kernels = emit_kernels(lowered, graph, in_place=True)
    off, _ = plan_model_arena(lowered, graph, kernels, in_place=False)
    on, _ = plan_model_arena(lowered, graph, kernels, in_place=True)
    return {
        "arena_without_bytes": off.plan.arena_bytes, "bound_without_bytes": off.plan.lower_bound_bytes,
        "arena_in_place_bytes": on.plan.arena_bytes, "bound_in_place_bytes": on.plan.lower_bound_bytes,
        "in_place_calls": len(on.plan.aliases), "calls": len(graph.calls),
    }


def measure(name: str, precision: str, simd: bool, work: Path) -> dict:
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    module, shape = network(name)
    path = work / f"{name}.onnx"
    if not path.exists():
        export_onnx(module, shape, path)
    if precision == "int8":
        calibration = np.random.RandomState(0).randn(CALIBRATION_SAMPLES, *shape[1:]).astype(np.float32)
        qdq = work / f"{name}_int8.onnx"
        qdq.write_bytes(quantize_model(path, calibration).SerializeToString())
        path = qdq
    return plan_both(path, simd)


def table(rows: list[dict]) -> str:
    lines = ["| network | precision | arena without B | bound without B | arena in place B | bound in place B "
             "| in-place calls | arena in place / without |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['network']} | {r['precision']} | failed: {r['error'][:100]} | | | | | |")
            continue
        lines.append(
            f"| {r['network']} | {r['precision']} | {r['arena_without_bytes']:,} | {r['bound_without_bytes']:,} | "
            f"{r['arena_in_place_bytes']:,} | {r['bound_in_place_bytes']:,} | {r['in_place_calls']} / {r['calls']} | "
            f"{r['arena_in_place_bytes'] / max(r['arena_without_bytes'], 1):.3f} |")
    return "\n".join(lines)


def main() -> None:
    from zoo import ZOO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="networks (default: the test zoo and the MLPerf Tiny four)")
    parser.add_argument("--target", default="cortex-m4", help="its DSP extension picks the int8 kernels")
    parser.add_argument("--cache", type=Path, default=HERE / "results" / "arena_in_place.jsonl")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--no-results-md", action="store_true")
    args = parser.parse_args()

    from tvmnas.targets import load_target

    target = load_target(args.target)
    names = args.names or [*sorted(ZOO), *MLPERF]
    done = {}
    if args.cache.exists() and not args.force:
        for line in args.cache.read_text().splitlines():
            row = json.loads(line)
            done[(row["network"], row["precision"], row["target"])] = row
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-arena-") as tmp:
        for name in names:
            for precision in ("float32", "int8"):
                key = (name, precision, target.name)
                if key not in done:
                    print(f"planning {name} {precision}", file=sys.stderr, flush=True)
                    row = {"network": name, "precision": precision, "target": target.name, "commit": git_commit()}
                    try:
                        row.update(measure(name, precision, target.dsp, Path(tmp)))
                    except Exception as err:  # a benchmark records the failure and goes on
                        row["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
                        row["traceback"] = traceback.format_exc()
                    done[key] = row
                    with args.cache.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                rows.append(done[key])
    text = table(rows)
    print(text)
    if not args.no_results_md:
        commits = ", ".join(sorted({r["commit"] for r in rows}))
        body = (f"## Arena with and without in-place kernels ({target.name} kernels, commit {commits})\n\n"
                f"`nice -n 5 python benchmarks/arena_in_place.py`\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\n{text}")
        replace_section("arena_in_place", body)


if __name__ == "__main__":
    main()
