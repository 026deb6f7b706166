"""Recurrent keyword-spotting networks (LSTM, GRU) through both routes on the emulated targets.

Per network, route (.onnx, .pt2) and target: compile, run on QEMU against PyTorch (max error
relative to the output's scale), and profile (`tvmnas profile`: exact instructions, estimated
cycles per kernel) and predict (`tvmnas cost predict`: the surrogate's cycles). MACs follow
tvmnas.rnn_kernels: the gate matrix-vector products, T * D * G*H * (I + H) per layer (G = 4 LSTM,
3 GRU), plus the classifier; gate activations and state updates count no MACs but their cycles
are in the figures. Side by side, --baseline networks (.pt2, cortex-m4) also go through TVM 0.27's
own import, which unrolls every step into its own kernels. Writes benchmarks/results/recurrent.json
(resumable: finished rows of the same commit are kept) and the `recurrent` section of RESULTS.md;
never passes or fails.

    python benchmarks/recurrent.py [--targets cortex-m4,cortex-m7] [--nets lstm_kws,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, replace_section  # noqa: E402

import torch  # noqa: E402

from tvmnas.compiler import compile_model  # noqa: E402
from tvmnas.cost.predict import predict_model_json  # noqa: E402
from tvmnas.cost.surrogate import load_surrogate  # noqa: E402
from tvmnas.measure.profiler import profile_network_json  # noqa: E402
from tvmnas.measure.runner import build, run  # noqa: E402
from tvmnas.targets import load_target  # noqa: E402
from tvmnas.model_file import export_onnx, export_pt2  # noqa: E402
from zoo.recurrent import KWS_MODELS  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OUT_JSON = RESULTS_DIR / "recurrent.json"
ROUTES = {"onnx": export_onnx, "pt2": export_pt2}
RECURRENT = ("lstm_layer", "gru_layer", "rnn_tanh_layer", "rnn_relu_layer")
COMMAND = "python benchmarks/recurrent.py"


def is_recurrent(kernel_name: str) -> bool:
    return kernel_name.startswith(RECURRENT)


def measure(name: str, route: str, target_name: str, work: Path) -> dict:
    """Compile, run and profile one network through one route on one target."""
    entry = KWS_MODELS[name]
    model = entry.build()
    x = entry.sample_input().numpy()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    target = load_target(target_name)
    path = ROUTES[route](model, entry.input_shape, work / f"{name}.{route}")
    t0 = time.perf_counter()
    compiled = compile_model(path, target, work / "c")
    compile_s = time.perf_counter() - t0
    result = run(build(compiled.out_dir, target, work / "b"), target, [x], timeout_s=600)
    error = float(np.abs(result.outputs[0].reshape(ref.shape) - ref).max() / np.abs(ref).max())
    prof = profile_network_json(path, target, timeout_s=600)
    pred = predict_model_json(path, load_surrogate(target.name))
    rec = [k for k in prof["kernels"] if is_recurrent(k["name"])]
    rec_pred = [k for k in pred["kernels"] if is_recurrent(k["name"])]
    return {
        "net": name, "route": route, "target": target.name,
        "recurrent_kernels": [k["name"] for k in rec],
        "kernels": len(prof["kernels"]),
        "macs": prof["macs"], "recurrent_macs": sum(k["macs"] for k in rec),
        "instructions": prof["instructions"], "cycles": prof["cycles"],
        "recurrent_cycles": sum(k["cycles"] for k in rec),
        "predicted_recurrent_cycles": sum(k["cycles"] for k in rec_pred),
        "arena_bytes": compiled.manifest["arena_bytes"], "flash_bytes": compiled.manifest["flash_bytes"],
        "max_rel_error": error, "run_instructions": result.instructions[0] if result.instructions else None,
        "compile_s": compile_s,
    }


def measure_stock(name: str, target_name: str, work: Path) -> dict:
    """The same .pt2 network through TVM 0.27's own import: torch's default decompositions unroll
    every step into separate matmul and gate kernels (what tvmnas did before recurrent kernels)."""
    entry = KWS_MODELS[name]
    model = entry.build()
    x = entry.sample_input().numpy()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    target = load_target(target_name)
    path = export_pt2(model, entry.input_shape, work / f"{name}.pt2")
    with mock.patch("tvmnas.frontend.torch_import_options", lambda program: (program, {})):
        t0 = time.perf_counter()
        compiled = compile_model(path, target, work / "c", ignore_budget=True)
        compile_s = time.perf_counter() - t0
        result = run(build(compiled.out_dir, target, work / "b"), target, [x], timeout_s=600)
        prof = profile_network_json(path, target, timeout_s=600)
    return {
        "net": name, "route": "pt2 (TVM 0.27 import, unrolled)", "target": target.name,
        "kernels": len(prof["kernels"]), "instructions": prof["instructions"], "cycles": prof["cycles"],
        "arena_bytes": compiled.manifest["arena_bytes"], "flash_bytes": compiled.manifest["flash_bytes"],
        "max_rel_error": float(np.abs(result.outputs[0].reshape(ref.shape) - ref).max() / np.abs(ref).max()),
        "compile_s": compile_s,
    }


def table(rows: list[dict], commit: str) -> str:
    lines = [
        f"## Recurrent networks: LSTM / GRU keyword spotting on QEMU (commit {commit})",
        "",
        f"Produced by `{COMMAND}`. Input 1x49x10 (MFCC-like), hidden 64, 12 classes, batch 1; weights",
        "seeded (zoo/recurrent.py). Each recurrent layer is ONE C function looping over the 49 steps",
        "(every direction inside it), its state in the arena. MACs: the gate matrix-vector products,",
        "T x D x G*H x (I+H) per layer (G = 4 for LSTM, 3 for GRU), plus the dense classifier; sigmoid/tanh",
        "and state updates count no MACs but their cycles are included. Instructions exact; cycles are",
        "estimated from the core's timing table (`tvmnas profile`), not measured on a board. Max error:",
        "max |C on QEMU - PyTorch| / max |PyTorch| over the 12 logits. Predicted: `tvmnas cost predict` for",
        "the recurrent kernels (the surrogate was fitted on CNN kernels only and its kernel features see",
        "no reduction in these loops, so treat it as a coarse price).",
        "",
        "| model | route | target | MACs | instructions | est. cycles | est. cycles/MAC | recurrent kernel est. cyc/MAC | predicted / est. (recurrent) | kernels | arena B | max error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['net']} | {r['route']} | {r['target']} | failed: {r['error']} |")
            continue
        lines.append(
            f"| {r['net']} | {r['route']} | {r['target']} | {r['macs']:,} | {r['instructions']:,} | "
            f"{r['cycles']:,} | {r['cycles'] / r['macs']:.2f} | "
            f"{r['recurrent_cycles'] / r['recurrent_macs']:.2f} | "
            f"{r['predicted_recurrent_cycles'] / r['recurrent_cycles']:.2f} | {r['kernels']} | "
            f"{r['arena_bytes']:,} | {r['max_rel_error']:.1e} |"
        )
    return "\n".join(lines)


def baseline_table(rows: list[dict], stock: list[dict]) -> str:
    lines = [
        "",
        "### Against TVM 0.27's own import of the same .pt2 (every step unrolled into its own kernels)",
        "",
        "Same networks, inputs and flags; the stock import compiled with `--ignore-budget` (its flash does",
        "not fit the board). Compile seconds are wall-clock on the shared 2-core build machine (indicative).",
        "",
        "| model | target | import | kernels | flash B | arena B | instructions | est. cycles | compile s | max error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours = {(r["net"], r["target"]): r for r in rows if r.get("route") == "pt2" and "error" not in r}
    for s in stock:
        mine = ours.get((s["net"], s["target"]))
        if "error" in s or mine is None:
            continue
        for label, r in (("tvmnas recurrent kernels", mine), ("TVM 0.27 (unrolled)", s)):
            lines.append(
                f"| {s['net']} | {s['target']} | {label} | {r['kernels']} | {r['flash_bytes']:,} | "
                f"{r['arena_bytes']:,} | {r['instructions']:,} | {r['cycles']:,} | {r['compile_s']:.0f} | "
                f"{r['max_rel_error']:.1e} |"
            )
        lines.append(
            f"| {s['net']} | {s['target']} | ratio unrolled / tvmnas | {s['kernels'] / mine['kernels']:.0f}x | "
            f"{s['flash_bytes'] / mine['flash_bytes']:.1f}x | {s['arena_bytes'] / mine['arena_bytes']:.1f}x | "
            f"{s['instructions'] / mine['instructions']:.2f}x | {s['cycles'] / mine['cycles']:.2f}x | "
            f"{s['compile_s'] / mine['compile_s']:.0f}x | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="cortex-m4,cortex-m7")
    parser.add_argument("--nets", default=",".join(KWS_MODELS))
    parser.add_argument("--routes", default="onnx,pt2")
    parser.add_argument("--baseline", default="lstm_kws,gru_kws",
                        help="Networks also compiled through TVM's own import (.pt2, cortex-m4); empty: none.")
    parser.add_argument("--fresh", action="store_true", help="Drop finished rows and measure again.")
    args = parser.parse_args()
    commit = git_commit()
    RESULTS_DIR.mkdir(exist_ok=True)
    done = {} if args.fresh or not OUT_JSON.exists() else json.loads(OUT_JSON.read_text())
    rows = {tuple(k.split("/")): v for k, v in done.get("rows", {}).items()} if done.get("commit") == commit else {}
    for target in args.targets.split(","):
        for name in args.nets.split(","):
            for route in args.routes.split(","):
                key = (name, route, target)
                if key in rows:
                    continue
                print(f"{name} {route} {target} ...", file=sys.stderr)
                with tempfile.TemporaryDirectory(prefix="tvmnas-rnn-") as tmp:
                    from tvmnas.errors import TvmnasError
                    try:
                        rows[key] = measure(name, route, target, Path(tmp))
                    except TvmnasError as err:
                        rows[key] = {"net": name, "route": route, "target": target, "error": str(err)}
                OUT_JSON.write_text(json.dumps(
                    {"commit": commit, "rows": {"/".join(k): v for k, v in rows.items()}}, indent=1) + "\n")
    for name in filter(None, args.baseline.split(",")):
        key = (name, "stock", "cortex-m4")
        if key in rows:
            continue
        print(f"{name} pt2 cortex-m4 through TVM's own import ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="tvmnas-rnn-") as tmp:
            from tvmnas.errors import TvmnasError
            try:
                rows[key] = measure_stock(name, "cortex-m4", Path(tmp))
            except TvmnasError as err:
                rows[key] = {"net": name, "route": "stock", "target": "cortex-m4", "error": str(err)}
        OUT_JSON.write_text(json.dumps(
            {"commit": commit, "rows": {"/".join(k): v for k, v in rows.items()}}, indent=1) + "\n")
    ordered = [rows[k] for k in sorted(rows, key=lambda k: (k[2], list(KWS_MODELS).index(k[0]), k[1]))
               if k[1] != "stock"]
    stock = [rows[k] for k in sorted(rows) if k[1] == "stock"]
    text = table(ordered, commit) + "\n" + baseline_table(ordered, stock)
    replace_section("recurrent", text)
    print(text)


if __name__ == "__main__":
    main()
