"""One-off conversion of the shipped profile data (tvmnas/cost/data/profiles.json.gz) to the
project's one MAC convention (passes.kernel_macs: multiply-accumulates only).

The data was collected when kernel MACs counted every reduction iteration, so pooling and mean
kernels carried their window reads as MACs. Under today's convention such kernels perform none:
a pooling or mean kernel (feature class_pool_max, class_pool_avg or class_mean) gets 0, every
other kernel keeps its count (conv, depthwise and matmul reductions are products, element-wise
kernels were 0 already). Only the informational 'macs' field changes; features, measurements and
therefore the fitted cost models do not.

  python scripts/convert_profile_macs.py [path]   # default: the shipped file, rewritten in place
"""

from __future__ import annotations

import sys
from pathlib import Path

from tvmnas.cost.collect import ProfileData

NO_MAC_CLASSES = ("class_pool_max", "class_pool_avg", "class_mean")
SHIPPED = Path(__file__).resolve().parents[1] / "tvmnas" / "cost" / "data" / "profiles.json.gz"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else SHIPPED
    data = ProfileData.load(path)
    changed = 0
    for kernel in data.kernels.values():
        if any(kernel["features"][c] > 0 for c in NO_MAC_CLASSES) and kernel["macs"] != 0:
            kernel["macs"] = 0
            changed += 1
    data.save(path)
    print(f"{path}: {changed} of {len(data.kernels)} kernels now count 0 MACs (pooling and means)")


if __name__ == "__main__":
    main()
