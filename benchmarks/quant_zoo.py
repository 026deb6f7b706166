"""int8 post-training quantization of the test zoo: integer reference against onnxruntime.

For each zoo network: export to ONNX, quantize with tvmnas.quant.quantize_model (seeded
standard-normal calibration samples), then compare the integer reference (TFLite Micro's
semantics) with onnxruntime's fake-quant run of the same QDQ model (graph optimizations off) on
a held-out seeded input: per op (each reference op fed onnxruntime's own int8 inputs) and end to
end (the output, in output LSBs). Also counts the float islands (ops with no integer form).
Writes JSON (commit, settings, rows) and prints a table. Measures only; never passes or fails.

    python benchmarks/quant_zoo.py [--calibration 8] [names ...]
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


def measure(name: str, samples: int, work: Path) -> dict:
    import onnxruntime as ort

    from tvmnas.quant import ReferenceModel, quantize_model
    from tvmnas.quant.reference import per_op_deviation
    from tvmnas.model_file import export_onnx
    from zoo import get_entry

    entry = get_entry(name)
    path = export_onnx(entry.build(), entry.input_shape, work / f"{name}.onnx")
    calib = np.random.RandomState(0).randn(samples, *entry.input_shape[1:]).astype(np.float32)
    model = quantize_model(path, calib)
    x = np.random.RandomState(1).randn(*entry.input_shape).astype(np.float32)
    ref = ReferenceModel(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    scale = float(ref.graph.tensors[ref.graph.outputs[0]].scale)
    end_to_end = float(np.abs(sess.run(None, {sess.get_inputs()[0].name: x})[0] - ref.run(x)[0]).max() / scale)
    per_op = per_op_deviation(model, x)
    return {"network": name, "ops": len(ref.graph.ops),
            "float_islands": sorted({op.attrs["node"].op_type for op in ref.graph.ops if op.kind == "float"}),
            "per_op_max_lsb": max(per_op.values()), "end_to_end_max_lsb": round(end_to_end, 3)}


def main() -> None:
    from zoo import ZOO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--calibration", type=int, default=8, help="calibration samples")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quant_zoo.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-quant-") as work:
        for name in args.names or list(ZOO):
            rows.append(measure(name, args.calibration, Path(work)))
            r = rows[-1]
            print(f"{r['network']:18s} ops {r['ops']:3d}  per-op max {r['per_op_max_lsb']} LSB  "
                  f"end-to-end max {r['end_to_end_max_lsb']:6.2f} LSB  float islands: {', '.join(r['float_islands']) or '-'}",
                  flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"commit": git_commit(), "settings": {"calibration_samples": args.calibration,
                                    "calibration_seed": 0, "input_seed": 1}, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
