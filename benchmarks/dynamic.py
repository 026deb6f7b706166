"""Dynamic networks side by side: one weight-shared artifact vs the same sub-networks alone.

Measures, in one run:
- accuracy: each selected sub-network (weights from the super-network, BN recalibrated) vs the
  same architecture trained alone for the same epochs on the same examples (test set);
- flash: the one switchable artifact (`--optimize size`, the dynamic default) vs the largest
  sub-network compiled alone with the same setting and as `tvmnas compile` builds it (speed), and
  vs the sum of all K compiled alone (what separate models would cost); the artifact built with
  `--optimize speed` alongside;
- speed: instructions of each configuration in the artifact vs the same sub-network compiled alone;
- QEMU: one process switching between all K configurations several times mid-stream, every
  output compared with PyTorch; exact instructions per configuration; switching cost in
  instructions (model_set_config's executed path, and model_run after a switch vs after the same
  configuration).

Writes benchmarks/results/dynamic.json and its section of benchmarks/RESULTS.md. Never fails on
a figure. Example (about 15-20 CPU minutes on a loaded 2-core host):
  python benchmarks/dynamic.py --dataset cifar10 --data-root ../shared/data/cifar10 \
      --epochs 6 --limit-train 5000 --limit-test 2000 --image-size 16
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_commit, replace_section  # noqa: E402

import numpy as np
import torch

HERE = Path(__file__).resolve().parent




def downsample(data, size: int):
    """Average-pool the images of an ArrayDataset to size x size (smaller runs on CPU)."""
    from tvmnas.data.arrays import ArrayDataset

    def pool(x: np.ndarray) -> np.ndarray:
        f = x.shape[-1] // size
        if f <= 1:
            return x
        n, c, h, w = x.shape
        return np.ascontiguousarray(x.reshape(n, c, h // f, f, w // f, f).mean((3, 5)), dtype=np.float32)

    return ArrayDataset(data.name, pool(data.train_x), data.train_y, pool(data.test_x), data.test_y, data.classes)


def bench_spec(input_shape, num_classes):
    from tvmnas.dynamic.supernet import StageSpec, SupernetSpec, default_spec

    if input_shape[1] <= 8:
        return default_spec(input_shape, num_classes)
    stages = (StageSpec(16, 1, 1), StageSpec(24, 2, 2), StageSpec(32, 2, 2))
    return SupernetSpec(tuple(input_shape), num_classes, 16, stages, expands=(2, 4))


def test_accuracy(model, x, y) -> float:
    from tvmnas.data.arrays import batches

    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in batches(x, y, 256):
            correct += int((model(xb).argmax(1) == yb).sum())
    return correct / len(x)


def set_config_instructions(elf: Path) -> int:
    """Instructions on model_set_config's in-range path (straight-line code: its instructions
    minus the out-of-range early return), counted from the disassembly."""
    out = subprocess.run(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    body = re.search(r"<model_set_config>:\n(.*?)\n\n", out, re.S)
    if body is None:
        return -1
    lines = [ln for ln in body.group(1).splitlines() if re.match(r"\s+[0-9a-f]+:\s", ln) and ".word" not in ln]
    return len(lines)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="average-pool images to this size")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="of --epochs, this many fine-tune the K chosen only (the super-network trains the rest)")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--target", default="cortex-m4")
    parser.add_argument("--rounds", type=int, default=3, help="times the QEMU stream cycles through all K")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dynamic")
    parser.add_argument("--results-md", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--qemu-only", action="store_true",
                        help="reuse --out and results/dynamic.json of an earlier run; redo only the QEMU part")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from tvmnas.compiler import compile_model
    from tvmnas.data import load_dataset
    from tvmnas.dynamic.compile import compile_dynamic
    from tvmnas.dynamic.select import load_selection, select_subnets
    from tvmnas.dynamic.train import SupernetTrainConfig, train_standalone, train_supernet
    from tvmnas.targets import load_target

    t0 = time.time()
    data = load_dataset(args.dataset, root=args.data_root, limit_train=args.limit_train, limit_test=args.limit_test)
    if args.image_size:
        data = downsample(data, args.image_size)
    target = load_target(args.target)
    spec = bench_spec(data.input_shape, data.num_classes)
    holdout = min(500, len(data.train_x) // 10)
    if not 0 <= args.finetune_epochs < args.epochs:
        raise SystemExit("dynamic.py: --finetune-epochs must be at least 0 and less than --epochs")
    settings = SupernetTrainConfig(epochs=args.epochs, holdout=holdout)
    super_settings = SupernetTrainConfig(epochs=args.epochs - args.finetune_epochs, holdout=holdout)
    out = args.out
    if args.qemu_only:
        report = json.loads((HERE / "results" / "dynamic.json").read_text())
        sel = load_selection(out / "selection")
        report["qemu"] = measure_qemu(out / "dynamic_c", sel.subnets, data.test_x, target, args.k, args.rounds)
        finish(report, args.results_md)
        return
    print(f"[{time.time() - t0:.0f}s] training the super-network ({len(data.train_x)} images, "
          f"{super_settings.epochs} epochs)", file=sys.stderr)
    net, sup_metrics = train_supernet(data, out / "supernet", super_settings, spec=spec)
    t_super = time.time() - t0
    print(f"[{time.time() - t0:.0f}s] selecting {args.k}", file=sys.stderr)
    select_subnets(net, data, target, out / "selection", k=args.k, candidates=args.candidates, holdout=holdout,
                   seed=settings.seed, finetune_epochs=args.finetune_epochs, train_config=settings)
    sel = load_selection(out / "selection")
    rows = []
    for k, (entry, sub) in enumerate(zip(sel.entries, sel.subnets)):
        print(f"[{time.time() - t0:.0f}s] training config {k} alone", file=sys.stderr)
        t1 = time.time()
        _, alone_acc = train_standalone(spec, sub.config, data, settings)
        rows.append({"index": k, "config": entry["config"], "cost": entry["cycles"], "holdout_acc": entry["holdout_acc"],
                     "shared_test_acc": test_accuracy(sub, data.test_x, data.test_y), "alone_test_acc": alone_acc,
                     "alone_train_seconds": time.time() - t1})
    print(f"[{time.time() - t0:.0f}s] compiling", file=sys.stderr)
    dyn, dyn_speed = (
        compile_dynamic(sel.subnets, sel.shared, spec.input_shape, target, out / name,
                        accuracies=[e["holdout_acc"] for e in sel.entries],
                        cycles=[int(e["cycles"]) for e in sel.entries], ignore_budget=True, optimize=goal).manifest
        for name, goal in (("dynamic_c", "size"), ("dynamic_c_speed", "speed"))
    )
    alone_flash = {goal: [] for goal in ("speed", "size")}
    for goal, flashes in alone_flash.items():
        for k, sub in enumerate(sel.subnets):
            m = compile_model(sub, target, out / f"alone_{goal}_c{k}", input_shape=(1, *spec.input_shape),
                              ignore_budget=True, optimize=goal)
            flashes.append(m.manifest["flash_bytes"])
    largest = int(np.argmax(alone_flash["speed"]))

    print(f"[{time.time() - t0:.0f}s] QEMU switching run", file=sys.stderr)
    qemu = measure_qemu(out / "dynamic_c", sel.subnets, data.test_x, target, args.k, args.rounds)
    qemu_speed = measure_qemu(out / "dynamic_c_speed", sel.subnets, data.test_x, target, args.k, 1)
    alone_instructions = [alone_instruction_count(out / f"alone_speed_c{k}", data.test_x[0], target)
                          for k in range(args.k)]
    report = {
        "target": target.name, "commit": git_commit(), "dataset": data.name,
        "settings": {"epochs": args.epochs, "train_examples": sup_metrics["train_examples"],
                     "holdout_examples": holdout, "test_examples": len(data.test_x),
                     "input_shape": list(spec.input_shape), "k": args.k, "candidates": args.candidates,
                     "spec": spec.to_dict()},
        "cost_model": sel.meta["cost_model"], "cost_unit": sel.meta["cost_unit"],
        "configs": rows,
        "flash": {"dynamic_bytes": dyn["flash_bytes"], "dynamic_speed_bytes": dyn_speed["flash_bytes"],
                  "alone_bytes": alone_flash["speed"], "alone_size_bytes": alone_flash["size"],
                  "largest_alone_bytes": alone_flash["speed"][largest],
                  "largest_alone_size_bytes": alone_flash["size"][largest],
                  "sum_alone_bytes": int(sum(alone_flash["speed"])),
                  "ratio_to_largest": dyn["flash_bytes"] / alone_flash["speed"][largest],
                  "ratio_to_largest_same_setting": dyn["flash_bytes"] / alone_flash["size"][largest],
                  "speed_ratio_to_largest": dyn_speed["flash_bytes"] / alone_flash["speed"][largest],
                  "ratio_to_sum": dyn["flash_bytes"] / sum(alone_flash["speed"]),
                  "shared_weights_bytes": dyn["shared_weights_bytes"],
                  "private_weights_bytes": dyn["private_weights_bytes"],
                  },
        "arena_bytes": [c["arena_bytes"] for c in dyn["configs"]],
        "qemu": qemu,
        "qemu_speed": qemu_speed,
        "alone_instructions": alone_instructions,
        "seconds": {"supernet_train": t_super, "total": time.time() - t0},
    }
    report["command"] = "python benchmarks/dynamic.py " + " ".join(sys.argv[1:])
    report["text"] = {"data": data.name, "train": sup_metrics["train_examples"], "holdout": holdout,
                      "test": len(data.test_x), "input_shape": list(spec.input_shape), "epochs": args.epochs,
                      "finetune_epochs": args.finetune_epochs,
                      "machine": target.emulator_machine, "k": args.k, "rounds": args.rounds}
    finish(report, args.results_md)


def alone_instruction_count(bundle: Path, x: np.ndarray, target) -> int:
    """Exact instructions of one model_run of a bundle compiled alone."""
    from tvmnas.measure.runner import build, run

    return run(build(bundle, target, bundle / "build"), target, [x], timeout_s=600).instructions[0]


def measure_qemu(bundle: Path, subnets, test_x: np.ndarray, target, k_count: int, rounds: int) -> dict:
    """One QEMU process: every round runs each configuration twice in a row on that round's test
    image (order rotated between rounds); outputs vs PyTorch, exact counts, switching cost."""
    from tvmnas.measure.runner import build, memory_usage, run

    elf = build(bundle, target, bundle / "build")
    configs, inputs = [], []
    for r in range(rounds):
        for k in [(k + r) % k_count for k in range(k_count)]:
            configs += [k, k]
            inputs += [test_x[r % len(test_x)]] * 2
    result = run(elf, target, inputs, configs=configs, timeout_s=600)
    errors, per_config, deltas = [], {}, []
    for j, (k, x, y) in enumerate(zip(configs, inputs, result.outputs)):
        with torch.no_grad():
            ref = subnets[k](torch.from_numpy(x[None])).numpy().ravel()
        errors.append(float(np.abs(ref - y).max()))
        per_config.setdefault(k, result.instructions[j])
        if j % 2 == 1:   # second call of a pair: same config, same input, no switch before it
            deltas.append(result.instructions[j - 1] - result.instructions[j])
    return {"calls": len(configs), "sequence": configs, "max_abs_error": max(errors),
            "instructions_per_config": [per_config[k] for k in range(k_count)],
            "model_run_delta_after_switch": max(deltas, key=abs),
            "set_config_instructions": set_config_instructions(elf),
            "elf_flash_bytes": memory_usage(elf, target).flash_bytes}


def finish(report: dict, results_md: Path) -> None:
    """Write results/dynamic.json and this benchmark's RESULTS.md section; print the section."""
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "dynamic.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    t = report["text"]
    rows, args_k, target_name = report["configs"], t["k"], report["target"]
    cmd = report["command"]
    lines = [
        f"## Dynamic networks: one switchable artifact ({target_name}, commit {report['commit']})", "",
        f"`{cmd}`", "",
        f"{t['data']}: {t['train']} training images ({t['holdout']} more held out for selection), "
        f"{t['test']} test images, input {tuple(t['input_shape'])}, {t['epochs']} epochs for the "
        f"shared weights ({t['epochs'] - t.get('finetune_epochs', 0)} training the super-network, "
        f"{t.get('finetune_epochs', 0)} fine-tuning the {args_k} chosen sub-networks together) and for each "
        f"sub-network trained alone (same examples, optimizer and schedule). "
        f"Selection cost: {report['cost_unit']}. Small CPU-only runs: absolute accuracies are low; "
        f"compare the columns.", "",
        "| config | cost | arena B | instructions in the artifact | alone (speed) | artifact / alone | "
        "artifact (speed) | shared-weight test acc | trained-alone test acc | difference (points) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    q = report["qemu"]
    for r, arena, instr, alone, fast in zip(rows, report["arena_bytes"], q["instructions_per_config"],
                                            report["alone_instructions"],
                                            report["qemu_speed"]["instructions_per_config"]):
        diff = 100 * (r["shared_test_acc"] - r["alone_test_acc"])
        lines.append(f"| {r['index']} | {r['cost']:,.0f} | {arena:,} | {instr:,} | {alone:,} | {instr / alone:.3f} | "
                     f"{fast:,} | {100 * r['shared_test_acc']:.1f} % | {100 * r['alone_test_acc']:.1f} % | "
                     f"{diff:+.1f} |")
    f = report["flash"]
    lines += [
        "",
        f"Flash (code + constants, from the objects): one artifact (`--optimize size`, the default of `tvmnas "
        f"dynamic compile`) {f['dynamic_bytes']:,} B; the largest sub-network alone with the same setting "
        f"{f['largest_alone_size_bytes']:,} B (ratio **{f['ratio_to_largest_same_setting']:.3f}x**), as `tvmnas "
        f"compile` builds it by default (`--optimize speed`) {f['largest_alone_bytes']:,} B (ratio "
        f"{f['ratio_to_largest']:.3f}x); all {args_k} alone (speed) {f['sum_alone_bytes']:,} B (artifact = "
        f"{f['ratio_to_sum']:.2f}x of that). Shared weights {f['shared_weights_bytes']:,} B, per-configuration BN "
        f"scale/shift {f['private_weights_bytes']:,} B. The artifact built with `--optimize speed` (unrolled "
        f"windows) is {f['dynamic_speed_bytes']:,} B ({f['speed_ratio_to_largest']:.3f}x the largest alone, speed); "
        f"its instructions are the `artifact (speed)` column.",
        "",
        f"QEMU ({t['machine']}): one process, {q['calls']} calls switching through all {args_k} "
        f"configurations {t['rounds']} times; max |output - PyTorch| = {q['max_abs_error']:.2e}. Switching: "
        f"model_set_config is {q['set_config_instructions']} instructions (from the disassembly); model_run "
        f"right after a switch differs by {q['model_run_delta_after_switch']} instructions from the same call "
        f"repeated without a switch (exact counts, same input).",
    ]
    replace_section("dynamic", "\n".join(lines), results_md=results_md)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
