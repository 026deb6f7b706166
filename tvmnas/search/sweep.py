"""A sweep over the cost weight lambda: search, retrain and (optionally) measure each result on the
target's emulator, then the accuracy-vs-cycles Pareto front as JSON and a plot."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tvmnas.data.arrays import ArrayDataset
from tvmnas.executor import Executor, FolderFiles, InlineExecutor, as_finished, pack_folder, unpack_folder
from tvmnas.search.cost import CostModel, MacCostModel
from tvmnas.search.search import SearchConfig, search
from tvmnas.train import TrainConfig, train


@dataclass(frozen=True)
class SweepPoint:
    """One lambda's result. cycles is the emulator's estimate when measured, else the cost model's figure."""

    cost_weight: float
    test_accuracy: float
    cycles: float
    cycles_source: str
    instructions: int | None
    macs: int
    param_bytes: int
    flash_bytes: int | None
    arena_bytes: int | None
    budget_ok: bool
    run_dir: str


def pareto_front(points: Sequence[SweepPoint]) -> list[int]:
    """Indices of within-budget points no other within-budget point beats on both cycles (lower) and
    accuracy (higher), sorted by cycles."""
    ok = [i for i, p in enumerate(points) if p.budget_ok]
    front = []
    for i in ok:
        a = points[i]
        dominated = any(
            (b.cycles <= a.cycles and b.test_accuracy >= a.test_accuracy)
            and (b.cycles < a.cycles or b.test_accuracy > a.test_accuracy)
            for j, b in ((j, points[j]) for j in ok) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i].cycles)


def plot_pareto(points: Sequence[SweepPoint], front: Sequence[int], path: Path, title: str) -> None:
    """Scatter of accuracy vs cycles, the front joined by a line, each point labelled with its lambda."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ok = [p for p in points if p.budget_ok]
    over = [p for p in points if not p.budget_ok]
    ax.scatter([p.cycles for p in ok], [p.test_accuracy for p in ok], label="searched", color="tab:blue")
    if over:
        ax.scatter([p.cycles for p in over], [p.test_accuracy for p in over], marker="x", color="tab:red",
                   label="over budget")
    ax.plot([points[i].cycles for i in front], [points[i].test_accuracy for i in front], color="tab:green",
            label="Pareto front")
    for p in points:
        ax.annotate(f"λ={p.cost_weight:g}", (p.cycles, p.test_accuracy), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    source = points[0].cycles_source if points else ""
    ax.set_xlabel(f"cycles ({source})")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def measure_on_target(model_path: Path, target_name: str, input_shape: tuple[int, int, int],
                      work_dir: Path) -> dict[str, Any]:
    """Compile the ONNX model to C, build it for the target, profile one call on its emulator."""
    from tvmnas.compiler import compile_model
    from tvmnas.measure.profile import profile_elf
    from tvmnas.measure.runner import build
    from tvmnas.targets import load_target

    target = load_target(target_name)
    bundle = compile_model(Path(model_path), target, work_dir / "bundle")
    elf = build(work_dir / "bundle", target, work_dir / "build")
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    profile = profile_elf(elf, target, [x])
    return {"instructions": profile.instructions, "cycles": profile.cycles,
            "flash_bytes": bundle.manifest["flash_bytes"], "arena_bytes": bundle.manifest["arena_bytes"]}


def run_arm(dataset: ArrayDataset, run_dir: Path, lam: float, search_config: SearchConfig,
            train_config: TrainConfig, cost_model: CostModel, measure: bool, progress: bool) -> SweepPoint:
    """One lambda: search (run_dir/search), retrain (…/train), measure (…/target) when `measure`;
    each step resumes from its own checkpoint in run_dir."""
    config = replace(search_config, cost_weight=float(lam))
    found = search(dataset, run_dir / "search", config, cost_model=cost_model, progress=progress)
    trained = train(found.genotype, dataset, run_dir / "train", train_config, progress=progress)
    m = trained.metrics
    measured = (measure_on_target(run_dir / "train" / "model.onnx", search_config.target, dataset.input_shape,
                                  run_dir / "target") if measure else None)
    return SweepPoint(
        cost_weight=float(lam),
        test_accuracy=float(m["test_accuracy"]),
        cycles=float(measured["cycles"]) if measured else found.cost.cycles,
        cycles_source=("estimate, emulated on " + search_config.target) if measured else found.cost_unit,
        instructions=measured["instructions"] if measured else None,
        macs=int(m["macs"]),
        param_bytes=int(m["param_bytes"]),
        flash_bytes=measured["flash_bytes"] if measured else None,
        arena_bytes=measured["arena_bytes"] if measured else None,
        budget_ok=found.within_budget,
        run_dir=str(run_dir),
    )


def _arm_elsewhere(dataset: ArrayDataset, run_files: FolderFiles, lam: float, search_config: SearchConfig,
                   train_config: TrainConfig, cost_model: CostModel, measure: bool,
                   progress: bool) -> tuple[SweepPoint, FolderFiles]:
    """run_arm on a machine that does not see the driver's files: the arm's folder travels both ways."""
    with tempfile.TemporaryDirectory(prefix="tvmnas-sweep-arm-") as tmp:
        run_dir = Path(tmp) / "run"
        unpack_folder(run_dir, run_files)
        point = run_arm(dataset, run_dir, lam, search_config, train_config, cost_model, measure, progress)
        return point, pack_folder(run_dir)


def sweep(
    dataset: ArrayDataset,
    out_dir: Path,
    cost_weights: Sequence[float],
    search_config: SearchConfig,
    train_config: TrainConfig,
    *,
    cost_model: CostModel | None = None,
    measure: bool = True,
    progress: bool = False,
    executor: Executor | None = None,
) -> list[SweepPoint]:
    """For each lambda, run_arm in out_dir/lambda_L; write pareto.json and pareto.png.

    Arms run on `executor` (default: one after another in this process), any number at a time; the
    points and files come out in the order of `cost_weights` whatever finishes first. On an executor
    whose workers do not see this machine's files, each arm's folder is sent with it (to resume from
    its checkpoints) and written back here when the arm finishes.
    """
    cost_model = cost_model or MacCostModel()
    out_dir = Path(out_dir)
    run_dirs = [out_dir / f"lambda_{lam:g}" for lam in cost_weights]
    by_index: dict[int, SweepPoint] = {}
    with executor if executor is not None else InlineExecutor() as pool:
        if pool.shares_files:
            calls = [(dataset, d, lam, search_config, train_config, cost_model, measure, progress)
                     for d, lam in zip(run_dirs, cost_weights)]
            for i, fut in as_finished(pool, run_arm, calls):
                by_index[i] = fut.result()
        else:
            calls = [(dataset, pack_folder(d), lam, search_config, train_config, cost_model, measure, progress)
                     for d, lam in zip(run_dirs, cost_weights)]
            for i, fut in as_finished(pool, _arm_elsewhere, calls):
                point, files = fut.result()
                unpack_folder(run_dirs[i], files)
                by_index[i] = replace(point, run_dir=str(run_dirs[i]))
    points = [by_index[i] for i in range(len(run_dirs))]
    front = pareto_front(points)
    (out_dir / "pareto.json").write_text(json.dumps({
        "target": search_config.target, "space": search_config.space, "dataset": dataset.name,
        "cost_model": cost_model.name, "points": [asdict(p) for p in points], "front": front,
    }, indent=2, sort_keys=True) + "\n")
    plot_pareto(points, front, out_dir / "pareto.png",
                f"{search_config.space} on {dataset.name}, {search_config.target}")
    return points
