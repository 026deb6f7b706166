"""Every network of the test zoo and the public-architecture zoo through the int8 path, on QEMU.

For each network: the float32 ONNX export is quantized by tvmnas's post-training quantizer
(`tvmnas.quant.quantize_model`, 8 seeded N(0, 1) calibration inputs), compiled to integer C for
the target (what `tvmnas compile --quantize int8` runs), built and run on the target's emulator on
one held-out seeded input, and compared with

    C vs reference   the integer reference (tvmnas/quant/reference.py, TFLite Micro's arithmetic):
                     max |C - reference| in output LSBs; must be 0
    ops vs ort       per operator, the reference against onnxruntime's fake-quant float run fed
                     the same int8 inputs (reference.per_op_deviation): max LSBs; within 1

Each network is classified as

    exact           compiled, ran, and equals the reference bit for bit
    differs         compiled and ran but differs from the reference (a bug)
    one_line        refused with one TvmnasError line (the line is recorded)
    traceback       any other exception, or the process died inside the network (a bug)

One JSON record per network is appended to benchmarks/results/int8_zoo.jsonl as soon as it
finishes; a rerun skips finished networks (--force redoes them). Writes the `int8_zoo` section of
RESULTS.md. Never passes or fails.

    python benchmarks/int8_zoo.py [--target cortex-m4] [--only NAME[,NAME]] [--zoos test,public] [--force]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_MD, git_commit, replace_section  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS_JSONL = HERE / "results" / "int8_zoo.jsonl"
PUBLIC_ZOO_JSONL = HERE / "results" / "public_zoo.jsonl"
CALIBRATION_SAMPLES = 8
STATUSES = ("exact", "differs", "one_line", "traceback")


def networks() -> dict[str, tuple[str, object]]:
    """name -> (zoo, entry) for the test zoo and the public-architecture zoo."""
    from public_models import PUBLIC_MODELS

    from zoo import ZOO

    found: dict[str, tuple[str, object]] = {name: ("test", ZOO[name]) for name in sorted(ZOO)}
    for name, entry in PUBLIC_MODELS.items():
        found.setdefault(name, ("public", entry))
    return found


def _build(zoo: str, entry):
    return entry.build(seed=0) if zoo == "public" else entry.build()


def run_network(name: str, zoo: str, entry, target_name: str, timeout_s: float) -> dict:
    """Quantize, compile, build, run and compare one network; never raises (the outcome is the record)."""
    import onnx

    from tvmnas.compiler import compile_model
    from tvmnas.errors import TvmnasError
    from tvmnas.quant.quantize import quantize_model
    from tvmnas.quant.reference import ReferenceModel, per_op_deviation, quantize_input
    from tvmnas.measure.runner import build, run
    from tvmnas.targets import load_target
    from tvmnas.model_file import export_onnx

    record: dict = {"name": name, "zoo": zoo, "target": target_name}
    shape = tuple(entry.input_shape)
    rng = np.random.RandomState(0)
    calibration = rng.randn(CALIBRATION_SAMPLES, *shape[1:]).astype(np.float32)
    x = rng.randn(*shape).astype(np.float32)
    target = load_target(target_name)
    stage = "export"
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"int8-zoo-{name}-") as tmp:
        work = Path(tmp)
        try:
            path = export_onnx(_build(zoo, entry), shape, work / f"{name}.onnx")
            stage = "quantize"
            qdq = work / f"{name}.qdq.onnx"
            onnx.save(quantize_model(path, calibration), str(qdq))
            stage = "reference"
            ref = ReferenceModel(qdq)
            record["islands"] = sorted({op.attrs["node"].op_type for op in ref.graph.ops if op.kind == "float"})
            record["ops"] = len(ref.graph.ops)
            xq = quantize_input(x, ref.graph.tensors[ref.graph.inputs[0]])
            expected = ref.run_int8(xq)[0].reshape(-1)
            record["ops_vs_ort"] = max(per_op_deviation(qdq, x).values(), default=0)
            stage = "compile"
            bundle = compile_model(qdq, target, work / "bundle", ignore_budget=True)
            record["flash_bytes"] = bundle.manifest["flash_bytes"]
            record["arena_bytes"] = bundle.manifest["arena_bytes"]
            record["int8_kernels"] = bundle.manifest.get("int8_kernels")
            record["float_kernels"] = sorted({k["name"] for k in bundle.manifest["kernels"] if "dequantize" in k["name"]})
            stage = "run"
            result = run(build(bundle.out_dir, target, work / "build"), target, [xq.astype(np.float32).reshape(-1)],
                         timeout_s=timeout_s)
        except TvmnasError as err:
            record.update(status="one_line", stage=stage, line=str(err).replace(str(work), "<tmp>"))
        except Exception as err:  # noqa: BLE001 - every other exception is what this benchmark looks for
            lines = traceback.format_exception(err)
            first = (str(err).strip().splitlines() or [""])[0].replace(str(work), "<tmp>")
            record.update(status="traceback", stage=stage, line=f"{type(err).__name__}: {first}",
                          traceback="".join(lines)[-4000:])
        else:
            out = np.asarray(result.outputs[0][: expected.size]).astype(np.int64)
            lsb = int(np.abs(out - expected.astype(np.int64)).max())
            record.update(status="exact" if lsb == 0 else "differs", stage="compare", c_vs_reference=lsb,
                          instructions=result.instructions[0])
    record["seconds"] = round(time.time() - t0, 1)
    return record


def load_records(path: Path) -> dict[tuple[str, str], dict]:
    """The last record per (name, target); a network left 'started' means the process died in it."""
    records: dict[tuple[str, str], dict] = {}
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            key = (rec["name"], rec["target"])
            if rec["status"] == "interrupted":
                records.pop(key, None)
            else:
                records[key] = rec
    for rec in records.values():
        if rec["status"] == "started":
            rec.update(status="traceback", stage="?", line="the process died during this network (crash or kill)")
    return records


def append_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def float32_status(path: Path = PUBLIC_ZOO_JSONL) -> dict[str, str]:
    """The float32 outcome of each public-zoo network's ONNX route (benchmarks/public_zoo.py)."""
    found: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("route") == "onnx" and rec["status"] not in ("started", "interrupted"):
                found[rec["name"]] = rec["status"]
    return found


