"""The search loop: alternate weight steps (train half) and architecture steps (validation half),
checkpoint every epoch, log every epoch to CSV, derive the genotype and check it against budgets."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tvmnas.data.arrays import ArrayDataset, batches, num_batches
from tvmnas.search.architect import Architect
from tvmnas.search.chain_supernet import DEFAULT_CHAIN_LAYERS, ChainSupernet
from tvmnas.search.cost import Budgets, CostFigures, CostModel, CostTerm, CostWeights, MacCostModel
from tvmnas.search.darts_supernet import DartsSupernet
from tvmnas.search.genotype import SPACES, Genotype
from tvmnas.training.loop import Checkpointing, EpochLoop, evaluate

CHECKPOINT_NAME = "search_checkpoint.pt"
LOG_NAME = "search_log.csv"
LOG_FIELDS = ("epoch", "lr", "tau", "train_loss", "train_acc", "val_loss", "val_acc", "arch_loss", "cost_norm",
              "penalty", "exp_cycles", "exp_param_bytes", "exp_peak_act_bytes")


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search. Defaults are tiny: a digits search takes seconds on one core."""

    space: str = "darts"
    target: str = "generic"
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    cost_weight: float = 0.0
    cost_weights: CostWeights = CostWeights()
    budgets: Budgets = Budgets()
    budget_weight: float = 10.0
    # darts space
    channels: int = 8
    cells: int = 3
    nodes: int = 2
    stem_multiplier: int = 3
    partial_channels: int = 1
    # chain space
    chain_layers: tuple[tuple[int, int], ...] = DEFAULT_CHAIN_LAYERS
    stem_channels: int = 8
    width_mult: float = 1.0
    head_channels: int = 0
    # optimisation
    weight_lr: float = 0.05
    weight_lr_min: float = 0.001
    weight_momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-3
    arch_weight_decay: float = 1e-3
    warmup_epochs: int = 0
    second_order: bool = False
    gumbel: bool = False
    tau_max: float = 5.0
    tau_min: float = 0.5
    train_portion: float = 0.5

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"unknown search space '{self.space}' (expected one of {', '.join(SPACES)})")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.cost_weight < 0:
            raise ValueError(f"cost weight must be >= 0, got {self.cost_weight}")
        if self.space == "darts" and self.channels % (2 * self.partial_channels) != 0:
            raise ValueError(f"darts channels {self.channels} must be a multiple of 2 x partial_channels "
                             f"({self.partial_channels})")


@dataclass
class SearchResult:
    """What a search produced: the genotype, its exact cost, budget violations (empty = within budget)."""

    genotype: Genotype
    cost: CostFigures
    reference_cost: CostFigures
    cost_unit: str
    violations: list[str]
    val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def within_budget(self) -> bool:
        """True if no budget is exceeded."""
        return not self.violations


