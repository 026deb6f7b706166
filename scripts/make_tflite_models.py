"""Write the .tflite test set (int8 and float32), without TensorFlow or network access.

  python scripts/make_tflite_models.py                # all networks into build/tflite_models/
  python scripts/make_tflite_models.py --out DIR conv concat

The networks and how they are made: tvmnas.quant.tflite_models. Each .tflite can be compiled with
`tvmnas compile NAME.tflite --target cortex-m4 --out DIR`. Needs the int8 extra
(pip install -e ".[int8]").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    from tvmnas.errors import TvmnasError
    from tvmnas.quant.tflite_models import TFLITE_NETS, write_tflite_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"networks (default: all of {', '.join(TFLITE_NETS)})")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "tflite_models")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in TFLITE_NETS]
    if unknown:
        print(f"error: unknown network '{unknown[0]}' (known: {', '.join(TFLITE_NETS)})", file=sys.stderr)
        return 2
    try:
        for name, paths in write_tflite_models(args.out, tuple(args.names) or None).items():
            print(f"{name}: " + ", ".join(f"{p} ({p.stat().st_size} bytes)" for p in paths))
    except TvmnasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
