"""Regenerate the shipped cost models (tvmnas/cost/data/) from the project's own profiler.

  python scripts/fit_cost_models.py            # profile (if no data yet), fit, distill
  python scripts/fit_cost_models.py --profile -j 8  # re-profile even if the dump exists, 8 at a time
  python scripts/fit_cost_models.py --profile --executor ray --ray-address HEAD:6379  # on a Ray cluster
  python scripts/fit_cost_models.py --refresh-features  # kernel features changed: recompute them, keep
                                                        # the measurements, refit and distill
  python scripts/fit_cost_models.py --precision int8    # the int8 builds of the same networks on the
                                                        # int8 targets -> profiles-int8.jsonl.gz and
                                                        # surrogate-<target>-int8.json.gz (no distillation yet)
  python scripts/fit_cost_models.py --precision int8 --collect-only  # profile only (resumable), fit later

The shipped files came from profiling on the kernels of the commit that added them (`--profile`:
about 40 s a network on one core, so some four hours for all 380, or that divided by --jobs); a
change to the schedules or the C printer makes them stale (re-profile). Raising --fit-networks
profiles only the networks not yet in the dump (the generator is seeded, so the first ones
stay the same).

Stages, all seeded and single-threaded so that the same toolchain gives the same files:
1. profile: FIT_NETWORKS random networks (seed FIT_SEED, split 'fit') and EVAL_NETWORKS (seed
   EVAL_SEED, split 'eval'), half chain / half DARTS, compiled once and profiled on each target
   into the profile store (a database beside the dump while collecting, resumable), dumped to
   profiles.jsonl.gz (per-kernel features, MACs, exact instructions, estimated cycles per call).
2. fit: one XGBoost surrogate per target on the 'fit' split only -> surrogate-<target>.json.gz.
   The eval networks are profiled on every target too (whole-network check); every target is also
   judged by cross-validation over distinct kernels (benchmarks/cost_model_accuracy.py).
3. distill: DISTILL_SPECS layer specs of both spaces (plus classifier / reduce heads) lowered once (features cached in
   distill-specs.json.gz), priced by each surrogate; the MLP fitted to 80 % of them ->
   distilled-<target>.pt, fidelity on the other 20 % -> distill-report.json.
The 'eval' split is never used for fitting: benchmarks/cost_model_accuracy.py reports on it.
--precision int8 runs stages 1 and 2 on each network's int8 build (the SIMD micro-kernels on these
cores, which all have the DSP extension), keyed by precision in the file names; the shipped int8
data took about 34 s a network for the three targets, one process on a shared two-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tvmnas.cli import options
from tvmnas.cost.collect import collect, refresh_features
from tvmnas.cost.networks import interleave, random_genotypes
from tvmnas.cost.surrogate import CostSurrogate, profiles_name, surrogate_name
from tvmnas.errors import TvmnasError
from tvmnas.measure.store import ProfileDB, load_dump
from tvmnas.targets import load_target

DATA_DIR = Path(__file__).resolve().parents[1] / "tvmnas" / "cost" / "data"
TARGETS = {"float32": ("cortex-m4", "cortex-m7"), "int8": ("cortex-m4", "cortex-m7", "cortex-m33")}
FIT_NETWORKS, FIT_SEED = 330, 1
EVAL_NETWORKS, EVAL_SEED = 50, 2
# the shipped int8 data: the first networks of the same two seeded lists (a network's seed is its
# place in the interleaved list, so any larger count keeps these and profiles only the rest)
INT8_FIT_NETWORKS = 71
NETWORKS = {"float32": (FIT_NETWORKS, EVAL_NETWORKS), "int8": (INT8_FIT_NETWORKS, EVAL_NETWORKS)}
DISTILL_SPECS, DISTILL_SEED = 100, 0


def jobs_of(fit_networks: int, eval_networks: int) -> list:
    """(name, split, genotype) of every network, in collection order (a network's seed is its place)."""
    return interleave(random_genotypes(fit_networks, FIT_SEED), random_genotypes(eval_networks, EVAL_SEED))


def profile(db: ProfileDB, fit_networks: int, eval_networks: int, jobs: int | None = None, executor: str = "local",
            ray_address: str | None = None, precision: str = "float32") -> int:
    """Stage 1: compile and profile the fit and eval networks that `db` lacks, one network per task
    on the executor (the rows are the same for any executor and number of workers)."""
    networks = jobs_of(fit_networks, eval_networks)
    pool = options.make_fanout_executor(executor, jobs, ray_address)
    return collect(networks, [load_target(t) for t in TARGETS[precision]], db, executor=pool, precision=precision)


def work_database(dump_path: Path) -> ProfileDB:
    """The database a collection writes into (resumable): `<dump>.db` if an interrupted run left
    one, else made from the dump (or empty)."""
    db_path = dump_path.with_name(dump_path.name.removesuffix(".jsonl.gz") + ".db")
    if db_path.is_file() or not dump_path.is_file():
        return ProfileDB(db_path)
    return load_dump(dump_path, into=db_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="re-profile even if the dump exists")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default: the package data)")
    parser.add_argument("--refresh-features", action="store_true",
                        help="recompute kernel features of the profiled networks (after a feature change), "
                             "keep the measurements")
    parser.add_argument("--skip-distill", action="store_true", help="fit the surrogates only")
    parser.add_argument("--precision", choices=tuple(TARGETS), default="float32",
                        help="profile and fit the networks as they are (float32) or their int8 builds")
    parser.add_argument("--collect-only", action="store_true", help="profile (resuming), do not fit")
    parser.add_argument("--fit-networks", type=int, default=None,
                        help=f"networks to fit on (default: {FIT_NETWORKS}; int8: {INT8_FIT_NETWORKS})")
    parser.add_argument("--eval-networks", type=int, default=EVAL_NETWORKS, help="held-out networks")
    parser.add_argument("--jobs", "-j", type=int, default=None,
                        help="networks profiled at a time (the dump is the same for any number; default: 1 "
                             "with --executor local, every CPU of the cluster with --executor ray)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local", help=options.EXECUTOR_HELP)
    parser.add_argument("--ray-address", default=None, help=options.RAY_ADDRESS_HELP)
    args = parser.parse_args()
    if args.fit_networks is None:
        args.fit_networks = NETWORKS[args.precision][0]
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    dump_path = args.out / profiles_name(args.precision)
    start = time.time()
    if args.profile:
        dump_path.unlink(missing_ok=True)
    wanted = {"fit": args.fit_networks, "eval": args.eval_networks}
    db = load_dump(dump_path) if dump_path.is_file() else ProfileDB(":memory:")
    names = {s: {n.name for n in db.networks(precision=args.precision, split=s)} for s in wanted}
    if any(len(names[s]) < k for s, k in wanted.items()) or args.refresh_features:
        db.close()
        db = work_database(dump_path)
        try:
            count = profile(db, args.fit_networks, args.eval_networks, args.jobs, args.executor, args.ray_address,
                            args.precision)
        except TvmnasError as err:
            sys.exit(f"error: {options.error_line(err)}")
        print(f"profiled {count} networks in {time.time() - start:.0f} s -> {db.path}", file=sys.stderr)
        if args.refresh_features:
            refresh_features(db, args.precision)
        db.dump(dump_path)
        db.close()
        db.path.unlink()  # the dump holds every row now
        db = load_dump(dump_path)
    if args.collect_only:
        return
    reports = {}
    for target in TARGETS[args.precision]:
        rows = db.kernel_rows(target, args.precision, split="fit")
        surrogate = CostSurrogate.fit(rows, target, precision=args.precision)
        name = surrogate_name(target, args.precision)
        surrogate.save(args.out / name)
        print(f"{target}: {args.precision} surrogate fitted on {len(rows)} kernels -> {name}", file=sys.stderr)
        if not args.skip_distill and args.precision == "float32":
            from tvmnas.cost.distill import distill, featurise_specs, head_specs, random_specs

            specs = random_specs(DISTILL_SPECS, DISTILL_SEED) + head_specs()
            featurised = featurise_specs(specs, args.out / "distill-specs.json.gz")
            model, reports[target] = distill(surrogate, featurised)
            model.save(args.out / f"distilled-{target}.pt")
            print(f"{target}: distilled cost vs surrogate on held-out specs: R^2 (log) {reports[target]['r2']:.3f}, "
                  f"Spearman {reports[target]['spearman']:.3f}", file=sys.stderr)
    if reports:
        (args.out / "distill-report.json").write_text(json.dumps(reports, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
