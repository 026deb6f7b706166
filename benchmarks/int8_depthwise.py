"""int8 kernels of depthwise-heavy networks, side by side in one run: scalar, SIMD convolutions with
scalar depthwise (the SIMD path before the depthwise micro-kernel), and SIMD with the depthwise
micro-kernel (passes/int8_simd.py).

Each network is quantized by tvmnas's PTQ (16 seeded N(0, 1) calibration inputs) and profiled as a
whole on the target's emulator in the three configurations: instructions are exact, cycles
estimated from the core's timing table (not a board measurement). The depthwise layers (the calls
that the depthwise micro-kernel serves) are also summed on their own. Writes JSON and the
`int8_depthwise` section of RESULTS.md, prints the table; never passes or fails.

    python benchmarks/int8_depthwise.py [--nets mlperf_dscnn,mlperf_mobilenetv1_vww] [--target cortex-m4]

The middle configuration leaves depthwise convolutions on the scalar kernel by setting
`integer_kernels.DEPTHWISE_MAX_PAIRS` to 0 in this process (no depthwise layer then qualifies),
which reproduces the code the SIMD path generated before the depthwise micro-kernel existed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_MD, git_commit, replace_section  # noqa: E402

HERE = Path(__file__).resolve().parent
CALIBRATION_SAMPLES = 16
CONFIGS = ("scalar", "simd_conv", "simd_depthwise")


def build_model(name: str):
    """(torch module, input shape) of a test-zoo or public-zoo network."""
    from public_models import PUBLIC_MODELS

    from zoo import ZOO

    if name in ZOO:
        return ZOO[name].build(), ZOO[name].input_shape
    entry = PUBLIC_MODELS[name]
    return entry.build(seed=0), entry.input_shape


def profile(qdq: Path, target, config: str) -> dict:
    from tvmnas.measure.profiler import profile_network_json
    from tvmnas.passes import integer_kernels

    saved = integer_kernels.DEPTHWISE_MAX_PAIRS
    if config == "simd_conv":
        integer_kernels.DEPTHWISE_MAX_PAIRS = 0
    try:
        return profile_network_json(qdq, target, timeout_s=1200, simd=config != "scalar")
    finally:
        integer_kernels.DEPTHWISE_MAX_PAIRS = saved


def depthwise_layers(qdq: Path) -> set[int]:
    """Which of the network's MAC-carrying calls (counted in call order) the depthwise micro-kernel
    serves. Calls are matched by that ordinal: the configurations fuse element-wise calls
    differently (an opaque SIMD call fuses nothing), so call indices differ, but every conv and dense
    layer is one call in each."""
    from tvmnas.measure.profiler import lower_network
    from tvmnas.passes.int8_simd import DEPTHWISE_FUNCTION

    network = lower_network(qdq, simd=True)
    layers = [call for i, call in enumerate(network.graph.calls) if network.macs[i] > 0]
    return {k for k, call in enumerate(layers) if DEPTHWISE_FUNCTION + "(" in network.kernels[call.kernel].text}


def measure(name: str, target, work: Path) -> dict:
    import onnx

    from tvmnas.quant.quantize import quantize_model
    from tvmnas.model_file import export_onnx

    model, shape = build_model(name)
    path = export_onnx(model, shape, work / f"{name}.onnx")
    calibration = np.random.RandomState(0).randn(CALIBRATION_SAMPLES, *shape[1:]).astype(np.float32)
    qdq = work / f"{name}.qdq.onnx"
    onnx.save(quantize_model(path, calibration), str(qdq))
    dw = depthwise_layers(qdq)
    row: dict = {"network": name, "depthwise_layers": len(dw)}
    for config in CONFIGS:
        prof = profile(qdq, target, config)
        layers = [k for k in prof["kernels"] if k["macs"] > 0]
        kernels = [k for i, k in enumerate(layers) if i in dw]
        row[config] = {
            "instructions": prof["instructions"], "cycles": prof["cycles"], "macs": prof["macs"],
            "cycles_per_mac": prof["cycles"] / max(prof["macs"], 1),
            "depthwise_macs": sum(k["macs"] for k in kernels), "depthwise_cycles": sum(k["cycles"] for k in kernels),
            "depthwise_cycles_per_mac": sum(k["cycles"] for k in kernels) / max(sum(k["macs"] for k in kernels), 1),
        }
    return row


def render(result: dict, command: str) -> str:
    lines = [
        f"## int8 depthwise kernels: scalar vs SIMD ({result['target']}, commit {result['commit']})",
        "",
        f"`{command}`",
        "",
        "Each network quantized by tvmnas's PTQ (16 seeded N(0, 1) calibration inputs) and profiled whole on the "
        "emulator in one run per configuration: *scalar* (portable integer kernels), *SIMD conv* (SMLAD conv / dense "
        "micro-kernel, depthwise convolutions on the scalar kernel: the SIMD path before the depthwise micro-kernel), "
        "*SIMD conv + depthwise* (the depthwise micro-kernel too). Estimated cycles per MAC (cycles from the core's "
        "timing table, an estimate; instructions exact), for the whole network and for its depthwise layers alone.",
        "",
        "| network | MACs | depthwise layers (MACs) | scalar | SIMD conv | SIMD conv + depthwise | depthwise: scalar | depthwise: SIMD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        s, c, d = r["scalar"], r["simd_conv"], r["simd_depthwise"]
        lines.append(
            f"| {r['network']} | {s['macs']:,} | {r['depthwise_layers']} ({d['depthwise_macs']:,}) | "
            f"{s['cycles_per_mac']:.2f} | {c['cycles_per_mac']:.2f} | {d['cycles_per_mac']:.2f} | "
            f"{c['depthwise_cycles_per_mac']:.2f} | {d['depthwise_cycles_per_mac']:.2f} |")
    lines += ["", "Exact instructions per inference (scalar / SIMD conv / SIMD conv + depthwise): " + "; ".join(
        f"{r['network']} {r['scalar']['instructions']:,} / {r['simd_conv']['instructions']:,} / "
        f"{r['simd_depthwise']['instructions']:,}" for r in result["rows"]) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="mlperf_dscnn,mlperf_mobilenetv1_vww", help="comma-separated zoo names")
    parser.add_argument("--target", default="cortex-m4")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_depthwise.json")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the RESULTS.md section")
    args = parser.parse_args()

    from tvmnas.targets import load_target

    target = load_target(args.target)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-int8-dw-") as tmp:
        for name in args.nets.split(","):
            work = Path(tmp) / name
            work.mkdir()
            rows.append(measure(name, target, work))
            print(f"{name}: done", file=sys.stderr, flush=True)
    result = {"target": target.name, "commit": git_commit(), "calibration": f"{CALIBRATION_SAMPLES} seeded N(0,1)",
              "cycles_note": "estimated from the core's timing table, not measured on a board", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    section = render(result, "python benchmarks/int8_depthwise.py " + " ".join(sys.argv[1:]))
    if not args.no_write:
        replace_section("int8_depthwise", section, RESULTS_MD)
    print(section)


if __name__ == "__main__":
    main()
