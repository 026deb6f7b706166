"""CIFAR-10 search benchmark: cycle-aware DEff-ARTS vs lambda = 0, a MAC-count cost and random sampling.

Every arm draws from the same space (--space: the chain space, or the darts space at the search's
defaults: 8 channels, 3 cells, 2 nodes) and retrains its genotype with the same budget
(examples, epochs, seeds); then each network is compiled to C, built for cortex-m4 and run on
QEMU, giving exact instructions and estimated cycles (per-core timing table) of one inference.
Arms:
- lambda0: search with the cycle cost switched off (cost_weight 0);
- cycle-<lambda>: search with the learned cortex-m4 cost (pipeline.search_cost_model('auto'));
  the run stops if no learned cost model is available rather than fall back to MACs;
- measured-<lambda>: search with the cost measured per candidate layer on the emulator in
  --precision at the search's exact shapes (pipeline.search_cost_model('measured'), kept in
  <work>/profiles.sqlite);
- mac-<lambda>: search with the MAC count as the cost;
- random-<i>: K genotypes drawn uniformly from the same space (argmax of random alphas);
- resnet8 (--mlperf-resnet8): MLPerf Tiny's ResNet-8, a reference point users know, trained and
  deployed exactly as the searched networks.
Every genotype is retrained with --train-seeds seeds; accuracies are their means. Selection uses
a validation split held out from the training images, never the test set: the reported
cycle-aware arm is the most accurate cycle-aware lambda within the cycle budget (lambda = 0
cycles / --budget-ratio), and "matched accuracy" compares the cheapest network of each kind whose
validation accuracy is within --match-points of that arm. Each arm writes <work>/arms/<arm>.json;
a rerun skips finished arms, and search / training resume from their checkpoints, so a kill loses
at most one epoch.

With --precision int8 every retrained network is post-training quantized (calibrated on 256
training images; tvmnas.training.qat with no fine-tuning epochs) and deployed as int8: selection and
matched accuracy use the int8 validation accuracy (the integer arithmetic the C runs), the float
accuracy is reported beside it, and the int8 C is profiled on QEMU. Every arm's network is also
priced by the measured per-layer table (sum of its layers' cycles), and that sum is compared with
the whole network's profile. Each retraining seed is cached in its folder (seed.json).

Writes benchmarks/results/search_cifar[_int8].json and its section of benchmarks/RESULTS.md. Never
fails on a figure. The recorded run's command is in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import git_commit, replace_section  # noqa: E402

from tvmnas.data import ArrayDataset, batches, load_dataset  # noqa: E402
from tvmnas.search.genotype import Genotype  # noqa: E402
from tvmnas.search.search import SearchConfig, build_supernet, search  # noqa: E402
from tvmnas.train import TrainConfig, train, train_network  # noqa: E402

# (out_channels, stride) per chain layer for 16x16 inputs: two downsamplings, widths 16 -> 32
BENCH_LAYERS: tuple[tuple[int, int], ...] = ((16, 1), (24, 2), (24, 1), (32, 2), (32, 1))


REFERENCE = "MLPerf Tiny ResNet-8"
REFERENCE_ARM = "resnet8"


def reference_network(data: ArrayDataset) -> torch.nn.Module:
    """MLPerf Tiny's ResNet-8 (benchmarks/public_models), freshly initialised, for the data's classes."""
    from public_models.mlperf_tiny import ResNet8

    if data.input_shape[0] != 3:
        raise SystemExit(f"search_cifar: {REFERENCE} takes 3-channel images, not {data.input_shape}")
    return ResNet8(num_classes=data.num_classes)


def log(text: str) -> None:
    """Progress line on stderr."""
    print(f"[search_cifar {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def downsample(data: ArrayDataset, size: int) -> ArrayDataset:
    """Average-pool every image to size x size (a smaller search on CPU); identity at full size."""

    def pool(x: np.ndarray) -> np.ndarray:
        f = x.shape[-1] // size
        if f <= 1:
            return x
        n, c, h, w = x.shape
        return np.ascontiguousarray(x.reshape(n, c, h // f, f, w // f, f).mean((3, 5)), dtype=np.float32)

    return ArrayDataset(data.name, pool(data.train_x), data.train_y, pool(data.test_x), data.test_y, data.classes)


def split_data(args: argparse.Namespace) -> tuple[ArrayDataset, np.ndarray, np.ndarray]:
    """(train/test data set, validation images, validation labels).

    Validation = the `val_examples` training images right after the first `limit_train`: used by
    neither search nor retraining, only to pick among arms. The test set is only reported.
    """
    full = load_dataset("cifar10", root=Path(args.data_root), limit_train=args.limit_train + args.val_examples,
                        limit_test=args.limit_test)
    full = downsample(full, args.image_size)
    n = args.limit_train
    data = ArrayDataset(full.name, full.train_x[:n], full.train_y[:n], full.test_x, full.test_y, full.classes)
    return data, full.train_x[n:], full.train_y[n:]


def search_config(args: argparse.Namespace, cost_weight: float) -> SearchConfig:
    """The one search setting every searched arm shares; only the cost weight differs."""
    if getattr(args, "space", "chain") == "darts":
        return SearchConfig(space="darts", target=args.target, epochs=args.search_epochs, batch_size=args.batch_size,
                            seed=args.seed, cost_weight=cost_weight, arch_lr=args.arch_lr)
    return SearchConfig(space="chain", target=args.target, epochs=args.search_epochs, batch_size=args.batch_size,
                        seed=args.seed, cost_weight=cost_weight, chain_layers=BENCH_LAYERS, stem_channels=16,
                        arch_lr=args.arch_lr)


def random_genotype(args: argparse.Namespace, data: ArrayDataset, index: int) -> Genotype:
    """A genotype drawn uniformly from the space: the derivation from i.i.d. normal alphas (masked slots stay out)."""
    net = build_supernet(search_config(args, 0.0), data.input_shape, data.num_classes)
    gen = torch.Generator().manual_seed(1000 * args.seed + index)
    with torch.no_grad():
        for alpha in net.arch_parameters().values():
            alpha.copy_(torch.randn(alpha.shape, generator=gen))
    genotype, _ = net.derive()
    return genotype


def val_accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy on the held-out validation images."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in batches(x, y, 256):
            correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(len(x), 1)


def measure(model_dir: Path, image: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Compile the deployed model (model.onnx, or with --precision int8 the PTQ model in int8/) for
    the target, run one inference on QEMU: exact instructions, estimated cycles, and the output
    against onnxruntime (float32) or the integer reference (int8, in output steps)."""
    from tvmnas.compiler import compile_model
    from tvmnas.measure.profile import profile_elf
    from tvmnas.measure.runner import build, memory_usage, run
    from tvmnas.quantized import bundle_input
    from tvmnas.targets import load_target

    target = load_target(args.target)
    int8 = args.precision == "int8"
    model = model_dir / "int8" / "model_int8.onnx" if int8 else model_dir / "model.onnx"
    compiled = compile_model(model, target, model_dir / "bundle", ignore_budget=True)
    x = bundle_input(image[None], compiled.manifest, raw=False)
    elf = build(compiled.out_dir, target, model_dir / "build")
    prof_elf = build(compiled.out_dir, target, model_dir / "build_profile", profile=True)
    result = run(elf, target, [x])
    profile = profile_elf(prof_elf, target, [x])
    if int8:
        from tvmnas.quant.reference import ReferenceModel

        reference = ReferenceModel(model).run_int8(x.astype(np.int8))[0]
        check = {"max_abs_output_steps_vs_integer_reference": int(np.abs(
            np.asarray(result.outputs[0]).reshape(reference.shape).astype(np.int64) - reference.astype(np.int64)).max())}
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        reference = session.run(None, {"input": x})[0]
        emulated = np.asarray(result.outputs[0]).reshape(reference.shape)
        check = {"max_abs_logit_diff_vs_onnxruntime": float(np.abs(emulated - reference).max())}
    return {
        "instructions": int(result.instructions[0]),
        "cycles": int(profile.cycles),
        "cpi": round(profile.cpi, 3),
        "flash_bytes": int(compiled.manifest["flash_bytes"]),
        "arena_bytes": int(compiled.manifest["arena_bytes"]),
        "sram_bytes": int(memory_usage(elf, target).sram_bytes),
        **check,
    }


