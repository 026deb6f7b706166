"""Measure the instruction mix (per-class counts, flash reads) of the stored cost-model networks on
one target into tvmnas/cost/data/mix-<target>.json.gz, which `tvmnas cost calibrate` uses to
re-estimate the stored profile data with a fitted timing table. Resumable: rerun to continue.

    python scripts/collect_kernel_mix.py --target cortex-m4 [--limit N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tvmnas.board.mix import collect_mix
from tvmnas.cost.surrogate import DATA_DIR, profiles_name
from tvmnas.measure.store import open_profiles
from tvmnas.targets import load_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cortex-m4")
    parser.add_argument("--limit", type=int, default=None, help="networks at most (held-out ones first)")
    parser.add_argument("--fit-only", action="store_true", help="only the fit networks, last first (a second worker)")
    parser.add_argument("--out", type=Path, default=None, help="mix file (default: the package's mix-<target>.json.gz)")
    args = parser.parse_args()
    target = load_target(args.target)
    with open_profiles(DATA_DIR / profiles_name()) as db:
        fit, held = db.networks(target.name, "float32", "fit"), db.networks(target.name, "float32", "eval")
    ordered = fit[::-1] if args.fit_only else held + fit
    collect_mix(ordered[: args.limit] if args.limit else ordered, target,
                args.out or Path(DATA_DIR / f"mix-{target.name}.json.gz"), progress=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
