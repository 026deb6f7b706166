"""Do MACs and measured int8 cycles rank a search space's candidates alike, per target?

For every slot of the CIFAR-10 search's supernet (32x32 inputs; the chain space of
benchmarks/search_cifar.py, or the darts space at the search's defaults), each candidate is priced by
the measured cost (compiled alone as int8 C, timed on the target's emulator; tvmnas.cost.measured)
and by its MAC count (conv/matmul MACs only: pools and skips count 0). Prints, per target and space,
the Spearman rank correlation (ties at their mean rank) between the two over each slot's candidates
(min and max over slots), how many slots' cheapest non-zero-MAC candidate differs between the two,
and estimated cycles per MAC. Where the correlation is 1 at every slot, a search with the measured
cost and one with the MAC count differ only through how the costs weigh slots against each other.

    python benchmarks/chain_cost_ranks.py cortex-m4 cortex-m7 cortex-m33
    python benchmarks/chain_cost_ranks.py cortex-m4 --space darts
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import search_cifar  # noqa: E402

from tvmnas.cost.measured import MeasuredCostModel  # noqa: E402
from tvmnas.search.cost import MacCostModel  # noqa: E402
from tvmnas.search.search import build_supernet  # noqa: E402
from tvmnas.targets import load_target  # noqa: E402


def supernet(space: str, target: str):
    """The CIFAR-10 search's supernet of `space` (32x32 RGB, 10 classes)."""
    config = argparse.Namespace(space=space, target=target, search_epochs=1, batch_size=64, seed=0, arch_lr=0.01)
    return build_supernet(search_cifar.search_config(config, 0.0), (3, 32, 32), 10)


def ranks(target: str, space: str, db: Path) -> dict:
    """Spearman (min, max over slots) of MACs vs measured int8 cycles, argmin disagreements, cycles per MAC."""
    slots = [slot.candidates for slot in supernet(space, target).cost_slots() if len(slot.candidates) > 1]
    specs = sorted({s for cands in slots for s in cands}, key=repr)
    cycles = MeasuredCostModel(load_target(target), db, precision="int8", progress=None).price(specs)
    mac = MacCostModel()
    rho, cheapest_differs, per_mac = [], 0, []
    for cands in dict.fromkeys(slots):  # each distinct slot once
        macs = [float(mac.count(s).macs) for s in cands]
        cyc = [float(cycles[s]) for s in cands]
        if len(set(macs)) > 1 and len(set(cyc)) > 1:
            rho.append(search_cifar._spearman(macs, cyc))
        paid = [i for i, m in enumerate(macs) if m > 0]
        if min(paid, key=lambda i: macs[i]) != min(paid, key=lambda i: cyc[i]):
            cheapest_differs += 1
        per_mac += [c / m for m, c in zip(macs, cyc) if m > 0]
    zero_mac = {s.op: int(cycles[s]) for s in specs if mac.count(s).macs == 0 and cycles[s] > 0}
    return {"target": target, "space": space, "slots": len(dict.fromkeys(slots)), "spearman": [min(rho), max(rho)],
            "cheapest_differs": cheapest_differs, "cycles_per_mac": [min(per_mac), max(per_mac)],
            "zero_mac_ops_max_cycles": {op: max(int(cycles[s]) for s in specs if s.op == op and mac.count(s).macs == 0)
                                        for op in zero_mac}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--space", choices=("chain", "darts"), default="chain")
    parser.add_argument("--db", type=Path, default=HERE.parent / "build" / "chain_cost_ranks.sqlite",
                        help="profile database (a rerun measures nothing)")
    args = parser.parse_args()
    for target in args.targets:
        print(json.dumps(ranks(target, args.space, args.db)), flush=True)


if __name__ == "__main__":
    main()
