"""int8 vs float32 builds of the same zoo network, side by side in one run.

For each network: the float32 ONNX export compiled as is, and the same model quantized by
`tvmnas compile --quantize int8` (post-training, on seeded random calibration inputs) compiled to
integer-only kernels, once with the portable scalar kernels and, on a core with the DSP extension
(descriptor "dsp": true), once with the SIMD micro-kernels (SMLAD / SXTB16, passes/int8_simd.py).
All are profiled on the target's emulator in the same run (instructions
exact, cycles estimated from the core's timing table: an estimate, not a board measurement);
flash (code + constants, compiled objects) and arena come from the bundles' manifests.
Writes JSON, prints a table; never passes or fails.

    python benchmarks/int8_vs_float32.py --nets resnet8 --target cortex-m4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit  # noqa: E402

HERE = Path(__file__).resolve().parent
CALIBRATION_SAMPLES = 16


def measure(model: Path, target, work: Path, simd: bool = False, **compile_args) -> dict:
    """Compile (flash, arena) and profile (instructions, estimated cycles, MACs) one model."""
    from tvmnas.compiler import compile_model
    from tvmnas.measure.profiler import profile_network_json

    manifest = compile_model(model, target, work, ignore_budget=True, simd=simd, **compile_args).manifest
    profiled = model if not compile_args else work / "quantized.onnx"
    prof = profile_network_json(profiled, target, timeout_s=1200, simd=simd)
    return {
        "precision": manifest["precision"],
        "kernels": manifest.get("int8_kernels", "float"),
        "flash_bytes": manifest["flash_bytes"],
        "weights_bytes": manifest["weights_bytes"],
        "arena_bytes": manifest["arena_bytes"],
        "arena_bound_bytes": manifest["arena_lower_bound_bytes"],
        "arena_bound_without_in_place_bytes": manifest["arena_lower_bound_without_in_place_bytes"],
        "instructions": prof["instructions"],
        "cycles": prof["cycles"],
        "macs": prof["macs"],
        "cycles_per_mac": prof["cycles"] / max(prof["macs"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="resnet8", help="comma-separated zoo names")
    parser.add_argument("--target", default="cortex-m4")
    parser.add_argument("--no-simd", action="store_true",
                        help="skip the SIMD int8 build (measured by default where the target has the DSP extension)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_vs_float32.json")
    args = parser.parse_args()

    from tvmnas.targets import load_target
    from tvmnas.model_file import export_onnx
    from zoo import ZOO

    target = load_target(args.target)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-int8-bench-") as tmp:
        for name in args.nets.split(","):
            entry = ZOO[name]
            work = Path(tmp) / name
            work.mkdir()
            onnx_path = export_onnx(entry.build(), entry.input_shape, work / f"{name}.onnx")
            calibration = np.random.RandomState(0).randn(CALIBRATION_SAMPLES, *entry.input_shape[1:])
            np.save(work / "calibration.npy", calibration.astype(np.float32))
            quantize = dict(quantize="int8", calibration=work / "calibration.npy")
            row = {"network": name, "float32": measure(onnx_path, target, work / "float32"),
                   "int8": measure(onnx_path, target, work / "int8", **quantize)}
            if target.dsp and not args.no_simd:
                row["int8_simd"] = measure(onnx_path, target, work / "int8_simd", simd=True, **quantize)
            rows.append(row)
            f32 = row["float32"]
            print(f"{name} on {target.name} (cycles are estimates from the timing table)", file=sys.stderr)
            print(f"  {'':10} {'kernels':>8} {'instructions':>13} {'est. cycles':>12} {'cyc/MAC':>8} {'flash B':>9} "
                  f"{'arena B':>9}")
            for label in ("float32", "int8", "int8_simd"):
                if label not in row:
                    continue
                r = row[label]
                print(f"  {label:10} {r['kernels']:>8} {r['instructions']:>13,} {r['cycles']:>12,} "
                      f"{r['cycles_per_mac']:>8.2f} {r['flash_bytes']:>9,} {r['arena_bytes']:>9,}")
            for label in ("int8", "int8_simd"):
                if label in row:
                    r = row[label]
                    print(f"  {label}/float32: cycles {r['cycles'] / f32['cycles']:.2f}, flash "
                          f"{r['flash_bytes'] / f32['flash_bytes']:.2f}, arena {r['arena_bytes'] / f32['arena_bytes']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"target": target.name, "commit": git_commit(), "calibration": f"{CALIBRATION_SAMPLES} seeded N(0,1)",
              "cycles_note": "estimated from the core's timing table, not measured on a board", "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