@lru_cache(maxsize=None)
def _measured_model(target: str, precision: str, db_path: Path):  # noqa: ANN202
    from tvmnas.pipeline import search_cost_model
    from tvmnas.targets import load_target

    return search_cost_model("measured", load_target(target), precision=precision, db_path=db_path)


def measured_model(args: argparse.Namespace, work: Path):  # noqa: ANN201 (CostModel, imported lazily)
    """The measured per-layer cost in --precision (its measurements kept in work/profiles.sqlite); one
    per process, so the candidate layers are compiled to look their rows up once."""
    return _measured_model(args.target, args.precision, work / "profiles.sqlite")


def table_cycles(genotype: Genotype, args: argparse.Namespace, data: ArrayDataset, work: Path) -> float:
    """Estimated cycles of a genotype as the sum of its layers' measured cycles (the search's table)."""
    from tvmnas.search.cost import CostTerm

    net = build_supernet(search_config(args, 0.0), data.input_shape, data.num_classes)
    term = CostTerm(net.cost_slots(), measured_model(args, work)[0])
    return term.discrete(genotype_choices(genotype)).cycles


def genotype_choices(genotype: Genotype) -> dict[str, dict[int, int]]:
    """The supernet's candidate index per alpha row that `genotype` took (CostTerm.discrete's choices)."""
    from tvmnas.search.ops import CHAIN_PRIMITIVES, PRIMITIVES

    if genotype.space == "chain":
        return {"layers": {row: CHAIN_PRIMITIVES.index(layer.op) for row, layer in enumerate(genotype.layers)}}
    choices: dict[str, dict[int, int]] = {}
    for kind in ("normal", "reduce"):
        cell, rows, start = getattr(genotype, kind), {}, 0
        for node in range(cell.nodes):  # two edges per node, in node order
            for edge in cell.edges[2 * node:2 * node + 2]:
                rows[start + edge.source] = PRIMITIVES.index(edge.op)
            start += 2 + node
        choices[kind] = rows
    return choices


