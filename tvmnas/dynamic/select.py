"""Choose K sub-networks along the accuracy / cycles Pareto front of a trained super-network.

Candidates (smallest, largest and random samples) get a held-out accuracy (after recalibrating
their BatchNorm statistics) and a cost estimate: the target's cost surrogate over the
sub-network's lowered kernels when one is available, else the MAC-count proxy. Candidates over
the target's flash or SRAM budget are dropped; K are picked from the Pareto front, spread evenly
in log-cost from the cheapest to the most accurate.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvmnas.data.arrays import ArrayDataset
from tvmnas.dynamic.subnet import SubNetwork, extract_subnet
from tvmnas.dynamic.supernet import DynamicSupernet, SubnetConfig, SupernetSpec, largest, sample, smallest
from tvmnas.dynamic.train import (
    SUPERNET_FILE,
    SupernetTrainConfig,
    accuracy,
    finetune_selected,
    recalibrate,
    split,
)
from tvmnas.errors import CostModelError, ModelLoadError, TvmnasError
from tvmnas.executor import Executor, InlineExecutor, as_finished
from tvmnas.output_dir import staged_output
from tvmnas.search.cost import count_module
from tvmnas.targets import Target

SELECTION_FILE = "selection.json"
CALIBRATION_FILE = "calibration.npy"   # training inputs an int8 build calibrates its activations on
CALIBRATION_SAMPLES = 64
COST_MODELS = ("auto", "surrogate", "mac")
RECALIBRATION_BATCH = 64  # examples per BatchNorm recalibration batch


@dataclass(frozen=True)
class Candidate:
    """One evaluated sub-network."""

    config: SubnetConfig
    holdout_acc: float
    cycles: float          # estimated cycles (surrogate) or MACs (proxy), see the selection's cost_unit
    params: int
    act_bytes: int


class CostEstimator:
    """Per-sub-network cost: the target's surrogate over lowered kernels, or MACs."""

    def __init__(self, target: Target, kind: str = "auto"):
        if kind not in COST_MODELS:
            raise TvmnasError(f"unknown cost model '{kind}' (expected one of {', '.join(COST_MODELS)})")
        self.target = target
        self.surrogate = None
        if kind in ("auto", "surrogate"):
            from tvmnas.cost.surrogate import load_surrogate

            try:
                self.surrogate = load_surrogate(target.name)
            except CostModelError:
                if kind == "surrogate":
                    raise
        self.name = "surrogate" if self.surrogate is not None else "mac"
        self.unit = "estimated cycles (cost surrogate)" if self.surrogate is not None else "MACs (proxy, not cycles)"

    def cycles(self, net: SubNetwork, input_shape: tuple[int, int, int]) -> float:
        """Estimated cost of one inference of `net`, its kernels built as `dynamic compile` builds them
        by default (optimize="size")."""
        if self.surrogate is None:
            return float(count_module(net, input_shape).macs)
        from tvmnas.dynamic.compile import lower_subnetwork
        from tvmnas.passes import extract_kernel_features

        lowered, graph = lower_subnetwork(net, input_shape)
        features = extract_kernel_features(lowered)
        return float(np.sum(self.surrogate.predict([features[c.kernel] for c in graph.calls])))


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Candidates no other one beats on both accuracy (higher) and cost (lower), by cost."""
    front = []
    for c in sorted(cands, key=lambda c: (c.cycles, -c.holdout_acc)):
        if not front or c.holdout_acc > front[-1].holdout_acc:
            front.append(c)
    return front


def spread(front: list[Candidate], k: int) -> list[Candidate]:
    """k points of a cost-sorted front: both ends, the rest nearest to even steps in log-cost."""
    if len(front) <= k:
        return list(front)
    logs = [math.log(max(c.cycles, 1.0)) for c in front]
    chosen = {0, len(front) - 1}
    for j in range(1, k - 1):
        goal = logs[0] + (logs[-1] - logs[0]) * j / (k - 1)
        free = [i for i in range(len(front)) if i not in chosen]
        chosen.add(min(free, key=lambda i: abs(logs[i] - goal)))
    return [front[i] for i in sorted(chosen)]


def choose(cands: list[Candidate], k: int) -> list[Candidate]:
    """K candidates: from the Pareto front, then from the next fronts if it is too short."""
    picked: list[Candidate] = []
    rest = list(cands)
    while len(picked) < k and rest:
        front = pareto_front(rest)
        picked += spread(front, k - len(picked))
        keys = {c.config for c in front}
        rest = [c for c in rest if c.config not in keys]
    return sorted(picked, key=lambda c: (c.cycles, -c.holdout_acc))


def choose_nested(cands: list[Candidate], k: int, anchor: SubnetConfig) -> list[Candidate]:
    """`choose` with the `anchor` candidate (the largest sub-network) always kept: every other
    sub-network is then a nested slice of it, so the shared arrays cost no more than it does."""
    top = [c for c in cands if c.config == anchor]
    if not top:
        return choose(cands, k)
    rest = [c for c in cands if c.config != anchor]
    return sorted(choose(rest, k - 1) + top, key=lambda c: (c.cycles, -c.holdout_acc))


def held_out_accuracy(net: DynamicSupernet, config: SubnetConfig, calib_x: np.ndarray, holdout_x: np.ndarray,
                      holdout_y: np.ndarray, calibration_batches: int) -> float:
    """Accuracy of `config` on held-out examples, after recalibrating its BatchNorm statistics."""
    recalibrate(net, config, calib_x, batch_size=RECALIBRATION_BATCH, max_batches=calibration_batches)
    return accuracy(net, config, holdout_x, holdout_y)


def evaluate_candidate(spec: SupernetSpec, state: dict[str, torch.Tensor], config: SubnetConfig,
                       calib_x: np.ndarray, holdout_x: np.ndarray, holdout_y: np.ndarray, estimator: CostEstimator,
                       calibration_batches: int) -> Candidate:
    """One config's held-out accuracy (after recalibrating its BatchNorm statistics), cost and counts.

    A task: it rebuilds the super-network from `spec` and `state`, so it runs anywhere and never
    touches the driver's network. Recalibration resets every BatchNorm statistic first, so a
    config's result does not depend on which configs were evaluated before it.
    """
    net = DynamicSupernet(spec)
    net.load_state_dict(state)
    acc = held_out_accuracy(net, config, calib_x, holdout_x, holdout_y, calibration_batches)
    sub = extract_subnet(net, config)
    counts = count_module(sub, spec.input_shape)
    return Candidate(config, acc, estimator.cycles(sub, spec.input_shape), counts.params, 4 * counts.act_elems)


def evaluate_candidates(net: DynamicSupernet, configs: list[SubnetConfig], calib_x: np.ndarray,
                        holdout_x: np.ndarray, holdout_y: np.ndarray, estimator: CostEstimator,
                        *, calibration_batches: int = 8, executor: Executor | None = None) -> list[Candidate]:
    """Held-out accuracy and cost of each config, in the order of `configs`.

    The configs are evaluated on `executor` (default: one after another in this process), any
    number at a time, each on its own copy of `net`, which is left as it is. Only the examples
    that recalibration reads travel with a task.
    """
    state = net.state_dict()
    calib = calib_x[:RECALIBRATION_BATCH * calibration_batches]
    calls = [(net.spec, state, c, calib, holdout_x, holdout_y, estimator, calibration_batches) for c in configs]
    by_index: dict[int, Candidate] = {}
    with executor if executor is not None else InlineExecutor() as pool:
        for i, fut in as_finished(pool, evaluate_candidate, calls):
            by_index[i] = fut.result()
    return [by_index[i] for i in range(len(configs))]


def candidate_configs(spec: SupernetSpec, count: int, seed: int) -> list[SubnetConfig]:
    """smallest, largest and random sub-networks, without repeats."""
    rng = random.Random(seed)
    configs = [smallest(spec), largest(spec)]
    tries = 0
    while len(configs) < count and tries < 50 * count:
        c = sample(spec, rng)
        if c not in configs:
            configs.append(c)
        tries += 1
    return configs


def select_subnets(
    net: DynamicSupernet,
    dataset: ArrayDataset,
    target: Target,
    out_dir: Path,
    *,
    k: int = 4,
    candidates: int = 24,
    holdout: int = 300,
    seed: int = 0,
    cost_model: str = "auto",
    calibration_batches: int = 8,
    keep_largest: bool = True,
    finetune_epochs: int = 0,
    train_config: SupernetTrainConfig | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Evaluate candidates, pick k, and write the selection folder (atomically).

    keep_largest: always select the largest sub-network (when it fits), so the others are
    nested in it and the artifact's shared weights cost no more than the largest alone.

    The folder holds selection.json, the super-network weights, one state dict per chosen
    sub-network (with its own BatchNorm statistics) and calibration.npy (the first training inputs,
    for `dynamic compile --precision int8`): all that compile and export need.
    `holdout` and `seed` must match the training run so the accuracy estimate is held out.
    finetune_epochs: after choosing, train the shared weights this many more epochs on the chosen
    configurations only (finetune_selected, with `train_config`'s optimizer settings); their
    held-out accuracies are then measured again. `net` is updated in place.
    executor: where the candidates are evaluated (default: one after another in this process);
    the selection comes out the same whatever runs them.
    """
    if k < 1:
        raise TvmnasError(f"k must be at least 1, got {k}", settings=("k",))
    parts = split(dataset, holdout, seed)
    estimator = CostEstimator(target, cost_model)
    configs = candidate_configs(net.spec, max(candidates, k), seed + 1)
    cands = evaluate_candidates(net, configs, parts.train_x, parts.holdout_x, parts.holdout_y, estimator,
                                calibration_batches=calibration_batches, executor=executor)
    # The candidates were evaluated on copies of `net`; it takes the BatchNorm statistics of the last one, as
    # an evaluation on `net` itself left them, because supernet.pt carries them.
    recalibrate(net, configs[-1], parts.train_x, batch_size=RECALIBRATION_BATCH, max_batches=calibration_batches)
    fits = [c for c in cands if 4 * c.params <= target.flash_bytes and c.act_bytes <= target.sram_bytes]
    if not fits:
        smallest_c = min(cands, key=lambda c: c.params)
        raise TvmnasError(f"no sub-network fits target {target.name}: the smallest needs {4 * smallest_c.params:,} B "
                          f"of weights (flash {target.flash_bytes:,} B)")
    picked = choose_nested(fits, k, largest(net.spec)) if keep_largest else choose(fits, k)
    if finetune_epochs > 0:
        cfg = train_config or SupernetTrainConfig(holdout=holdout, seed=seed)
        teacher = max(picked, key=lambda c: c.params)
        finetune_selected(net, teacher.config, [c.config for c in picked if c is not teacher],
                          parts.train_x, parts.train_y, cfg, finetune_epochs)
        picked = [replace(c, holdout_acc=held_out_accuracy(net, c.config, parts.train_x, parts.holdout_x,
                                                             parts.holdout_y, calibration_batches))
                  for c in picked]
    front_keys = {c.config for c in pareto_front(fits)}
    selection = {
        "format_version": 1,
        "target": target.name,
        "dataset": dataset.name,
        "spec": net.spec.to_dict(),
        "cost_model": estimator.name,
        "cost_unit": estimator.unit,
        "accuracy_note": f"held-out accuracy on {len(parts.holdout_x)} training examples not used for the weights",
        "finetune_epochs": finetune_epochs,
        "configs": [
            {"index": i, "config": c.config.to_dict(), "holdout_acc": c.holdout_acc, "cycles": c.cycles,
             "params": c.params, "file": f"subnet_{i}.pt"}
            for i, c in enumerate(picked)
        ],
        "candidates": [
            {"config": c.config.to_dict(), "holdout_acc": c.holdout_acc, "cycles": c.cycles,
             "pareto": c.config in front_keys, "fits": c in fits}
            for c in cands
        ],
    }
    out_dir = Path(out_dir)
    with staged_output(out_dir, "selection") as staging:
        torch.save(net.state_dict(), staging / SUPERNET_FILE)
        for i, c in enumerate(picked):
            recalibrate(net, c.config, parts.train_x, batch_size=RECALIBRATION_BATCH, max_batches=calibration_batches)
            torch.save(extract_subnet(net, c.config).state_dict(), staging / f"subnet_{i}.pt")
        np.save(staging / CALIBRATION_FILE, np.ascontiguousarray(parts.train_x[:CALIBRATION_SAMPLES], np.float32))
        (staging / SELECTION_FILE).write_text(json.dumps(selection, indent=2, sort_keys=True) + "\n")
    return selection


