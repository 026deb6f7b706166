"""What makes up a network's flash, float32 vs int8 (SIMD kernels), side by side in one run.

Each network (default: MLPerf Tiny ResNet-8 from the public-architecture zoo, seeded weights) is
compiled twice by `compile_model` for the target: float32, and `--quantize int8` on the same 16 seeded
N(0,1) calibration inputs as benchmarks/mlperf_tiny.py with the SIMD micro-kernels. Flash is what the
compiler counts (`.text`, `.rodata`, `.data` of model.o and model_weights.o at the target's flags);
the weights file is split by the element type of each array model_weights.h declares, and the code
is model.o's sections (`arm-none-eabi-size -A`). Writes the table into benchmarks/RESULTS.md (section
int8_flash_resnet8).

    nice -n 5 python benchmarks/int8_flash_parts.py
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, replace_section  # noqa: E402
from mlperf_tiny import prepare  # noqa: E402

ELEMENT_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "float": 4, "uint32_t": 4}
DECLARATION = re.compile(r"extern const (\w+) (\w+)\[(\d+)\];")


def weight_bytes_by_type(bundle: Path) -> dict[str, int]:
    """Bytes of the weight arrays, by C element type (as model_weights.h declares them)."""
    parts: dict[str, int] = {}
    for ctype, _, count in DECLARATION.findall((bundle / "model_weights.h").read_text()):
        parts[ctype] = parts.get(ctype, 0) + int(count) * ELEMENT_BYTES[ctype]
    return parts


def flash_parts(net: str, target, work: Path) -> dict[str, dict]:
    """{build: {code, weights file, weights by type, total, manifest flash}} for float32 and int8 SIMD."""
    from tvmnas.compiler import compile_model, flash_bytes_by_file

    onnx_path, calibration = prepare(net, work)
    builds = {"float32": {}, "int8 SIMD": dict(quantize="int8", calibration=calibration, simd=True)}
    parts = {}
    for build, args in builds.items():
        out = work / build.replace(" ", "_")
        manifest = compile_model(onnx_path, target, out, ignore_budget=True, **args).manifest
        sizes = flash_bytes_by_file(out, target)
        code, weights = sizes["model.c"], sizes["model_weights.c"]
        parts[build] = {"code": code, "weights_file": weights, "by_type": weight_bytes_by_type(out),
                        "total": code + weights, "manifest_flash": manifest["flash_bytes"]}
    return parts


def table(net: str, target: str, parts: dict[str, dict]) -> str:
    f, q = parts["float32"], parts["int8 SIMD"]
    rows = [("weights (float32 arrays / int8 arrays)", f["by_type"].get("float", 0), q["by_type"].get("int8_t", 0)),
            ("per-channel int32 tables (int8: bias, multiplier, shift)", f["by_type"].get("int32_t", 0),
             q["by_type"].get("int32_t", 0)),
            ("model_weights.o, as compiled", f["weights_file"], q["weights_file"]),
            ("code and tables of model.o", f["code"], q["code"]),
            ("total flash", f["total"], q["total"])]
    lines = [f"| {net} on {target} | float32 B | int8 SIMD B | int8 / float32 |", "|---|---|---|---|"]
    for label, a, b in rows:
        ratio = f"{b / a:.3f}" if a and b else "-"
        lines.append(f"| {label} | {a:,} | {b:,} | {ratio} |")
    lines.append("")
    lines.append(f"The compiler's own flash figure (manifest `flash_bytes`): float32 {f['manifest_flash']:,} B, "
                 f"int8 SIMD {q['manifest_flash']:,} B. Code is {q['code'] / q['total']:.0%} of the int8 build's "
                 f"flash and {f['code'] / f['total']:.0%} of float32's.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mlperf_resnet8", help="public-zoo network")
    parser.add_argument("--target", default="cortex-m4")
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md as it is")
    args = parser.parse_args()
    from tvmnas.targets import load_target

    target = load_target(args.target)
    with tempfile.TemporaryDirectory(prefix="tvmnas-flash-") as tmp:
        parts = flash_parts(args.net, target, Path(tmp))
    body = table(args.net, target.name, parts)
    print(body)
    if not args.no_results:
        command = "nice -n 5 python benchmarks/int8_flash_parts.py" + (
            f" --net {args.net}" if args.net != "mlperf_resnet8" else "") + (
            f" --target {args.target}" if args.target != "cortex-m4" else "")
        replace_section("int8_flash_resnet8", f"## What makes up int8 {args.net}'s flash ({target.name}, SIMD kernels, "
                        f"commit {git_commit()})\n\n`{command}`\n\n{__doc__.split(chr(10) + chr(10))[1]}\n\n{body}")


if __name__ == "__main__":
    main()