def retrain_seed(name: str, genotype: Genotype | None, seed: int, args: argparse.Namespace, data: ArrayDataset,
                 val: tuple[np.ndarray, np.ndarray], arm_dir: Path) -> dict[str, Any]:
    """Retrain one seed (and with --precision int8 quantize it); cached in its folder's seed.json.
    genotype None: the reference network (MLPerf Tiny's ResNet-8)."""
    seed_dir = arm_dir / f"train-seed{seed}"
    done = seed_dir / "seed.json"
    if done.exists():
        return json.loads(done.read_text())
    config = TrainConfig(epochs=args.train_epochs, batch_size=args.batch_size, seed=seed)
    on_epoch_end = (lambda e, row: log(f"{name}: seed {seed} retrain epoch {e + 1}/{args.train_epochs} "
                                       f"test acc {row['test_acc']:.3f}"))
    if genotype is None:  # the reference network, trained by the same recipe
        torch.manual_seed(seed)
        trained = train_network(reference_network(data), data, seed_dir, config, identity={"reference": REFERENCE},
                                on_epoch_end=on_epoch_end)
    else:
        trained = train(genotype, data, seed_dir, config, on_epoch_end=on_epoch_end)
    row = {"seed": seed, "float_val_accuracy": val_accuracy(trained.model, *val),
           "float_test_accuracy": trained.metrics["test_accuracy"], "macs": trained.metrics["macs"],
           "params": trained.metrics["params"]}
    row["val_accuracy"], row["test_accuracy"] = row["float_val_accuracy"], row["float_test_accuracy"]
    if args.precision == "int8":
        from tvmnas.training.loop import evaluate
        from tvmnas.training.qat import QATConfig, quantization_aware_train

        ptq = quantization_aware_train(trained.model, data, seed_dir / "int8",
                                       QATConfig(epochs=0, batch_size=args.batch_size, seed=seed),
                                       float_accuracy=trained.metrics["test_accuracy"])
        row["val_accuracy"] = evaluate(ptq.network, *val, args.batch_size)[1]
        row["test_accuracy"] = ptq.metrics["test_accuracy"]
        log(f"{name}: seed {seed} int8 (PTQ) test acc {row['test_accuracy']:.3f} "
            f"(float {row['float_test_accuracy']:.3f})")
    done.write_text(json.dumps(row, indent=2, sort_keys=True) + "\n")
    return row