def build_supernet(config: SearchConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The supernet of `config.space` for this data shape."""
    if config.space == "darts":
        return DartsSupernet(input_shape, num_classes, channels=config.channels, cells=config.cells,
                             nodes=config.nodes, stem_multiplier=config.stem_multiplier,
                             partial_channels=config.partial_channels, gumbel=config.gumbel, tau=config.tau_max)
    return ChainSupernet(input_shape, num_classes, layers=config.chain_layers, stem_channels=config.stem_channels,
                         width_mult=config.width_mult, head_channels=config.head_channels, gumbel=config.gumbel,
                         tau=config.tau_max)


def _settings(config: SearchConfig, dataset: ArrayDataset, cost_model: CostModel) -> dict[str, Any]:
    return {"config": json.loads(json.dumps(asdict(config))), "dataset": dataset.name,
            "train_examples": len(dataset.train_x), "cost_model": cost_model.name}


def _tau(config: SearchConfig, epoch: int) -> float:
    if config.epochs == 1:
        return config.tau_max
    return config.tau_max * (config.tau_min / config.tau_max) ** (epoch / (config.epochs - 1))


def search(
    dataset: ArrayDataset,
    out_dir: Path,
    config: SearchConfig = SearchConfig(),
    *,
    cost_model: CostModel | None = None,
    resume: bool = True,
    progress: bool = False,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
) -> SearchResult:
    """Run DEff-ARTS on `dataset`, writing genotype.json (+ .graphml), search.json, search_log.csv and a
    checkpoint to out_dir.

    The training images are split into a weight half and an architecture half (fixed by the seed).
    With resume, an existing checkpoint in out_dir (same settings) is continued from its last epoch;
    `on_epoch_end(epoch, row)` is called after each epoch's checkpoint is written. Bit-exact resume
    is checked on CPU; other devices may differ in their random streams.
    The result lists budget violations of the derived genotype; the caller must act on them.
    """
    cost_model = cost_model or MacCostModel()
    out_dir = Path(out_dir)
    settings = _settings(config, dataset, cost_model)
    torch.manual_seed(config.seed)
    model = build_supernet(config, dataset.input_shape, dataset.num_classes).to(device)
    cost_term = CostTerm(model.cost_slots(), cost_model, weights=config.cost_weights, budgets=config.budgets,
                         budget_weight=config.budget_weight, device=device)
    architect = Architect(model, cost_term, cost_weight=config.cost_weight, lr=config.arch_lr,
                          weight_decay=config.arch_weight_decay, second_order=config.second_order,
                          unrolled_lr=config.weight_lr)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=config.weight_lr, momentum=config.weight_momentum,
                            weight_decay=config.weight_decay)

    order = np.random.default_rng(config.seed).permutation(len(dataset.train_x))
    split = int(len(order) * config.train_portion)
    tr_idx, va_idx = np.sort(order[:split]), np.sort(order[split:])
    x_tr, y_tr = dataset.train_x[tr_idx], dataset.train_y[tr_idx]
    x_va, y_va = dataset.train_x[va_idx], dataset.train_y[va_idx]

    steps = min(num_batches(len(x_tr), config.batch_size), num_batches(len(x_va), config.batch_size))
    loop = EpochLoop(model, w_opt, config.epochs, steps, config.grad_clip, lr_min=config.weight_lr_min,
                     clip=model.weight_parameters, state={"arch_optimizer": architect.optimizer}, label="search",
                     progress=progress,
                     checkpointing=Checkpointing(out_dir, CHECKPOINT_NAME, settings, LOG_NAME, LOG_FIELDS, resume))

    def epoch_batches(epoch: int):
        model.tau = _tau(config, epoch)
        architect.unrolled_lr = loop.lr
        seed = config.seed * 100_003 + 2 * epoch
        pairs = zip(batches(x_tr, y_tr, config.batch_size, shuffle_seed=seed, device=device),
                    batches(x_va, y_va, config.batch_size, shuffle_seed=seed + 1, device=device))
        return (pair for pair, _ in zip(pairs, range(steps)))

    def step(pair) -> dict[str, float]:
        (xt, yt), (xv, yv) = pair
        if loop.epoch >= config.warmup_epochs:
            a = architect.step(xt, yt, xv, yv)
            loop.add(arch=a.loss, cost=a.cost, pen=a.penalty)
        logits = model(xt)
        loss = F.cross_entropy(logits, yt)
        loss.backward()
        for p in model.arch_parameters().values():
            p.grad = None
        loop.add(loss=float(loss.detach()) * len(yt), correct=int((logits.argmax(1) == yt).sum()), n=len(yt))
        return {"loss": float(loss.detach()), "acc": loop.totals["correct"] / loop.totals["n"],
                "cycles": cost_term.figures(model.arch_logits()).cycles}

    def end_epoch(epoch: int) -> dict[str, float]:
        val_loss, val_acc = evaluate(model, x_va, y_va, config.batch_size, device)
        figures, sums = cost_term.figures(model.arch_logits()), {"arch": 0.0, "cost": 0.0, "pen": 0.0, **loop.totals}
        return {"tau": model.tau, "train_loss": sums["loss"] / sums["n"], "train_acc": sums["correct"] / sums["n"],
                "val_loss": val_loss, "val_acc": val_acc, "arch_loss": sums["arch"] / steps,
                "cost_norm": sums["cost"] / steps, "penalty": sums["pen"] / steps,
                "exp_cycles": figures.cycles, "exp_param_bytes": figures.param_bytes,
                "exp_peak_act_bytes": figures.peak_act_bytes}

    history = loop.run(epoch_batches, step, end_epoch, on_epoch_end=on_epoch_end)

    genotype, choices = model.derive()
    exact = cost_term.discrete(choices)
    violations = exact.violations(config.budgets, cost_model.unit)
    val_acc = history[-1]["val_acc"] if history else 0.0
    record = {
        "target": config.target, "cost_model": cost_model.name, "cost_unit": cost_model.unit,
        "cost_weight": config.cost_weight, "cost": asdict(exact), "reference_cost": asdict(cost_term.reference),
        "budgets": asdict(config.budgets), "budget_ok": not violations, "violations": violations,
        "search_val_accuracy": val_acc, "seed": config.seed,
    }
    genotype = replace(genotype, extra={"search": record})
    genotype.save(out_dir / "genotype.json")
    nx.write_graphml(genotype.to_networkx(), out_dir / "genotype.graphml")
    (out_dir / "search.json").write_text(json.dumps({**record, "genotype": str(genotype),
                                                      "config": settings["config"]}, indent=2, sort_keys=True) + "\n")
    return SearchResult(genotype, exact, cost_term.reference, cost_model.unit, violations, val_acc, history)