@dataclass
class Selection:
    """A selection folder loaded back: spec, per-config entries, networks and shared tensors."""

    spec: SupernetSpec
    entries: list[dict[str, Any]]
    subnets: list[SubNetwork]
    shared: dict[str, np.ndarray]
    meta: dict[str, Any]
    calibration: Path | None = None   # calibration.npy, where the folder has one


def load_selection(sel_dir: Path) -> Selection:
    """Read a `tvmnas dynamic select` folder."""
    sel_dir = Path(sel_dir)
    path = sel_dir / SELECTION_FILE
    if not path.is_file():
        raise ModelLoadError(f"{sel_dir} is not a selection folder: no {SELECTION_FILE}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}: not valid JSON ({err})") from None
    spec = SupernetSpec.from_dict(meta["spec"])
    sup = DynamicSupernet(spec)
    try:
        sup.load_state_dict(torch.load(sel_dir / SUPERNET_FILE, weights_only=True))
        subnets = []
        for entry in meta["configs"]:
            sub = SubNetwork(spec, SubnetConfig.from_dict(entry["config"]))
            sub.load_state_dict(torch.load(sel_dir / entry["file"], weights_only=True))
            subnets.append(sub.eval())
    except (OSError, RuntimeError) as err:
        raise ModelLoadError(f"{sel_dir}: unreadable weights ({str(err).splitlines()[0]})") from None
    calibration = sel_dir / CALIBRATION_FILE
    return Selection(spec, meta["configs"], subnets, sup.shared_tensors(), meta,
                     calibration if calibration.is_file() else None)