def run_arm(name: str, args: argparse.Namespace, data: ArrayDataset, val: tuple[np.ndarray, np.ndarray],
            work: Path) -> dict[str, Any]:
    """Search (or sample), retrain, measure one arm; cached in work/arms/<name>.json."""
    from tvmnas.pipeline import search_cost_model
    from tvmnas.targets import load_target

    done = work / "arms" / f"{name}.json"
    if done.exists():
        log(f"{name}: finished earlier, skipped")
        return json.loads(done.read_text())
    arm_dir = work / name
    t0 = time.time()
    record: dict[str, Any] = {"arm": name}
    if name == REFERENCE_ARM:
        genotype = None
        record.update(kind="reference", cost_model=None, cost_weight=None, search_s=0.0)
    elif name.startswith("random-"):
        genotype = random_genotype(args, data, int(name.split("-")[1]))
        record.update(kind="random", cost_model=None, cost_weight=None, search_s=0.0)
    else:
        kind, _, weight = name.partition("-")
        lam = 0.0 if kind == "lambda0" else float(weight)
        if kind == "measured" or (kind == "lambda0" and args.precision == "int8"):  # lambda0: cost only logged
            cost_model, note = measured_model(args, work)
        else:
            cost_model, note = search_cost_model("mac" if kind == "mac" else "auto", load_target(args.target))
        if kind == "cycle" and note.startswith("MAC count"):
            raise SystemExit(f"search_cifar: the cycle-aware arm needs the learned cost model: {note}")
        log(f"{name}: searching (lambda {lam:g}, {cost_model.name})")
        found = search(data, arm_dir / "search", search_config(args, lam), cost_model=cost_model,
                       on_epoch_end=lambda e, row: log(f"{name}: search epoch {e + 1}/{args.search_epochs} "
                                                       f"val acc {row['val_acc']:.3f}"))
        genotype = found.genotype
        record.update(kind=kind, cost_model=note, cost_weight=lam, search_s=round(time.time() - t0, 1),
                      search_val_accuracy=found.val_accuracy, search_cost=asdict(found.cost),
                      search_cost_unit=found.cost_unit)
    label = REFERENCE if genotype is None else str(genotype)
    log(f"{name}: retraining {label} ({args.train_seeds} seeds)")
    t1 = time.time()
    runs = [retrain_seed(name, genotype, seed, args, data, val, arm_dir)
            for seed in range(args.seed, args.seed + args.train_seeds)]
    record.update(genotype=label, train_s=round(time.time() - t1, 1),
                  val_accuracies=[r["val_accuracy"] for r in runs], test_accuracies=[r["test_accuracy"] for r in runs],
                  val_accuracy=float(np.mean([r["val_accuracy"] for r in runs])),
                  test_accuracy=float(np.mean([r["test_accuracy"] for r in runs])),
                  macs=runs[0]["macs"], params=runs[0]["params"])
    if args.precision == "int8":
        record.update(float_val_accuracy=float(np.mean([r["float_val_accuracy"] for r in runs])),
                      float_test_accuracy=float(np.mean([r["float_test_accuracy"] for r in runs])),
                      float_test_accuracies=[r["float_test_accuracy"] for r in runs])
    log(f"{name}: measuring on QEMU (test acc {record['test_accuracy']:.3f})")
    t2 = time.time()
    record.update(measure(arm_dir / f"train-seed{args.seed}", data.test_x[0], args),
                  measure_s=round(time.time() - t2, 1))
    if args.precision == "int8" and genotype is not None:
        record["table_cycles"] = table_cycles(genotype, args, data, work)
        record["table_over_measured"] = record["table_cycles"] / record["cycles"]
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log(f"{name}: {record['cycles']:,} est. cycles, {record['instructions']:,} instructions, "
        f"{record['macs']:,} MACs, {time.time() - t0:.0f} s")
    return record


def cost_kind(arms: dict[str, dict[str, Any]]) -> str:
    """The kind of the cycle-aware arms: 'measured' (per-layer emulator cost) when run, else 'cycle'."""
    return "measured" if any(a["kind"] == "measured" for a in arms.values()) else "cycle"


def pick_cycle_arm(arms: dict[str, dict[str, Any]], budget_ratio: float) -> str:
    """The cycle-aware arm reported: best validation accuracy among the cycle-aware lambdas whose
    network meets the cycle budget (lambda = 0 cycles / budget_ratio); the cheapest one if none does."""
    cycle_arms = [a for a in arms.values() if a["kind"] == cost_kind(arms)]
    budget = arms["lambda0"]["cycles"] / budget_ratio if "lambda0" in arms else float("inf")
    within = [a for a in cycle_arms if a["cycles"] <= budget]
    if within:
        return max(within, key=lambda a: a["val_accuracy"])["arm"]
    return min(cycle_arms, key=lambda a: a["cycles"])["arm"]


def cheapest_at(arms: list[dict[str, Any]], min_val: float) -> dict[str, Any] | None:
    """The arm with the fewest cycles whose validation accuracy reaches `min_val`."""
    ok = [a for a in arms if a["val_accuracy"] >= min_val]
    return min(ok, key=lambda a: a["cycles"]) if ok else None


