"""How fast the profiler fills its database: sampled candidates and kernels per minute with 1 and 2 workers.

Each worker count profiles the same sampled candidates into a fresh database (compile, build with
kernel marks, run under the QEMU block-profiling plugin); a final pass over a filled database
shows what a resume costs when everything is already there (lowering only, no emulator runs).
Writes JSON (target, commit, settings, rates), prints a table and replaces its section in
benchmarks/RESULTS.md. Rates depend on the host and on whatever else runs on it: the load average
at the start is recorded. Measures only; never passes or fails.

    python benchmarks/profile_rate.py --target cortex-m4 --count 10 --jobs 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, replace_section  # noqa: E402

HERE = Path(__file__).resolve().parent
SECTION = "profile_rate"






def timed_run(specs: list, target, db_path: Path, jobs: int) -> dict:
    from tvmnas.cost.candidates import profile_candidates
    from tvmnas.measure.store import ProfileDB

    with ProfileDB(db_path) as db, tempfile.TemporaryDirectory(prefix="tvmnas-rate-") as work:
        start = time.monotonic()
        stats = profile_candidates(specs, target, db, Path(work), jobs=jobs)
        seconds = time.monotonic() - start
        kernels, candidates = db.counts()
    return {
        "jobs": jobs,
        "seconds": round(seconds, 2),
        "candidates_measured": stats.measured,
        "candidates_cached": stats.cached,
        "failed": len(stats.failures),
        "kernels_added": stats.kernels_added,
        "kernels_in_db": kernels,
        "candidates_per_minute": round(60 * len(specs) / seconds, 1),
        "kernels_per_minute": round(60 * stats.kernels_added / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cortex-m4")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile_rate.json")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    import torch

    from tvmnas.cost.sampler import sample_ops
    from tvmnas.targets import load_target

    torch.set_num_threads(1)
    target = load_target(args.target)
    specs = sample_ops(args.count, args.seed)
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="tvmnas-rate-db-") as tmp:
        for jobs in [int(j) for j in args.jobs.split(",")]:
            db_path = Path(tmp) / f"jobs{jobs}.db"
            runs.append({"pass": "fresh", **timed_run(specs, target, db_path, jobs)})
            print(f"jobs={jobs}: {runs[-1]['seconds']} s", file=sys.stderr)
        runs.append({"pass": "resume (same db)", **timed_run(specs, target, db_path, jobs)})

    command = "python benchmarks/profile_rate.py " + " ".join(sys.argv[1:])
    result = {
        "benchmark": SECTION,
        "target": target.name,
        "commit": git_commit(),
        "command": command,
        "settings": {"count": args.count, "seed": args.seed, "jobs": args.jobs},
        "host_cpus": os.cpu_count(),
        "load_average_at_start": round(load_before, 2),
        "runs": runs,
        "note": "instructions exact, cycles estimated; rates are wall-clock on a shared host",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    header = "| pass | jobs | seconds | candidates/min | kernels/min | measured | cached | failed |"
    rows = [
        f"| {r['pass']} | {r['jobs']} | {r['seconds']} | {r['candidates_per_minute']} | {r['kernels_per_minute']} "
        f"| {r['candidates_measured']} | {r['candidates_cached']} | {r['failed']} |"
        for r in runs
    ]
    fresh = [r for r in runs if r["pass"] == "fresh"]
    speedup = (
        f"Speed-up of {fresh[-1]['jobs']} workers over {fresh[0]['jobs']}: "
        f"{fresh[0]['seconds'] / fresh[-1]['seconds']:.2f}x (same candidates, side by side)."
        if len(fresh) > 1 else ""
    )
    table = "\n".join([header, "|---|---|---|---|---|---|---|---|", *rows])
    print(table)
    body = (
        f"## Kernel profiling rate ({target.name}, commit {result['commit']})\n\n"
        f"`{command}`\n\n"
        f"{args.count} sampled candidates (seed {args.seed}), each compiled alone, built with kernel marks and "
        f"run once under the QEMU plugin; host: {os.cpu_count()} CPUs shared with other work "
        f"(load average {load_before:.1f} at the start), so absolute rates are pessimistic.\n\n"
        f"{table}\n\n{speedup} Worker processes start by importing torch and TVM (seconds each), and two "
        "workers gain nothing while other work already keeps both cores busy. The resume pass lowers every "
        "candidate again (to get its kernel hashes) and measures only those whose kernels are not in the "
        "database, e.g. because the code generator changed since the fresh pass.\n"
    )
    replace_section(SECTION, results_md=args.results_md, body=body)


if __name__ == "__main__":
    main()