def render(records: dict, target: str, command: str) -> str:
    """The RESULTS.md section: one row per network, totals, and every failure's line."""
    order = list(networks())
    rows = sorted((r for (n, t), r in records.items() if t == target and n in order), key=lambda r: order.index(r["name"]))
    f32 = float32_status()
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    commits = sorted({r.get("commit", "?") for r in rows})
    lines = [
        f"## int8 on the zoos: quantized, compiled and run on QEMU ({target}, commit {', '.join(commits)})",
        "",
        f"`{command}`",
        "",
        "Each network of the test zoo (zoo/) and the public-architecture zoo (benchmarks/public_models) "
        f"exported to ONNX, quantized by tvmnas's PTQ on {CALIBRATION_SAMPLES} seeded N(0, 1) calibration inputs, "
        "compiled to integer C (`compile_model` on the QDQ model, what `tvmnas compile --quantize int8` runs, "
        "budgets ignored), built and run on the emulator on one held-out seeded input. *C vs ref*: max output "
        "difference in LSBs from the integer reference (tvmnas/quant/reference.py, TFLite Micro's arithmetic; "
        "must be 0). *ops vs ort*: per operator, the reference against onnxruntime's fake-quant float run on the "
        "same int8 inputs (must be <= 1). *float ops*: ops with no integer kernel, run in float32 between "
        "dequantize and quantize. *float32*: the network's ONNX route in benchmarks/public_zoo.py (test-zoo "
        "networks all compile in float32, see compiler_zoo). Records: benchmarks/results/int8_zoo.jsonl.",
        "",
        f"**Totals over {len(rows)} networks:** bit-exact {counts['exact']}, differ {counts['differs']}, "
        f"one-line refusals {counts['one_line']}, tracebacks {counts['traceback']}.",
        "",
        "| network | zoo | float32 | int8 | C vs ref (LSB) | ops vs ort (LSB) | float ops | int8 instructions | flash B | arena B |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = r["status"].replace("_", "-")
        if r["status"] == "differs":
            status = "**DIFFERS**"
        f32_cell = "matched" if r["zoo"] == "test" else f32.get(r["name"], "not run").replace("_", "-")
        cells = [r["name"], r["zoo"], f32_cell, status, str(r.get("c_vs_reference", "")),
                 str(r.get("ops_vs_ort", "")), ", ".join(r.get("islands", [])) or "-",
                 f"{r['instructions']:,}" if "instructions" in r else "", f"{r['flash_bytes']:,}" if "flash_bytes" in r else "",
                 f"{r['arena_bytes']:,}" if "arena_bytes" in r else ""]
        lines.append("| " + " | ".join(cells) + " |")
    failures = [r for r in rows if r["status"] in ("one_line", "traceback")]
    if failures:
        lines += ["", "Failures (stage: the line):", ""]
        for r in failures:
            line = r.get("line", "").replace("|", "\\|")[:300]
            lines.append(f"- {r['name']}: {r['status'].replace('_', '-')} at {r.get('stage')}: `{line}`")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="cortex-m4")
    parser.add_argument("--only", default="", help="comma-separated network names (default: all)")
    parser.add_argument("--zoos", default="test,public", help="which zoos: test, public or both")
    parser.add_argument("--force", action="store_true", help="redo networks already in the results file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a guest counts as hung")
    parser.add_argument("--results", type=Path, default=RESULTS_JSONL)
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD, help="the markdown file holding the section")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the RESULTS.md section")
    args = parser.parse_args(argv)
    known = networks()
    zoos = {z for z in args.zoos.split(",") if z}
    names = [n for n in args.only.split(",") if n] or [n for n, (z, _) in known.items() if z in zoos]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)} (known: {', '.join(known)})")
    command = "python benchmarks/int8_zoo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    commit = git_commit()
    records = load_records(args.results)
    for i, name in enumerate(names, 1):
        key = (name, args.target)
        if key in records and not args.force:
            print(f"[{i}/{len(names)}] {name}: {records[key]['status']} (recorded)", file=sys.stderr)
            continue
        zoo, entry = known[name]
        append_record(args.results, {"name": name, "zoo": zoo, "target": args.target, "status": "started"})
        try:
            record = run_network(name, zoo, entry, args.target, args.timeout)
        except KeyboardInterrupt:
            append_record(args.results, {"name": name, "target": args.target, "status": "interrupted"})
            raise
        record["commit"] = commit
        append_record(args.results, record)
        records[key] = record
        detail = record.get("line") or f"C vs ref {record.get('c_vs_reference')} LSB, ops vs ort {record.get('ops_vs_ort')}"
        print(f"[{i}/{len(names)}] {name}: {record['status']} in {record['seconds']} s: {detail[:200]}",
              file=sys.stderr, flush=True)
    section = render(records, args.target, command.strip())
    if not args.no_write:
        replace_section("int8_zoo", section, args.results_md)
    print(section)


if __name__ == "__main__":
    main()