def summarise(arms: dict[str, dict[str, Any]], cycle_arm: str, match_points: float) -> dict[str, Any]:
    """Ratios against the cycle-aware arm, and the cheapest arm of each kind at matched accuracy.

    Matched accuracy: validation accuracy at least that of the reported cycle-aware arm minus
    `match_points` (validation split, never the test set)."""
    ref = arms[cycle_arm]
    out: dict[str, Any] = {"cycle_arm": cycle_arm, "match_points": match_points}
    base = arms.get("lambda0")
    if base:
        out["lambda0_over_cycle_cycles"] = base["cycles"] / ref["cycles"]
        out["accuracy_drop_points"] = 100 * (base["test_accuracy"] - ref["test_accuracy"])
        out["val_accuracy_drop_points"] = 100 * (base["val_accuracy"] - ref["val_accuracy"])
        out["target_met"] = out["lambda0_over_cycle_cycles"] >= 3.0 and out["accuracy_drop_points"] <= 2.0
    level = ref["val_accuracy"] - match_points / 100
    matched = {}
    learned = cost_kind(arms)
    for kind in (learned, "mac", "random"):
        best = cheapest_at([a for a in arms.values() if a["kind"] == kind], level)
        if best is not None:
            matched[kind] = {"arm": best["arm"], "cycles": best["cycles"], "val_accuracy": best["val_accuracy"],
                             "test_accuracy": best["test_accuracy"]}
    out["matched"] = matched
    if learned in matched:
        for kind in ("mac", "random"):
            if kind in matched:
                out[f"matched_{kind}_over_cycle_cycles"] = matched[kind]["cycles"] / matched[learned]["cycles"]
    reference = next((a for a in arms.values() if a["kind"] == "reference"), None)
    if reference is not None:
        out["reference"] = {"arm": reference["arm"], "cycles": reference["cycles"],
                            "val_accuracy": reference["val_accuracy"], "test_accuracy": reference["test_accuracy"],
                            "flash_bytes": reference["flash_bytes"], "sram_bytes": reference["sram_bytes"],
                            "over_cycle_cycles": reference["cycles"] / ref["cycles"]}
    randoms = [a for a in arms.values() if a["kind"] == "random"]
    if randoms:
        out["random_mean_over_cycle_cycles"] = float(np.mean([a["cycles"] for a in randoms])) / ref["cycles"]
    return out


