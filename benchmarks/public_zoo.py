"""Every public-zoo network through both import routes, compiled and run on the emulator.

For each network (benchmarks/public_models) and route (.onnx from torch.onnx.export, .pt2 from
torch.export): `compile_model` (what `tvmnas compile` calls), then build and run on QEMU (what
`tvmnas run` calls) on a seeded input, compared with PyTorch. Each route is classified as

    matched         ran, max |out - ref| / max |ref| <= 1e-4
    silently_wrong  compiled and ran but disagrees with PyTorch (the worst outcome)
    one_line        refused with one TvmnasError line (recorded; should name the operator and node)
    traceback       any other exception, or the process died inside the route (a bug)
    export_failed   PyTorch's own exporter failed (not the compiler's doing)

One JSON record per route is appended to benchmarks/results/public_zoo.jsonl as soon as it finishes;
a rerun skips finished routes (--force redoes them). Writes the `public_zoo` section of RESULTS.md.

    python benchmarks/public_zoo.py [--target cortex-m4] [--only NAME[,NAME]] [--routes onnx,pt2] [--force]

Routes already in the results file are not redone: after a change to the compiler, remeasure with --force.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_MD, git_commit, replace_section  # noqa: E402
from public_models import PUBLIC_MODELS, PublicModel  # noqa: E402

RESULTS_JSONL = Path(__file__).resolve().parent / "results" / "public_zoo.jsonl"
ROUTES = ("onnx", "pt2")
TOLERANCE = 1e-4
STATUSES = ("matched", "silently_wrong", "one_line", "traceback", "export_failed")


def export(entry: PublicModel, model, route: str, work: Path) -> Path:
    """The model file the user would hand to `tvmnas compile`, exported the way the project exports."""
    from tvmnas.model_file import export_onnx, export_pt2

    exporter = export_onnx if route == "onnx" else export_pt2
    return exporter(model, entry.input_shape, work / f"{entry.name}.{route}")


def names_operator_and_node(err: BaseException) -> bool:
    """Whether a one-line failure names the operator and the node it happened at."""
    if getattr(err, "op", None) and getattr(err, "node", None):
        return True
    return bool(re.search(r"operator '[^']+'.*node '[^']+'", str(err)))


def run_route(entry: PublicModel, route: str, target_name: str, timeout_s: float) -> dict:
    """Export, compile, build and run one route; never raises (the outcome is the record)."""
    import torch

    from tvmnas.compiler import compile_model
    from tvmnas.errors import TvmnasError
    from tvmnas.measure.runner import build, run
    from tvmnas.targets import load_target

    record: dict = {"name": entry.name, "route": route, "target": target_name, "family": entry.family}
    if entry.expected_failure:
        record["expected_failure"] = entry.expected_failure
    model = entry.build(seed=0)
    x = entry.sample_input(seed=1)
    with torch.no_grad():
        ref = model(x).numpy()
    target = load_target(target_name)
    stage = "export"
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"public-zoo-{entry.name}-") as tmp:
        work = Path(tmp)
        try:
            path = export(entry, model, route, work)
            stage = "compile"
            compiled = compile_model(path, target, work / "bundle")
            record["compile_s"] = round(time.time() - t0, 1)
            record["flash_bytes"] = compiled.manifest["flash_bytes"]
            record["arena_bytes"] = compiled.manifest["arena_bytes"]
            stage = "run"
            elf = build(compiled.out_dir, target, work / "build")
            result = run(elf, target, [x.numpy().reshape(-1)], timeout_s=timeout_s)
        except TvmnasError as err:
            record.update(status="one_line", stage=stage, line=str(err).replace(str(work), "<tmp>"),
                          names_node=names_operator_and_node(err))
        except Exception as err:  # noqa: BLE001 - every other exception is what this benchmark looks for
            status = "export_failed" if stage == "export" else "traceback"
            lines = traceback.format_exception(err)
            first = (str(err).strip().splitlines() or [""])[0].replace(str(work), "<tmp>")
            record.update(status=status, stage=stage, line=f"{type(err).__name__}: {first}",
                          traceback_lines=sum(chunk.count("\n") for chunk in lines),
                          traceback="".join(lines)[-4000:])
        else:
            out = np.asarray(result.outputs[0][: ref.size], dtype=np.float32).reshape(ref.shape)
            rel = float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1e-30))
            record.update(status="matched" if rel <= TOLERANCE else "silently_wrong", stage="compare",
                          rel_error=rel, instructions=result.instructions[0])
    record["seconds"] = round(time.time() - t0, 1)
    return record


def load_records(path: Path) -> dict[tuple[str, str, str], dict]:
    """The last record per (name, route, target); a route left 'started' means the process died in it."""
    records: dict[tuple[str, str, str], dict] = {}
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            key = (rec["name"], rec["route"], rec["target"])
            if rec["status"] == "interrupted":  # stopped by the user: not an outcome, redo it
                records.pop(key, None)
            else:
                records[key] = rec
    for key, rec in records.items():
        if rec.get("status") == "started":
            rec.update(status="traceback", stage="?", line="the process died during this route (crash or kill)")
    return records


def append_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _cell(rec: dict) -> str:
    status = rec["status"]
    if status == "matched":
        return f"matched ({rec['rel_error']:.1e})"
    if status == "silently_wrong":
        return f"**SILENTLY WRONG** ({rec['rel_error']:.2g})"
    return status.replace("_", "-")


def render(records: dict, target: str, command: str) -> str:
    """The RESULTS.md section: per-network table, totals, and every failure's line."""
    rows = [rec for (name, route, t), rec in records.items() if t == target and name in PUBLIC_MODELS]
    by_name: dict[str, dict[str, dict]] = {}
    for rec in rows:
        by_name.setdefault(rec["name"], {})[rec["route"]] = rec
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    compiled = sum(r["status"] in ("matched", "silently_wrong") or (r["status"] != "export_failed" and r.get("stage") == "run")
                   for r in rows)
    commits = sorted({r.get("commit", "?") for r in rows})
    lines = [
        f"## Public-architecture zoo, both import routes on QEMU ({target}, commit {', '.join(commits)})",
        "",
        f"`{command}`",
        "",
        f"{len(by_name)} networks built in code with seeded weights (benchmarks/public_models), each exported "
        "to .onnx (torch.onnx.export, opset 17) and .pt2 (torch.export), compiled with `compile_model` (what "
        "`tvmnas compile` runs, default budgets), built and run on the emulator, compared with PyTorch on a "
        f"seeded input: match when max |out - ref| / max |ref| <= {TOLERANCE:g}. A route is *one-line* when "
        "refused with one error line, *traceback* when any other exception escaped (a bug), *silently wrong* "
        "when it compiled and ran but disagrees. Finished routes are kept in benchmarks/results/public_zoo.jsonl; "
        "`--force` remeasures them (after a change to the compiler).",
        "",
        f"**Totals over {len(rows)} routes:** compiled {compiled}, matched {counts['matched']}, "
        f"one-line failures {counts['one_line']}, tracebacks {counts['traceback']}, "
        f"silently wrong {counts['silently_wrong']}" + (f", export failed {counts['export_failed']}"
                                                        if counts["export_failed"] else "") + ".",
        "",
        "| network | family | input | ONNX | .pt2 |",
        "|---|---|---|---|---|",
    ]
    for name, entry in PUBLIC_MODELS.items():
        if name not in by_name:
            continue
        routes = by_name[name]
        cells = [_cell(routes[r]) if r in routes else "not run" for r in ROUTES]
        mark = " (expected to fail today)" if entry.expected_failure else ""
        lines.append(f"| {name}{mark} | {entry.family} | {'x'.join(map(str, entry.input_shape[1:]))} | "
                     f"{cells[0]} | {cells[1]} |")
    failures = [r for r in rows if r["status"] not in ("matched",)]
    if failures:
        lines += ["", "Failures (route: the line; for one-line failures whether it names operator and node):", ""]
        for r in sorted(failures, key=lambda r: (list(PUBLIC_MODELS).index(r["name"]), r["route"])):
            extra = ""
            if r["status"] == "one_line":
                extra = " (names op and node)" if r.get("names_node") else " (does not name op and node)"
            elif r["status"] == "traceback":
                extra = f" ({r.get('traceback_lines', '?')}-line traceback at {r.get('stage')})"
            elif r["status"] == "silently_wrong":
                extra = f" (relative error {r['rel_error']:.3g})"
            line = r.get("line", "").replace("|", "\\|")
            said = f": `{line[:300]}`" if line else ": compiled and ran without an error"
            lines.append(f"- {r['name']} {r['route']}: {r['status'].replace('_', '-')}{extra}{said}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cortex-m4")
    parser.add_argument("--only", default="", help="comma-separated network names (default: all)")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--force", action="store_true", help="redo routes already in the results file")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a guest counts as hung")
    parser.add_argument("--results", type=Path, default=RESULTS_JSONL)
    parser.add_argument("--section", default="public_zoo", help="RESULTS.md section name")
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the markdown file holding the section")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(PUBLIC_MODELS)
    unknown = [n for n in names if n not in PUBLIC_MODELS]
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)} (known: {', '.join(PUBLIC_MODELS)})")
    routes = [r for r in args.routes.split(",") if r]
    if any(r not in ROUTES for r in routes):
        parser.error(f"--routes takes {', '.join(ROUTES)}")
    command = "python benchmarks/public_zoo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    commit = git_commit()
    records = load_records(args.results)
    todo = [(n, r) for n in names for r in routes]
    for i, (name, route) in enumerate(todo, 1):
        key = (name, route, args.target)
        if key in records and not args.force:
            print(f"[{i}/{len(todo)}] {name} {route}: {records[key]['status']} (recorded)", file=sys.stderr)
            continue
        append_record(args.results, {"name": name, "route": route, "target": args.target, "status": "started"})
        try:
            record = run_route(PUBLIC_MODELS[name], route, args.target, args.timeout)
        except KeyboardInterrupt:
            append_record(args.results, {"name": name, "route": route, "target": args.target, "status": "interrupted"})
            raise
        record["commit"] = commit
        append_record(args.results, record)
        records[key] = record
        detail = record.get("line") or f"rel. error {record.get('rel_error', float('nan')):.1e}"
        print(f"[{i}/{len(todo)}] {name} {route}: {record['status']} in {record['seconds']} s: {detail[:200]}",
              file=sys.stderr, flush=True)
    section = render(records, args.target, command.strip())
    replace_section(args.section, section, args.results_md)
    print(section)


if __name__ == "__main__":
    main()
