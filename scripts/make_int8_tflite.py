"""Write the int8 test networks as float ONNX, QDQ ONNX and .tflite, without TensorFlow.

  python scripts/make_int8_tflite.py                 # all networks into build/int8_tflite/
  python scripts/make_int8_tflite.py --out DIR conv residual
  python scripts/make_int8_tflite.py --check          # also run each .tflite in TFLite Micro
                                                      # and compare with the integer reference

Each network (tvmnas.quant.int8_nets) is seeded, calibrated on seeded random data and quantized
by tvmnas.quant.quantize_model (per-channel symmetric weights, per-tensor asymmetric
activations); the .tflite holds the same int8 weights and quantization as the QDQ ONNX. Needs the
int8 extra (pip install -e ".[int8]").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from tvmnas.errors import TvmnasError
    from tvmnas.quant.int8_nets import INT8_NETS, write_int8_net

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"networks (default: all of {', '.join(INT8_NETS)})")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "int8_tflite")
    parser.add_argument("--check", action="store_true", help="compare TFLite Micro with the integer reference")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in INT8_NETS]
    if unknown:
        print(f"error: unknown network '{unknown[0]}' (known: {', '.join(INT8_NETS)})", file=sys.stderr)
        return 2
    try:
        for name in args.names or list(INT8_NETS):
            files = write_int8_net(name, args.out)
            line = f"{name}: {files.tflite} ({files.tflite.stat().st_size} bytes), {files.qdq_onnx}"
            if args.check:
                line += f", TFLite Micro == reference on {_check(files, INT8_NETS[name].input_shape)} inputs"
            print(line)
    except TvmnasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _check(files, shape: tuple[int, ...], samples: int = 8) -> int:
    from tvmnas.quant.reference import ReferenceModel
    from tvmnas.quant.tflite_writer import run_tflite_micro, to_nhwc

    ref = ReferenceModel(files.qdq_onnx)
    tflite = files.tflite.read_bytes()
    rng = np.random.RandomState(0)
    for k in range(samples):
        x = rng.randint(-128, 128, shape).astype(np.int8)
        want = run_tflite_micro(tflite, to_nhwc(x))[0]
        got = to_nhwc(ref.run_int8(x)[0])
        if not np.array_equal(want, got):
            raise SystemExit(f"{files.tflite}: input {k} differs from the integer reference in {np.count_nonzero(want != got)} outputs")
    return samples


if __name__ == "__main__":
    sys.exit(main())