def table(arms: dict[str, dict[str, Any]], ref_cycles: int) -> str:
    """Markdown table, one row per arm (int8 runs: float test accuracy and the measured table's sum too)."""
    int8 = any("table_cycles" in a for a in arms.values())
    extra_head = "float test acc (mean) | table sum (est.) | table / profile | " if int8 else ""
    rows = ["| arm | genotype | val acc (mean) | test acc: mean (per seed) | " + extra_head + "MACs | "
            "instructions (exact) | cycles (est.) | cycles / cycle-aware | search s | train s |",
            "|---|---|---|---|" + "---|" * (3 if int8 else 0) + "---|---|---|---|---|---|"]
    for a in arms.values():
        extra = (f"{a['float_test_accuracy']:.3f} | " + (f"{a['table_cycles']:,.0f} | {a['table_over_measured']:.3f} | "
                                                         if "table_cycles" in a else "- | - | ") if int8 else "")
        rows.append(
            f"| {a['arm']} | `{a['genotype']}` | {a['val_accuracy']:.3f} | {a['test_accuracy']:.3f} "
            f"({' / '.join(f'{t:.3f}' for t in a['test_accuracies'])}) | {extra}{a['macs']:,} | "
            f"{a['instructions']:,} | {a['cycles']:,} | {a['cycles'] / ref_cycles:.2f} | {a['search_s']:.0f} | "
            f"{a['train_s']:.0f} |"
        )
    return "\n".join(rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(HERE.parent.parent / "shared" / "data" / "cifar10"))
    p.add_argument("--work", default=str(HERE.parent / "build" / "search_cifar"), help="arm outputs (resumable)")
    p.add_argument("--target", default="cortex-m4")
    p.add_argument("--space", choices=("chain", "darts"), default="chain",
                   help="chain: the benchmark's inverted-residual chain; darts: DARTS cells at the search's defaults")
    p.add_argument("--limit-train", type=int, default=2000, help="training images for search and retraining")
    p.add_argument("--val-examples", type=int, default=1000, help="held-out training images for selection")
    p.add_argument("--limit-test", type=int, default=5000)
    p.add_argument("--image-size", type=int, default=16, help="average-pool 32x32 images to this size")
    p.add_argument("--search-epochs", type=int, default=3)
    p.add_argument("--train-epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--arch-lr", type=float, default=1e-2)
    p.add_argument("--precision", choices=("float32", "int8"), default="float32",
                   help="int8: deploy every network post-training quantized and profile its int8 C")
    p.add_argument("--cycle-lambdas", type=float, nargs="*", default=[1.0])
    p.add_argument("--measured-lambdas", type=float, nargs="*", default=[],
                   help="searches with the cost measured per candidate layer on the emulator in --precision")
    p.add_argument("--mac-lambdas", type=float, nargs="*", default=[1.0])
    p.add_argument("--random-k", type=int, default=2)
    p.add_argument("--mlperf-resnet8", action="store_true",
                   help=f"also train {REFERENCE} by the same recipe on the same images (arm '{REFERENCE_ARM}')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seeds", type=int, default=1,
                   help="retrain every arm with this many seeds (seed, seed+1, ...); accuracies are their mean")
    p.add_argument("--budget-ratio", type=float, default=3.0,
                   help="the reported cycle-aware arm must need at most lambda0 cycles / this")
    p.add_argument("--match-points", type=float, default=1.0,
                   help="matched accuracy: validation accuracy within this many points of the cycle-aware arm")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; on a loaded 2-core host 2 threads ran a step ~40x slower than 1")
    p.add_argument("--only", nargs="+", default=None, metavar="ARM",
                   help="run only these arms and stop (several processes can share one --work; a run without "
                        "--only then reports every arm, skipping the finished ones)")
    p.add_argument("--no-markdown", action="store_true", help="do not rewrite RESULTS.md")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    work = Path(args.work)
    data, val_x, val_y = split_data(args)
    log(f"data: {len(data.train_x)} train, {len(val_x)} validation, {len(data.test_x)} test, {data.input_shape}")
    names = ["lambda0", *[f"cycle-{lam:g}" for lam in args.cycle_lambdas],
             *[f"measured-{lam:g}" for lam in args.measured_lambdas],
             *[f"mac-{lam:g}" for lam in args.mac_lambdas], *[f"random-{i}" for i in range(args.random_k)],
             *([REFERENCE_ARM] if args.mlperf_resnet8 else [])]
    if args.only:
        for name in args.only:
            run_arm(name, args, data, (val_x, val_y), work)
        return
    arms = {name: run_arm(name, args, data, (val_x, val_y), work) for name in names}
    cycle_arm = pick_cycle_arm(arms, args.budget_ratio)
    summary = summarise(arms, cycle_arm, args.match_points)
    settings = {k: v for k, v in vars(args).items() if k not in ("no_markdown", "work", "data_root", "only")}
    if args.space == "chain":
        settings["chain_layers"] = [list(x) for x in BENCH_LAYERS]
        settings["stem_channels"] = 16
    else:
        config = search_config(args, 0.0)
        settings["darts"] = {"channels": config.channels, "cells": config.cells, "nodes": config.nodes}
    result = {"benchmark": "search_cifar", "target": args.target, "commit": git_commit(), "settings": settings,
              "arms": list(arms.values()), "summary": summary, "wall_s": round(time.time() - t0, 1),
              "arms_s": round(sum(a["search_s"] + a["train_s"] + a.get("measure_s", 0.0) for a in arms.values()), 1),
              "figures": "instructions exact (QEMU -icount); cycles estimated from the cortex-m4 timing table"}
    section = "search_cifar" + ("" if args.precision == "float32" else f"_{args.precision}") + (
        "" if args.space == "chain" else f"_{args.space}")
    if args.precision == "int8":
        result["measured_table"] = layer_table(args, data, work)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{section}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    body = table(arms, arms[cycle_arm]["cycles"])
    print(body)
    print(json.dumps(summary, indent=2, sort_keys=True))
    if not args.no_markdown:
        replace_section(section, markdown(result, body))


def layer_table(args: argparse.Namespace, data: ArrayDataset, work: Path) -> list[dict[str, Any]]:
    """Every candidate layer of the space: MACs, measured cycles and cycles per MAC (why the costs differ)."""
    from tvmnas.search.cost import MacCostModel

    model = measured_model(args, work)[0]
    slots = build_supernet(search_config(args, 0.0), data.input_shape, data.num_classes).cost_slots()
    specs = [spec for slot in slots for spec in slot.candidates]
    cycles, mac = model.price(specs), MacCostModel()
    return [{"op": s.op, "c_in": s.c_in, "c_out": s.c_out, "hw": s.h, "stride": s.stride,
             "macs": mac.count(s).macs, "cycles": cycles[s]} for s in specs]


