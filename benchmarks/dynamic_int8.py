"""int8 vs float32 dynamic bundles of one selection, side by side.

For a selection folder (`tvmnas dynamic select --out SEL`), builds the float32 bundle, the int8
bundle (SIMD micro-kernels where the target has the DSP extension and a weight slice is contiguous)
and the int8 bundle with scalar kernels only, plus each configuration compiled alone as int8
(`compile_model(..., quantize="int8")` on the same calibration samples: what K separate int8 models
would cost). Then runs every configuration of the bundles on QEMU over the first N test images of
the selection's data set: the int8 output against the integer reference (LSBs), its class against
the float sub-network's, accuracies and exact instructions.

Prints one JSON object and a markdown table; never fails on a figure. Bundles are kept under --work
and reused when present (a rerun resumes). Example (digits, about 10 CPU minutes):
  tvmnas dynamic train --dataset digits --epochs 8 --out SUP
  tvmnas dynamic select SUP --k 4 --target cortex-m4 --candidates 16 --out SEL
  python benchmarks/dynamic_int8.py SEL --images 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, replace_section  # noqa: E402


def bundle(work: Path, name: str, build) -> dict:
    """The manifest of work/name, built by `build(out)` unless it is there already."""
    out = work / name
    if not (out / "manifest.json").is_file():
        build(out)
    return json.loads((out / "manifest.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("selection", type=Path)
    ap.add_argument("--target", default=None, help="default: the selection's target")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent.parent / "build" / "dynamic_int8")
    ap.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md as it is")
    args = ap.parse_args()

    from tvmnas.compiler import compile_model
    from tvmnas.data import load_dataset
    from tvmnas.dynamic.compile import compile_dynamic
    from tvmnas.dynamic.export import export_subnet
    from tvmnas.dynamic.quantize import quantize_shared, quantize_subnetwork
    from tvmnas.dynamic.select import load_selection
    from tvmnas.measure.runner import build, run
    from tvmnas.quant.reference import ReferenceModel
    from tvmnas.quantized import quantize_array
    from tvmnas.targets import load_target

    sel = load_selection(args.selection)
    target = load_target(args.target or sel.meta["target"])
    calib = np.load(sel.calibration)
    work = args.work / target.name
    work.mkdir(parents=True, exist_ok=True)
    common = dict(accuracies=[e["holdout_acc"] for e in sel.entries], cycles=[int(e["cycles"]) for e in sel.entries])

    def dynamic(precision: str, simd: bool | None = None):
        extra = {} if precision == "float32" else {"calibration": calib, "simd": simd}
        return lambda out: compile_dynamic(sel.subnets, sel.shared, sel.spec.input_shape, target, out,
                                           precision=precision, **common, **extra)

    manifests = {"float32": bundle(work, "float32", dynamic("float32")),
                 "int8": bundle(work, "int8", dynamic("int8")),
                 "int8_scalar": bundle(work, "int8_scalar", dynamic("int8", simd=False))}
    alone = []
    for k in range(len(sel.subnets)):
        exported = work / f"export_{k}"
        if not (exported / "model.onnx").is_file():
            export_subnet(args.selection, k, exported)
        alone.append(bundle(work, f"alone_int8_{k}", lambda out, m=exported / "model.onnx": compile_model(
            m, target, out, quantize="int8", calibration=calib)))

    data = load_dataset(sel.meta["dataset"])
    x, y = data.test_x[:args.images], data.test_y[:args.images]
    quantized = quantize_shared(sel.shared)
    refs = [ReferenceModel(quantize_subnetwork(s, sel.shared, quantized, sel.spec.input_shape, calib))
            for s in sel.subnets]
    inp = manifests["int8"]["inputs"][0]
    xq = [quantize_array(v, inp["scale"], inp["zero_point"]).astype(np.float32) for v in x]
    elfs = {name: build(work / name, target, work / "build" / name) for name in manifests}
    configs = []
    for k, sub in enumerate(sel.subnets):
        with torch.no_grad():
            fl = sub(torch.from_numpy(x)).numpy()
        row = {"config": k, "float32_acc": float((fl.argmax(1) == y).mean())}
        res = run(elfs["float32"], target, list(x), configs=[k] * len(x), timeout_s=600)
        row["float32_instructions"] = int(np.mean(res.instructions))
        expected = np.stack([refs[k].run_int8(v.astype(np.int8)[None])[0].ravel() for v in xq]).astype(np.int64)
        for name in ("int8", "int8_scalar"):
            res = run(elfs[name], target, xq, configs=[k] * len(x), timeout_s=600)
            got = np.stack(res.outputs).astype(np.int64)
            row[f"{name}_max_lsb_vs_reference"] = int(np.abs(got - expected).max())
            row[f"{name}_instructions"] = int(np.mean(res.instructions))
            if name == "int8":
                row["int8_acc"] = float((got.argmax(1) == y).mean())
                row["int8_same_class_as_float"] = int((got.argmax(1) == fl.argmax(1)).sum())
        configs.append(row)
    figures = ("flash_bytes", "weights_bytes", "shared_weights_bytes", "private_weights_bytes", "arena_bytes")
    report = {
        "target": target.name, "selection": str(args.selection), "images": len(x),
        "bundles": {name: {f: m[f] for f in figures} | {"int8_kernels": m.get("int8_kernels")}
                    for name, m in manifests.items()},
        "alone_int8": {"flash_bytes": sum(m["flash_bytes"] for m in alone),
                       "weights_bytes": sum(manifests["int8"]["configs"][k]["weights_bytes"] for k in range(len(alone)))},
        "configs": configs,
    }
    print(json.dumps(report))
    body = markdown(report)
    print(body)
    if not args.no_results:
        command = (f"python benchmarks/dynamic_int8.py SEL --images {args.images}"
                   + (f" --target {args.target}" if args.target else ""))
        replace_section("dynamic_int8", f"## Dynamic bundles, int8 vs float32 ({target.name}, commit {git_commit()})\n\n"
                        f"{SETUP}\n{command}\n```\n\n{body}")


SETUP = """One selection of K sub-networks (digits), compiled as one float32 bundle, one int8 bundle (SIMD
micro-kernels where a weight slice is contiguous), one int8 bundle with scalar kernels only, and each
configuration alone as an ordinary int8 build; every configuration of the bundles run on QEMU over
the first test images (instructions exact). Commands:
```
tvmnas dynamic train --dataset digits --epochs 8 --out SUP
tvmnas dynamic select SUP --k 4 --target cortex-m4 --candidates 16 --out SEL"""


def markdown(report: dict) -> str:
    """The bundles' flash, weights and arena side by side, then each configuration on QEMU."""
    b, n = report["bundles"], report["images"]
    lines = ["| bytes | float32 bundle | int8 bundle | int8 bundle, scalar kernels | K int8 builds alone (sum) |",
             "|---|---|---|---|---|"]
    for f in ("flash_bytes", "weights_bytes", "shared_weights_bytes", "private_weights_bytes", "arena_bytes"):
        alone = f"{report['alone_int8']['flash_bytes']:,}" if f == "flash_bytes" else ""
        lines.append(f"| {f} | {b['float32'][f]:,} | {b['int8'][f]:,} | {b['int8_scalar'][f]:,} | {alone} |")
    lines += ["", f"Over the first {n} test images per configuration:", "",
              "| config | float32 acc | int8 acc | int8 class = float class | max LSB vs integer reference (SIMD / scalar) "
              "| instructions float32 / int8 / int8 scalar |", "|---|---|---|---|---|---|"]
    for r in report["configs"]:
        lines.append(f"| {r['config']} | {r['float32_acc']:.3f} | {r['int8_acc']:.3f} | "
                     f"{r['int8_same_class_as_float']}/{n} | {r['int8_max_lsb_vs_reference']} / "
                     f"{r['int8_scalar_max_lsb_vs_reference']} | {r['float32_instructions']:,} / "
                     f"{r['int8_instructions']:,} / {r['int8_scalar_instructions']:,} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
