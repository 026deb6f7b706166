"""Do MACs and measured int8 cycles rank the chain space's candidate blocks alike, per target?

For every position of the CIFAR-10 search's chain space (benchmarks/search_cifar.py, 32x32 inputs),
each candidate inverted-residual block is priced by the measured cost (compiled alone as int8 C,
timed on the target's emulator; tvmnas.cost.measured) and by its MAC count; prints, per target, the
Spearman rank correlation between the two at each position (min and max) and the spread of estimated
cycles per MAC. Where the correlation is 1 at every position, a search with the measured cost and one
with the MAC count differ only through how the costs weigh positions against each other.

    python benchmarks/chain_cost_ranks.py cortex-m4 cortex-m7 cortex-m33
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import search_cifar  # noqa: E402

from tvmnas.cost.measured import MeasuredCostModel  # noqa: E402
from tvmnas.search.cost import MacCostModel  # noqa: E402
from tvmnas.targets import load_target  # noqa: E402


def ranks(target: str, db: Path) -> dict:
    """Spearman (min, max over positions) of MACs vs measured int8 cycles, and cycles per MAC."""
    config = argparse.Namespace(target=target, search_epochs=1, batch_size=64, seed=0, arch_lr=0.01)
    net = search_cifar.build_supernet(search_cifar.search_config(config, 0.0), (3, 32, 32), 10)
    specs = [s for slot in net.cost_slots() for s in slot.candidates]
    cycles = MeasuredCostModel(load_target(target), db, precision="int8", progress=None).price(specs)
    mac = MacCostModel()
    positions: dict[tuple, list[tuple[int, int]]] = {}
    for s in specs:
        if s.op.startswith("mb_"):
            positions.setdefault((s.c_in, s.c_out, s.h, s.stride), []).append((mac.count(s).macs, cycles[s]))
    rho = [float(np.corrcoef(np.argsort(np.argsort([m for m, _ in v])), np.argsort(np.argsort([c for _, c in v])))[0, 1])
           for v in positions.values()]
    per_mac = [c / m for v in positions.values() for m, c in v]
    stem = next(s for s in specs if s.op.startswith("conv"))
    return {"target": target, "positions": len(positions), "spearman": [min(rho), max(rho)],
            "cycles_per_mac": [min(per_mac), max(per_mac)], "stem_conv_cycles_per_mac": cycles[stem] / mac.count(stem).macs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--db", type=Path, default=HERE.parent / "build" / "chain_cost_ranks.sqlite",
                        help="profile database (a rerun measures nothing)")
    args = parser.parse_args()
    for target in args.targets:
        print(json.dumps(ranks(target, args.db)), flush=True)


if __name__ == "__main__":
    main()