def markdown(result: dict[str, Any], body: str) -> str:
    """The RESULTS.md section: scale, table, ratios and whether the issue's target was met."""
    s, m = result["settings"], result["summary"]
    int8 = s.get("precision", "float32") == "int8"
    lines = [
        "## Search on CIFAR-10, int8" + (", darts space" if "darts" in s else "") + ": measured per-layer cost vs "
        "lambda = 0, MAC cost and random sampling" if int8 else "## Search on CIFAR-10: cycle-aware vs lambda = 0, MAC cost and random sampling",
        "",
        f"Commit {result['commit']}, target {result['target']}. Scale: " + space_text(s) + ", CIFAR-10 images "
        + ("at full 32x32 resolution" if s["image_size"] >= 32 else
           f"average-pooled to {s['image_size']}x{s['image_size']}") + f", first {s['limit_train']} training images (search splits them "
        f"in halves for weights / alphas), {s['val_examples']} further training images as validation "
        f"(selection only), first {s['limit_test']} test images (reporting only). Search {s['search_epochs']} "
        f"epochs (arch lr {s['arch_lr']}), retrain {s['train_epochs']} epochs for every arm, batch "
        f"{s['batch_size']}, seed {s['seed']}, {s['threads']} torch threads; all arms together "
        f"{result['arms_s'] / 60:.0f} min of search, retraining and QEMU on a shared 2-core host (arms run "
        f"one after another, or split over processes sharing the work folder with --only; a rerun skips "
        f"finished arms). Instructions are exact (QEMU -icount); cycles are "
        f"estimates from the cortex-m4 timing table (absolute error tens of percent, ranking dependable). "
        f"One thread: on this loaded host 2 torch threads made one supernet step ~40x slower (60 s vs 1.4 s). "
        f"The test subset "
        f"gives a standard error of about {100 * (0.25 / s['limit_test']) ** 0.5:.1f} points per accuracy.",
        *([""] if not int8 else ["", int8_note(result)]),
        "",
        body,
        "",
        f"Cycle-aware arm reported: {m['cycle_arm']}, the best validation accuracy among the cycle-aware "
        f"lambdas whose network needs at most 1/{s['budget_ratio']:g} of the lambda = 0 cycles. Cost model of "
        f"the cycle-aware searches: {next(a['cost_model'] for a in result['arms'] if a['arm'] == m['cycle_arm'])}.",
    ]
    if "lambda0_over_cycle_cycles" in m:
        lines.append(f"- lambda0 / cycle-aware estimated cycles: **{m['lambda0_over_cycle_cycles']:.2f}x**, "
                     f"accuracy change {-m['accuracy_drop_points']:+.1f} points on test "
                     f"({-m['val_accuracy_drop_points']:+.1f} on validation), means over {s['train_seeds']} "
                     f"retraining seeds. Issue target (>= 3x, <= 2 points lost): "
                     f"**{'met' if m['target_met'] else 'not met'}** at this scale.")
    matched = m.get("matched", {})
    if matched:
        lines.append(f"- Matched accuracy (validation within {m['match_points']:g} point(s) of {m['cycle_arm']}), "
                     "the cheapest network of each kind: " + "; ".join(
                         f"{k}: {v['arm']} {v['cycles']:,} cycles (val {v['val_accuracy']:.3f})"
                         for k, v in matched.items()))
    for kind in ("mac", "random"):
        if f"matched_{kind}_over_cycle_cycles" in m:
            lines.append(f"- {kind} / cycle-aware cycles at matched accuracy: "
                         f"**{m[f'matched_{kind}_over_cycle_cycles']:.2f}x**")
        else:
            lines.append(f"- {kind}: no arm reached the matched accuracy")
    if "random_mean_over_cycle_cycles" in m:
        lines.append(f"- mean of all random samples / cycle-aware cycles: {m['random_mean_over_cycle_cycles']:.2f}x")
    if "reference" in m:
        r, c = m["reference"], next(a for a in result["arms"] if a["arm"] == m["cycle_arm"])
        lines.append(f"- {REFERENCE}, trained by the same recipe on the same images: test accuracy "
                     f"{r['test_accuracy']:.3f} (val {r['val_accuracy']:.3f}) vs {c['test_accuracy']:.3f} "
                     f"(val {c['val_accuracy']:.3f}) for {m['cycle_arm']}; {r['cycles']:,} estimated cycles = "
                     f"**{r['over_cycle_cycles']:.2f}x** those of {m['cycle_arm']}; flash {r['flash_bytes']:,} vs "
                     f"{c['flash_bytes']:,} B, SRAM {r['sram_bytes']:,} vs {c['sram_bytes']:,} B")
    lines += ["", "Command: `python benchmarks/search_cifar.py --data-root ../shared/data/cifar10 "
              + " ".join(_flags(s)) + "`"]
    return "\n".join(lines)


def space_text(s: dict[str, Any]) -> str:
    """The searched space in words (the settings of a run)."""
    if "darts" in s:
        d = s["darts"]
        return f"darts space ({d['channels']} channels, {d['cells']} cells, {d['nodes']} nodes per cell)"
    return f"chain space {s['chain_layers']} (stem {s['stem_channels']})"


def int8_note(result: dict[str, Any]) -> str:
    """int8 runs: how networks were deployed and priced, and cycles per MAC of the candidate layers."""
    table = result.get("measured_table", [])
    layers = [r for r in table if r["macs"] and r["op"] not in ("conv_bn", "classifier", "relu_conv_bn",
                                                               "factorized_reduce")]
    by_op: dict[str, list[float]] = {}
    for r in layers:
        by_op.setdefault(r["op"], []).append(r["cycles"] / r["macs"])
    spread = "; ".join(f"{op} {min(v):.2f}-{max(v):.2f}" for op, v in sorted(by_op.items()))
    slots: dict[tuple, list[dict[str, Any]]] = {}
    for r in layers:
        slots.setdefault((r["c_in"], r["c_out"], r["hw"], r["stride"]), []).append(r)
    slots = {k: v for k, v in slots.items() if len(v) > 1}
    rho = [_spearman([r["macs"] for r in v], [r["cycles"] for r in v]) for v in slots.values()]
    free = {}  # candidates the MAC count prices at 0 that cost cycles (pools): their largest measured cycles
    for r in table:
        if not r["macs"] and r["cycles"] > 0 and r["op"] not in free:
            free[r["op"]] = max(x["cycles"] for x in table if x["op"] == r["op"] and not x["macs"])
    free_text = (" Candidates of 0 MACs that cost cycles (largest measured): " + "; ".join(
        f"{op} {c:,.0f}" for op, c in sorted(free.items())) + "." if free else "")
    spans = [(max(r["macs"] for r in v) / min(r["macs"] for r in v), max(r["cycles"] for r in v) /
              min(r["cycles"] for r in v)) for v in slots.values()]
    ranking = (f" Within each of the {len(slots)} searched positions the MAC count and the measured int8 cycles "
               f"rank the {len(layers) // max(len(slots), 1)} candidates of non-zero MACs with Spearman "
               f"{min(rho):.3f}-{max(rho):.3f}; largest / smallest candidate: {min(a for a, _ in spans):.1f}-"
               f"{max(a for a, _ in spans):.1f}x in MACs but {min(b for _, b in spans):.1f}-"
               f"{max(b for _, b in spans):.1f}x in measured cycles." if slots else "")
    ratios = [a["table_over_measured"] for a in result["arms"] if "table_over_measured" in a]
    fidelity = (f"sum of the measured table over the whole network's int8 profile: {min(ratios):.3f}-"
                f"{max(ratios):.3f} across the {len(ratios)} networks (per arm in the table)" if ratios else "")
    return ("int8: every retrained network post-training quantized (activation ranges from 256 training images, "
            "per-channel weights; tvmnas.training.qat with 0 fine-tuning epochs), accuracies of the integer "
            "arithmetic the C runs (validation accuracy, used for selection and matching, is the int8 one; the "
            "float32 test accuracy is shown beside), cycles of the int8 C on QEMU. The measured cost "
            "prices each candidate layer alone at its exact shape as int8 C on the emulator "
            f"(tvmnas.cost.measured); {fidelity}. Estimated cycles per MAC of the candidate layers, min-max over "
            f"the searched positions: {spread}.{ranking}{free_text}")


def mean_ranks(values: list[float]) -> np.ndarray:
    """Ranks with ties at their mean rank (as Spearman's rho takes them)."""
    values = list(values)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values), dtype=float)
    for v in set(values):
        tied = [i for i, x in enumerate(values) if x == v]
        ranks[tied] = np.mean(ranks[tied])
    return ranks


def _spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation, ties at their mean rank."""
    return float(np.corrcoef(mean_ranks(a), mean_ranks(b))[0, 1])


def _flags(s: dict[str, Any]) -> list[str]:
    keys = ("space", "precision", "limit_train", "val_examples", "limit_test", "image_size", "search_epochs", "train_epochs",
            "arch_lr", "cycle_lambdas", "measured_lambdas", "mac_lambdas", "random_k", "seed", "train_seeds",
            "budget_ratio", "match_points", "threads", "mlperf_resnet8")
    out = []
    for k in keys:
        if k not in s or s[k] is False:
            continue
        v = s[k]
        if v is True:
            out.append(f"--{k.replace('_', '-')}")
            continue
        out.append(f"--{k.replace('_', '-')} " + (" ".join(f"{x:g}" for x in v) if isinstance(v, list) else f"{v}"))
    return out


if __name__ == "__main__":
    main()
